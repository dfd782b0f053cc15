package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// manyTrials is a sweep of n trials named name-t00000…
func manyTrials(name string, n int) *pb.Sweep {
	s := &pb.Sweep{Name: name, DatasetSha256: "abc"}
	for i := range n {
		s.Trials = append(s.Trials, &pb.Trial{Name: fmt.Sprintf("%s-t%05d", name, i), Index: int32(i), Rank: 8, Alpha: 16})
	}
	return s
}

// TestListPagesAndDelete pages through 250 trials 100 at a time on a real
// group while other sweeps are launched between pages (their trials sort
// before and after the cursor): every trial of the first sweep is listed
// exactly once. Sweep pages, filters, live progress; then DeleteSweep: a
// running sweep is refused naming its trials, a cancelled one goes away.
func TestListPagesAndDelete(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	c.WaitForLeader(20 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.LaunchSweep(ctx, manyTrials("mid", 250)); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	token, pages := "", 0
	for {
		page, err := cl.ListTrials(ctx, "", pb.TrialState_TRIAL_STATE_UNSPECIFIED, 100, token)
		if err != nil {
			t.Fatal(err)
		}
		if page.GetStale() {
			t.Fatal("a page from a healthy group is stale")
		}
		pages++
		if len(page.GetTrials()) > 100 {
			t.Fatalf("page %d: %d trials, asked for 100", pages, len(page.GetTrials()))
		}
		for _, ts := range page.GetTrials() {
			seen[ts.GetTrial().GetName()]++
			if !strings.HasPrefix(ts.GetTrial().GetName(), ts.GetSweep()+"-") || len(ts.GetTrial().GetHistory()) != 0 {
				t.Fatalf("trial summary %v: wrong sweep or a history", ts)
			}
		}
		if pages == 1 {
			// Launched between pages: "aaa" sorts before the cursor, "zzz" after.
			for _, name := range []string{"aaa", "zzz"} {
				if err := cl.LaunchSweep(ctx, manyTrials(name, 30)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	for i := range 250 {
		if n := seen[fmt.Sprintf("mid-t%05d", i)]; n != 1 {
			t.Fatalf("mid-t%05d listed %d times", i, n)
		}
	}
	for name, n := range seen {
		if n != 1 || strings.HasPrefix(name, "aaa-") {
			t.Fatalf("%s listed %d times (aaa's trials sort before the cursor and must not appear)", name, n)
		}
	}
	if seen["zzz-t00029"] != 1 {
		t.Fatal("a trial launched after the cursor's position is missing")
	}

	// Sweep pages of one, and filters.
	var sweeps []string
	token = ""
	for {
		page, err := cl.ListSweeps(ctx, 1, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.GetSweeps() {
			sweeps = append(sweeps, fmt.Sprintf("%s/%d/%d", s.GetName(), s.GetTrials(), s.GetPending()))
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if got := strings.Join(sweeps, " "); got != "aaa/30/30 mid/250/250 zzz/30/30" {
		t.Fatalf("sweep pages: %s", got)
	}
	api := dial(t, cl.Leader())
	if _, err := api.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "tr1", Address: "h:1"}}); err != nil {
		t.Fatal(err)
	}
	var running *pb.Trial
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		page, err := cl.ListTrials(ctx, "", pb.TrialState_TRIAL_STATE_RUNNING, 0, "")
		if err != nil {
			return err
		}
		if len(page.GetTrials()) != 1 {
			return fmt.Errorf("running trials: %v", page.GetTrials())
		}
		running = page.GetTrials()[0].GetTrial()
		return nil
	})
	hb, err := api.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "tr1", Trial: running.GetName(), Generation: running.GetGeneration(), Progress: &pb.Progress{Step: 2, Steps: 10}})
	if err != nil || hb.GetAssignment().GetTrial().GetName() != running.GetName() {
		t.Fatalf("heartbeat: %v, %v", hb, err)
	}
	page, err := cl.ListTrials(ctx, running.GetName()[:3], pb.TrialState_TRIAL_STATE_RUNNING, 0, "")
	if err != nil || len(page.GetTrials()) != 1 || page.GetTrials()[0].GetProgress().GetStep() != 2 {
		t.Fatalf("the running trial of its sweep with live progress: %v, %v", page, err)
	}
	if _, err := cl.ListTrials(ctx, "nosuch", 0, 0, ""); status.Code(err) != codes.NotFound {
		t.Fatalf("trials of an unknown sweep: %v, want NotFound", err)
	}

	// DeleteSweep: refused while a trial runs (naming it), done after a cancel.
	active := running.GetName()[:3]
	err = cl.DeleteSweep(ctx, active)
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), running.GetName()+" (RUNNING)") {
		t.Fatalf("deleting a running sweep: %v, want FailedPrecondition naming %s", err, running.GetName())
	}
	if err := cl.CancelSweep(ctx, active); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteSweep(ctx, active); err != nil {
		t.Fatalf("deleting a cancelled sweep: %v", err)
	}
	if _, err := cl.Sweep(ctx, active); status.Code(err) != codes.NotFound {
		t.Fatalf("a deleted sweep: %v, want NotFound", err)
	}
	if err := cl.DeleteSweep(ctx, active); status.Code(err) != codes.NotFound {
		t.Fatalf("deleting it again: %v, want NotFound", err)
	}
	coordinatortest.Eventually(t, 10*time.Second, func() error { // every member applied the delete
		for i, m := range c.Members {
			for _, s := range m.Node().State().GetSweeps() {
				if s.GetName() == active {
					return fmt.Errorf("member %d still has sweep %s", i, active)
				}
			}
		}
		return nil
	})
}

