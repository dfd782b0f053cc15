package coordinator_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// logLines returns the JSON log lines in s whose msg is msg.
func logLines(t *testing.T, s *syncbuf.Buffer, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(s.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestAuthorizationByRole runs a coordinator over mutual TLS with
// real certificates and calls every RPC as every role: each call the role
// may make is not PermissionDenied; each it may not make is
// PermissionDenied, leaves the leader's state exactly as it was, and is
// logged. Trainers act only as themselves and report only for trials
// assigned to them. Writes are audited.
func TestAuthorizationByRole(t *testing.T) {
	ca := testpki.New(t)
	logs := &syncbuf.Buffer{}
	base := coordinator.LANConfig()
	base.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Leases long enough that nothing expires during the test: the state
	// changes only through the calls made.
	base.Scheduler = coordinator.SchedulerConfig{Lease: time.Minute, Tick: 10 * time.Millisecond}
	// One member: a leader that cannot lose its leadership under a loaded
	// machine, so every answer is the policy's (TestTLSRefusesStrangers and
	// TestMutualTLS run raft over TLS between members).
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Base: &base, Configure: func(i int, cfg *coordinator.Config) {
		cert := ca.IssueAs(t, pki.RoleCoordinator, cfg.ID)
		cfg.ServerTLS, cfg.ClientTLS = ca.ServerConfig(cert), ca.ClientConfig(cert)
	}})
	leader := c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dial := func(cert tls.Certificate) pb.CoordinatorClient {
		t.Helper()
		conn, err := grpc.NewClient(c.APIAddrs[leader], grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewCoordinatorClient(conn)
	}
	opsCert := ca.IssueAs(t, pki.RoleOperator, "ops")
	sw := testSweep("s", 1)
	trial := sw.GetTrials()[0].GetName()
	// A fresh group may change leaders once: launch where it settles.
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		leader = c.WaitForLeader(10 * time.Second)
		_, err := dial(opsCert).LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: sw})
		return err
	})
	t1 := dial(ca.IssueAs(t, pki.RoleTrainer, "t1"))
	t1rec := &pb.TrainerRecord{Id: "t1", Address: "127.0.0.1:7501"}
	if _, err := t1.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: t1rec}); err != nil {
		t.Fatal(err)
	}
	var gen uint64
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		resp, err := t1.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "t1"})
		if err != nil {
			return err
		}
		if a := resp.GetAssignment(); a.GetTrial().GetName() == trial {
			gen = a.GetGeneration()
			return nil
		}
		return errors.New("t1 has no assignment yet")
	})

	type call struct {
		name string
		do   func(context.Context, pb.CoordinatorClient) error
	}
	// In this order: the operator's and t1's allowed writes come last and
	// ReportResult (which requeues the trial) last of all.
	calls := []call{
		{"GetState", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.GetState(ctx, &pb.GetStateRequest{})
			return err
		}},
		{"GetSweep", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.GetSweep(ctx, &pb.GetSweepRequest{Name: "s"})
			return err
		}},
		{"BestTrial", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.BestTrial(ctx, &pb.BestTrialRequest{Sweep: "s"})
			return err
		}},
		{"ListSweeps", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.ListSweeps(ctx, &pb.ListSweepsRequest{Consistent: true})
			return err
		}},
		{"ListTrials", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.ListTrials(ctx, &pb.ListTrialsRequest{PageSize: 10})
			return err
		}},
		{"DeleteSweep", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.DeleteSweep(ctx, &pb.DeleteSweepRequest{Name: "never-launched"})
			return err
		}},
		{"LaunchSweep", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: testSweep("s2", 1)})
			return err
		}},
		{"CancelSweep", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.CancelSweep(ctx, &pb.CancelSweepRequest{Name: "s2"})
			return err
		}},
		{"ResumeRun", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.ResumeRun(ctx, &pb.ResumeRunRequest{Run: "s2-t000"})
			return err
		}},
		{"AddVoter", func(ctx context.Context, cl pb.CoordinatorClient) error {
			p := c.Configs[0].Peers[0]
			_, err := cl.AddVoter(ctx, &pb.AddVoterRequest{Member: &pb.Member{Id: p.ID, RaftAddress: p.RaftAddr, ApiAddress: p.APIAddr}})
			return err
		}},
		{"RemoveVoter", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.RemoveVoter(ctx, &pb.RemoveVoterRequest{Id: "n9"})
			return err
		}},
		{"RegisterTrainer", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: t1rec})
			return err
		}},
		{"Heartbeat", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "t1"})
			return err
		}},
		{"ReportCheckpoint", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: trial, Generation: gen, Step: 10})
			return err
		}},
		{"ReportResult", func(ctx context.Context, cl pb.CoordinatorClient) error {
			_, err := cl.ReportResult(ctx, &pb.ReportResultRequest{Trial: trial, Generation: gen, State: pb.TrialState_TRIAL_STATE_PENDING, Reason: "test"})
			return err
		}},
	}
	reads := []string{"GetState", "GetSweep", "BestTrial", "ListSweeps", "ListTrials"}
	plain := ca.Issue(t, "no-identity") // from the right CA, without a loraft URI SAN
	roles := []struct {
		name    string
		cert    tls.Certificate
		allowed []string
	}{
		{"viewer", ca.IssueAs(t, pki.RoleViewer, "view"), reads},
		{"coordinator", ca.IssueAs(t, pki.RoleCoordinator, "n2"), reads},
		{"no identity", plain, nil},
		{"trainer t2 (not t1)", ca.IssueAs(t, pki.RoleTrainer, "t2"), nil},
		{"operator", ca.IssueAs(t, pki.RoleOperator, "ops2"), append([]string{"LaunchSweep", "CancelSweep", "DeleteSweep", "ResumeRun", "AddVoter", "RemoveVoter"}, reads...)},
		{"trainer t1", ca.IssueAs(t, pki.RoleTrainer, "t1"), []string{"RegisterTrainer", "Heartbeat", "ReportCheckpoint", "ReportResult"}},
	}
	viewer := dial(roles[0].cert)
	state := func() *pb.State {
		t.Helper()
		st, err := viewer.GetState(ctx, &pb.GetStateRequest{Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, role := range roles {
		t.Run(role.name, func(t *testing.T) {
			cl := dial(role.cert)
			for _, call := range calls {
				allowed := false
				for _, a := range role.allowed {
					allowed = allowed || a == call.name
				}
				before := state()
				err := call.do(ctx, cl)
				switch {
				case allowed && status.Code(err) == codes.PermissionDenied:
					t.Errorf("%s: %v, want it allowed", call.name, err)
				case !allowed && status.Code(err) != codes.PermissionDenied:
					t.Errorf("%s: %v, want PermissionDenied", call.name, err)
				case !allowed:
					if after := state(); !proto.Equal(before, after) {
						t.Errorf("%s: state changed by a refused call:\nbefore %v\nafter  %v", call.name, before, after)
					}
				}
			}
		})
	}

	// Every refusal is logged with who, method and why; every write audited.
	denials := logLines(t, logs, "permission denied")
	if len(denials) == 0 {
		t.Fatal("no refusal logged")
	}
	for _, d := range denials {
		if d["who"] == nil || d["method"] == nil || d["why"] == nil {
			t.Fatalf("refusal line without who/method/why: %v", d)
		}
	}
	found := false
	for _, a := range logLines(t, logs, "audit") {
		if a["level"] != "INFO" || a["code"] == nil || a["method"] == nil {
			t.Fatalf("audit line: %v", a)
		}
		if a["who"] == "loraft://operator/ops" && a["method"] == "LaunchSweep" && a["sweep"] == "s" && a["code"] == "OK" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no audit line for the operator's LaunchSweep of s: %v", logLines(t, logs, "audit"))
	}
}

// TestTLSRefusesStrangers: a client certificate from another CA is refused
// at the TLS layer of the API, and a viewer's certificate (from the right
// CA) cannot open raft's transport, while a coordinator's can.
func TestTLSRefusesStrangers(t *testing.T) {
	ca := testpki.New(t)
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cert := ca.IssueAs(t, pki.RoleCoordinator, cfg.ID)
		cfg.ServerTLS, cfg.ClientTLS = ca.ServerConfig(cert), ca.ClientConfig(cert)
	}})
	c.WaitForLeader(10 * time.Second)

	other := testpki.New(t)
	stranger := ca.ClientConfig(other.IssueAs(t, pki.RoleOperator, "ops"))
	conn, err := grpc.NewClient(c.APIAddrs[0], grpc.WithTransportCredentials(credentials.NewTLS(stranger)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := pb.NewCoordinatorClient(conn).GetState(ctx, &pb.GetStateRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a stranger's GetState: %v, want Unavailable (refused at the handshake)", err)
	}

	// raft: the server reads first, so a refused handshake shows as an
	// error on the client's first read, an accepted one as a timeout.
	raftRead := func(cert tls.Certificate) error {
		conn, err := tls.Dial("tcp", c.Configs[0].RaftAddr, ca.ClientConfig(cert))
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	var ne net.Error
	if err := raftRead(ca.IssueAs(t, pki.RoleCoordinator, "n2")); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a coordinator on raft's transport: %v, want it accepted (a read timeout)", err)
	}
	if err := raftRead(ca.IssueAs(t, pki.RoleViewer, "view")); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("a viewer on raft's transport: %v, want the handshake refused", err)
	}
}
