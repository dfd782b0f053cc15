package coordinator_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestConfigValidate: each broken field is named, several at once are all
// reported, and the defaults are valid.
func TestConfigValidate(t *testing.T) {
	valid := func() coordinator.Config {
		c := coordinator.DefaultConfig()
		c.ID, c.RaftAddr, c.APIAddr, c.Dir = "n1", "127.0.0.1:7000", "127.0.0.1:7400", t.TempDir()
		return c
	}
	tests := []struct {
		name   string
		change func(*coordinator.Config)
		fields []string // every field the error must name; none: valid
	}{
		{"default", func(*coordinator.Config) {}, nil},
		{"lan", func(c *coordinator.Config) { c.Raft = coordinator.LANConfig().Raft }, nil},
		{"missing", func(c *coordinator.Config) { c.ID, c.Dir = "", "" }, []string{"ID", "Dir"}},
		{"unspecified raft address", func(c *coordinator.Config) { c.RaftAddr = "0.0.0.0:7000" }, []string{"RaftAddr"}},
		{"election shorter than heartbeat", func(c *coordinator.Config) { c.Raft.ElectionTimeout = 100 * time.Millisecond }, []string{"Raft.ElectionTimeout"}},
		{"leader lease longer than heartbeat", func(c *coordinator.Config) { c.Raft.LeaderLeaseTimeout = 2 * time.Second }, []string{"Raft.LeaderLeaseTimeout"}},
		{"heartbeat interval over half the lease", func(c *coordinator.Config) { c.Scheduler.HeartbeatInterval = 2 * time.Second }, []string{"Scheduler.HeartbeatInterval"}},
		{"half of mutual TLS", func(c *coordinator.Config) { c.ServerTLS = &tls.Config{} }, []string{"ClientTLS"}},
		{"retention and forgetting", func(c *coordinator.Config) {
			c.Scheduler.SweepRetention, c.Scheduler.ForgetTrainerAfter = 24*time.Hour, time.Hour
		}, nil},
		{"negative retention", func(c *coordinator.Config) { c.Scheduler.SweepRetention = -time.Second }, []string{"Scheduler.SweepRetention"}},
		{"forget a trainer within two leases", func(c *coordinator.Config) { c.Scheduler.ForgetTrainerAfter = 5 * time.Second }, []string{"Scheduler.ForgetTrainerAfter"}},
		{"negative forget", func(c *coordinator.Config) { c.Scheduler.ForgetTrainerAfter = -time.Hour }, []string{"Scheduler.ForgetTrainerAfter"}},
		{"peers without this one", func(c *coordinator.Config) {
			c.Peers = []coordinator.Peer{{ID: "n2", RaftAddr: "127.0.0.1:7001", APIAddr: "127.0.0.1:7401"}}
		}, []string{"Peers"}},
		{"duplicate peer", func(c *coordinator.Config) {
			p := coordinator.Peer{ID: "n1", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:7400"}
			c.Peers = []coordinator.Peer{p, p}
		}, []string{"Peers[1]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid config accepted")
			}
			for _, f := range tc.fields {
				found := false
				for _, e := range flatten(err) {
					var fe *coordinator.FieldError
					if errors.As(e, &fe) && fe.Field == f {
						found = true
					}
				}
				if !found {
					t.Errorf("error %q does not name field %s", err, f)
				}
			}
		})
	}
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestOpenRefusesInvalidConfig: Open validates before it touches the disk.
func TestOpenRefusesInvalidConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir = "n1", "0.0.0.0:0", "127.0.0.1:0", dir
	_, err := coordinator.Open(context.Background(), cfg)
	var fe *coordinator.FieldError
	if !errors.As(err, &fe) || fe.Field != "RaftAddr" || !strings.Contains(err.Error(), "0.0.0.0") {
		t.Fatalf("Open with raft address 0.0.0.0: %v, want a FieldError for RaftAddr", err)
	}
	if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
		t.Fatalf("Open created %s before refusing the config (%v)", dir, serr)
	}
}