// TestRetentionAndForgetting: with a sweep retention, the leader deletes a
// sweep that ended longer ago (and keeps an active one); a trainer silent
// for ForgetTrainerAfter is forgotten while one that heartbeats stays.
func TestRetentionAndForgetting(t *testing.T) {
	base := coordinatortest.TestConfig()
	base.Scheduler.Lease, base.Scheduler.HeartbeatInterval = 500*time.Millisecond, 100*time.Millisecond
	base.Scheduler.SweepRetention = time.Hour
	base.Scheduler.ForgetTrainerAfter = 2 * time.Second
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Base: &base})
	c.WaitForLeader(20 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := manyTrials("old", 2)
	old.CreatedUnixMs = time.Now().Add(-2 * time.Hour).UnixMilli()
	if err := cl.LaunchSweep(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := cl.CancelSweep(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	oldActive := manyTrials("oldactive", 1)
	oldActive.CreatedUnixMs = old.CreatedUnixMs
	if err := cl.LaunchSweep(ctx, oldActive); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alive", "silent"} {
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: id + ":1"}}); err != nil {
			t.Fatal(err)
		}
	}
	// "alive" heartbeats (and runs oldactive's trial); "silent" never does,
	// but its registration counts as a heartbeat, so it is forgotten only
	// ForgetTrainerAfter later.
	registered := time.Now()
	coordinatortest.Eventually(t, 30*time.Second, func() error {
		if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "alive"}); err != nil {
			return err
		}
		st, err := cl.ConsistentState(ctx)
		if err != nil {
			return err
		}
		var names, trainers []string
		for _, s := range st.GetSweeps() {
			names = append(names, s.GetName())
		}
		for _, tr := range st.GetTrainers() {
			trainers = append(trainers, tr.GetId())
		}
		if strings.Join(names, ",") != "oldactive" || strings.Join(trainers, ",") != "alive" {
			return fmt.Errorf("sweeps %v, trainers %v; want oldactive, alive", names, trainers)
		}
		return nil
	})
	if waited := time.Since(registered); waited < 2*time.Second {
		t.Fatalf("the silent trainer was forgotten after %v, before ForgetTrainerAfter", waited)
	}
}
