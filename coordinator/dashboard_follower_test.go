package coordinator_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestFollowerDashboard runs three coordinators over mutual TLS, each with
// its dashboard on an HTTPS listener, and uses a FOLLOWER's dashboard JSON
// API (what app.js reads) with client certificates: the live step a
// trainer heartbeats to the leader appears there, and so do the leader's
// trainer leases; a viewer's cancel is refused 403 and changes nothing; an
// operator's cancel is forwarded, cancels the sweep and is audited by the
// leader as the operator via the follower. With the other two members
// stopped, the follower's page answers promptly with its applied state,
// marked stale.
func TestFollowerDashboard(t *testing.T) {
	ca := testpki.New(t)
	logs := make([]*syncbuf.Buffer, 3)
	base := coordinatortest.TestConfig()
	base.Scheduler = coordinator.SchedulerConfig{Lease: 5 * time.Minute, Tick: 20 * time.Millisecond}
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Base: &base, Configure: func(i int, cfg *coordinator.Config) {
		cert := ca.IssueAs(t, pki.RoleCoordinator, cfg.ID)
		cfg.ServerTLS, cfg.ClientTLS = ca.ServerConfig(cert), ca.ClientConfig(cert)
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.HTTPHandlers = coordinator.Dashboard(t.Context(), dashboard.Config{Interval: 50 * time.Millisecond})
		logs[i] = &syncbuf.Buffer{}
		cfg.Logger = slog.New(slog.NewJSONHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	c.WaitForLeader(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	grpcAs := func(role pki.Role, id string) *coordinator.Client {
		cl, err := coordinator.NewClient(c.APIAddrs, coordinator.DialTLS(ca.ClientConfig(ca.IssueAs(t, role, id))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	ops, trainer := grpcAs(pki.RoleOperator, "ops"), grpcAs(pki.RoleTrainer, "t1")
	if err := ops.LaunchSweep(ctx, testSweep("web", 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := trainer.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "t1", Address: "127.0.0.1:7501"}}); err != nil {
		t.Fatal(err)
	}
	var a *pb.Assignment
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		resp, err := trainer.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "t1"})
		if a = resp.GetAssignment(); err == nil && a == nil {
			err = errors.New("t1 has no assignment yet")
		}
		return err
	})

	https := func(role pki.Role, id string) *http.Client {
		tc := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.IssueAs(t, role, id)}, MinVersion: tls.VersionTLS13}
		return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	viewer, operator := https(pki.RoleViewer, "view"), https(pki.RoleOperator, "alice")
	follower := (c.WaitForLeader(10*time.Second) + 1) % 3
	url := c.Members[follower].HTTPURL()
	post := func(client *http.Client, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "POST", url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(dashboard.ActionHeader, "1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}

	// Live progress heartbeated to the leader shows on the follower.
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		if _, err := trainer.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "t1", Trial: a.GetTrial().GetName(), Generation: a.GetGeneration(),
			Progress: &pb.Progress{Step: 7, Steps: 20, Loss: 0.875, EtaMs: 3000}}); err != nil {
			return err
		}
		if code, body := get(t, viewer, url+"api/sweeps/web"); code != 200 || !strings.Contains(body, `"live":true`) || !strings.Contains(body, `"step":7`) || !strings.Contains(body, `"loss":0.875`) {
			return fmt.Errorf("the follower's /api/sweeps/web: %d %.600s", code, body)
		}
		if code, body := get(t, viewer, url+"api/trainers"); code != 200 || !strings.Contains(body, `"live":true`) || !strings.Contains(body, `"lease_age_ms":`) {
			return fmt.Errorf("the follower's /api/trainers: %d %.600s", code, body)
		}
		return nil
	})

	cancelled := func() bool {
		st, err := ops.ConsistentState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sw := range st.GetSweeps() {
			if sw.GetName() == "web" {
				return sw.GetCancelled()
			}
		}
		t.Fatal("sweep web is gone")
		return false
	}
	if code, body := post(viewer, "api/sweeps/web/cancel"); code != http.StatusForbidden {
		t.Fatalf("a viewer's cancel through the follower: %d %s, want 403", code, body)
	}
	if cancelled() {
		t.Fatal("the viewer's refused cancel cancelled the sweep")
	}
	if code, body := post(operator, "api/sweeps/web/cancel"); code != http.StatusOK {
		t.Fatalf("an operator's cancel through the follower: %d %s, want 200", code, body)
	}
	if !cancelled() {
		t.Fatal("the operator's cancel through the follower did not cancel the sweep")
	}
	// The member that applied it (the leader) audited the operator, via the
	// follower's coordinator identity.
	via := "loraft://coordinator/" + c.Configs[follower].ID
	found := false
	for i, l := range logs {
		for _, line := range logLines(t, l, "audit") {
			if line["method"] == "CancelSweep" && line["via"] == via {
				if i == follower || line["who"] != "loraft://operator/alice" || line["code"] != "OK" {
					t.Errorf("coordinator %d audited %v", i, line)
				}
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no coordinator audited the operator's cancel via %s", via)
	}

	// Without a leader the follower answers from its applied state, stale,
	// and without hanging.
	for i := range 3 {
		if i != follower {
			c.Stop(i)
		}
	}
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		start := time.Now()
		code, body := get(t, viewer, url+"api/sweeps/web")
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the follower's /api/sweeps/web took %v without a leader", took)
		}
		if code != 200 || !strings.Contains(body, `"live":false`) || !strings.Contains(body, `"cancelled":true`) {
			return fmt.Errorf("the leaderless follower's /api/sweeps/web: %d %.400s", code, body)
		}
		if code, body := get(t, viewer, url+"api/trainers"); code != 200 || !strings.Contains(body, `"live":false`) {
			return fmt.Errorf("the leaderless follower's /api/trainers: %d %.400s", code, body)
		}
		return nil
	})
}