// TestRaftLogsReachSlog: raft's own messages (here, a new leader's) go to
// the configured logger rather than being discarded, and Close returns with
// the API closed.
func TestRaftLogsReachSlog(t *testing.T) {
	var buf syncbuf.Buffer
	base := coordinator.LANConfig()
	base.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	base.RaftLogLevel = slog.LevelInfo
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Base: &base})
	c.WaitForLeader(10 * time.Second)
	coordinatortest.Eventually(t, 5*time.Second, func() error {
		if s := buf.String(); !strings.Contains(s, "component=raft") || !strings.Contains(s, "entering leader state") {
			return errors.New("no raft leader message in the log yet:\n" + s)
		}
		return nil
	})
	addr := c.APIAddrs[0]
	c.Stop(0)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := pb.NewCoordinatorClient(cc).GetState(ctx, &pb.GetStateRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("API after Close: %v, want Unavailable (nothing listening)", err)
	}
}

// TestDistinctCodes: a follower's redirect, a fencing refusal and another
// refusal of the FSM each get their own code, and a client that finds no
// leader says so without borrowing any of them.
func TestDistinctCodes(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	leader := c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := c.Client()
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "codes", DatasetSha256: "x", Trials: []*pb.Trial{{Name: "codes-t0", Rank: 8, Alpha: 16}}}); err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	fc := dial(t, c.APIAddrs[follower])
	_, err := fc.CancelSweep(ctx, &pb.CancelSweepRequest{Name: "codes"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || len(st.Details()) != 1 {
		t.Fatalf("write on a follower: %v, want Unavailable with a LeaderHint", err)
	}
	lc := dial(t, c.APIAddrs[leader])
	_, err = lc.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: "codes-t0", Generation: 7, Step: 1})
	if !pb.IsFenced(err) {
		t.Fatalf("report for a trial that is not running: %v, want the fencing code", err)
	}
	// A trainer finishes the trial; resuming it then is the FSM's refusal.
	if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "tr", Address: "tr:1"}}); err != nil {
		t.Fatal(err)
	}
	var as *pb.Assignment
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "tr"})
		if err != nil || resp.GetAssignment() == nil {
			return fmt.Errorf("no assignment yet (%v)", err)
		}
		as = resp.GetAssignment()
		return nil
	})
	if _, err := cl.ReportResult(ctx, &pb.ReportResultRequest{Trial: "codes-t0", Generation: as.GetGeneration(), State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{}}); err != nil {
		t.Fatal(err)
	}
	_, err = lc.ResumeRun(ctx, &pb.ResumeRunRequest{Run: "codes-t0"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resuming a finished trial: %v, want FailedPrecondition", err)
	}

	lonely, err := coordinator.NewClient([]string{c.APIAddrs[follower]})
	if err != nil {
		t.Fatal(err)
	}
	defer lonely.Close()
	lonely.Attempts = 3
	c.Stop(leader)
	c.Stop((leader + 2) % 3)
	_, err = lonely.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: "codes-t0", Generation: 1, Step: 1})
	if !errors.Is(err, coordinator.ErrNoLeader) || pb.IsFenced(err) {
		t.Fatalf("a client without a leader: %v, want ErrNoLeader and not fenced", err)
	}
}

func dial(t *testing.T, addr string) pb.CoordinatorClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewCoordinatorClient(cc)
}

// TestJoinAndRemove: a fourth coordinator opened without peers joins the
// group, receives the replicated state and serves it; joining again is a
// no-op; removing it leaves the group taking writes.
func TestJoinAndRemove(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := c.Client()
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "before-join", DatasetSha256: "x"}); err != nil {
		t.Fatal(err)
	}
	addrs, err := loopback.Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Configs[0]
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir, cfg.Peers = "n4", addrs[0], addrs[1], t.TempDir(), nil
	n4, err := coordinator.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n4.Close()
	m := &pb.Member{Id: "n4", RaftAddress: addrs[0], ApiAddress: addrs[1]}
	if err := cl.AddVoter(ctx, m); err != nil {
		t.Fatalf("adding n4: %v", err)
	}
	n4cl, err := coordinator.NewClient([]string{addrs[1]})
	if err != nil {
		t.Fatal(err)
	}
	defer n4cl.Close()
	coordinatortest.Eventually(t, 30*time.Second, func() error {
		st, err := n4cl.State(ctx)
		if err == nil && len(st.GetSweeps()) == 1 && len(st.GetMembers()) == 1 && st.GetMembers()[0].GetApiAddress() == addrs[1] {
			return nil
		}
		return errors.New("the joined coordinator does not serve the replicated state yet")
	})
	if err := cl.AddVoter(ctx, m); err != nil {
		t.Fatalf("joining again is not idempotent: %v", err)
	}
	// Adding n4 again at other addresses never rewrites them.
	for _, other := range []*pb.Member{{Id: "n4", RaftAddress: "127.0.0.1:1", ApiAddress: addrs[1]}, {Id: "n4", RaftAddress: addrs[0], ApiAddress: "127.0.0.1:1"}} {
		err := cl.AddVoter(ctx, other)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "n4") {
			t.Fatalf("re-adding n4 as %v: %v, want FailedPrecondition naming n4", other, err)
		}
	}
	if st, err := cl.ConsistentState(ctx); err != nil || len(st.GetMembers()) != 1 || !proto.Equal(st.GetMembers()[0], m) {
		t.Fatalf("members after refused re-adds: %v %v", st.GetMembers(), err)
	}
	if err := cl.RemoveVoter(ctx, "n4"); err != nil {
		t.Fatalf("removing n4: %v", err)
	}
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "after-remove", DatasetSha256: "x"}); err != nil {
		t.Fatalf("write after removing a member: %v", err)
	}
	st, err := cl.ConsistentState(ctx)
	if err != nil || len(st.GetSweeps()) != 2 || len(st.GetMembers()) != 0 {
		t.Fatalf("state after remove: %v %v", st, err)
	}
}

// TestMutualTLS: three coordinators whose raft transport and gRPC API both
// require certificates from one CA elect a leader and take writes; clients
// without a certificate, or with one from another CA, are refused.
func TestMutualTLS(t *testing.T) {
	ca := testpki.New(t)
	pair := ca.IssueAs(t, pki.RoleCoordinator, "coordinator")
	serverTLS, clientTLS := ca.ServerConfig(pair), ca.ClientConfig(pair)
	operator := ca.ClientConfig(ca.IssueAs(t, pki.RoleOperator, "ops"))
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{
		Configure:   func(_ int, cfg *coordinator.Config) { cfg.ServerTLS, cfg.ClientTLS = serverTLS, clientTLS },
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(operator))},
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "tls", DatasetSha256: "x"}); err != nil {
		t.Fatalf("launch over mutual TLS: %v", err)
	}
	st, err := cl.ConsistentState(ctx)
	if err != nil || len(st.GetSweeps()) != 1 {
		t.Fatalf("consistent read over mutual TLS: %v %v", st, err)
	}

	foreign := testpki.New(t).Issue(t, "intruder")
	refused := map[string]grpc.DialOption{
		"plaintext":         grpc.WithTransportCredentials(insecure.NewCredentials()),
		"no client cert":    grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS13})),
		"another CA's cert": grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{foreign}, MinVersion: tls.VersionTLS13})),
	}
	for name, opt := range refused {
		t.Run(name, func(t *testing.T) {
			bad, err := coordinator.NewClient(c.APIAddrs[:1], opt)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			bad.Attempts = 1
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if _, err := bad.State(rctx); err == nil {
				t.Fatal("read succeeded without a trusted client certificate")
			}
		})
	}
}

// TestLinearizableUnderLeaderStop runs three coordinators and four
// clients; once the clients have made progress (at least 1 s) the leader is
// stopped, and once they have made progress again under a new leader (at
// least 2 s) they stop. The history, unknown outcomes included, must be
// linearizable.
func TestLinearizableUnderLeaderStop(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h := coordinatortest.StartClients(t, ctx, c.APIAddrs, 4, "lin")
	t.Cleanup(func() { stop(); h.Wait() }) // before the coordinators close, should the test fail early
	h.Run(t, time.Second, 40)

	leader := c.WaitForLeader(5 * time.Second)
	before := h.Completed()
	c.Stop(leader)
	t.Logf("stopped leader %s after %d completed calls", c.Configs[leader].ID, before)
	h.Run(t, 2*time.Second, 40)

	stop()
	coordinatortest.CheckLinearizable(t, h.Wait(), "leader-stop")
}
