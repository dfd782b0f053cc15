package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestTrainerProtocol drives the trainer half of the API against a real
// node, its gRPC server and its scheduler: placement on heartbeating
// trainers, assignments, checkpoint reports with median early stopping and
// fencing, lease expiry requeueing a trial that resumes elsewhere from its
// committed checkpoint, and results.
func TestTrainerProtocol(t *testing.T) {
	// The lease is long enough that a loaded machine does not starve the
	// live trainers' heartbeats; only the silenced one may expire.
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.Scheduler = coordinator.SchedulerConfig{Lease: 1500 * time.Millisecond, Tick: 10 * time.Millisecond}
	}})
	c.WaitForLeader(10 * time.Second)
	node := c.Members[0].Node()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sctx, stopBeats := context.WithCancel(ctx)
	cl := c.Client()
	sw := testSweep("es", 3)
	sw.Metric, sw.EarlyStopping = "macro_f1", &pb.EarlyStopping{Rule: "median"}
	if err := cl.LaunchSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: id + ":7500"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Live trainers heartbeat in the background; the test silences one later.
	var mu sync.Mutex
	live := map[string]bool{"a": true, "b": true, "c": true}
	got := map[string]*pb.Assignment{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil && sctx.Err() == nil {
			for _, id := range []string{"a", "b", "c"} {
				mu.Lock()
				on := live[id]
				mu.Unlock()
				if !on {
					continue
				}
				resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id})
				if err == nil {
					mu.Lock()
					got[id] = resp.GetAssignment()
					mu.Unlock()
				}
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()
	defer wg.Wait()
	defer stopBeats()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		coordinatortest.Eventually(t, 10*time.Second, func() error {
			if !cond() {
				return fmt.Errorf("%s: not reached; state %v", what, node.State())
			}
			return nil
		})
	}
	assigned := func(id string) *pb.Assignment { mu.Lock(); defer mu.Unlock(); return got[id] }
	waitFor("every trainer assigned", func() bool { return assigned("a") != nil && assigned("b") != nil && assigned("c") != nil })
	trialOn := map[string]*pb.Assignment{}
	for _, id := range []string{"a", "b", "c"} {
		a := assigned(id)
		if a.GetGeneration() != 1 || a.GetWorld() != 1 || a.GetRank() != 0 || len(a.GetPeers()) != 1 || a.GetPeers()[0] != id+":7500" || a.GetMetric() != "macro_f1" {
			t.Fatalf("assignment of %s: %v", id, a)
		}
		trialOn[id] = a
	}

	report := func(id string, gen uint64, step int64, metric float64) (*pb.ReportCheckpointResponse, error) {
		return cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: trialOn[id].GetTrial().GetName(), Generation: gen, Step: step, HasMetric: true, Metric: metric})
	}
	for id, m := range map[string]float64{"a": 0.9, "b": 0.8} {
		if resp, err := report(id, 1, 10, m); err != nil || resp.GetStop() {
			t.Fatalf("checkpoint of %s: %v %v", id, resp, err)
		}
	}
	resp, err := report("c", 1, 10, 0.1)
	if err != nil || !resp.GetStop() {
		t.Fatalf("the weakest trial was not stopped early: %v %v", resp, err)
	}
	if _, err := report("c", 1, 20, 0.2); !pb.IsFenced(err) {
		t.Fatalf("a report of the stopped generation: %v, want the fencing code", err)
	}
	waitFor("c idle again", func() bool { return assigned("c") == nil })

	// b goes silent: its trial is requeued after the lease and placed on c,
	// the only free trainer, with a new generation and the committed step.
	mu.Lock()
	live["b"] = false
	mu.Unlock()
	bTrial := trialOn["b"].GetTrial().GetName()
	waitFor("b's trial placed on c", func() bool { a := assigned("c"); return a != nil && a.GetTrial().GetName() == bTrial })
	if a := assigned("c"); a.GetGeneration() != 2 || a.GetCheckpointStep() != 10 {
		t.Fatalf("reassignment: %v, want generation 2 resuming at step 10", a)
	}
	var reason string
	for _, tr := range node.State().GetSweeps()[0].GetTrials() {
		if tr.GetName() == bTrial {
			reason = tr.GetReason()
		}
	}
	if _, err := report("b", 1, 20, 0.95); !pb.IsFenced(err) {
		t.Fatalf("a report from the lost trainer's generation: %v, want the fencing code (reason was %q)", err, reason)
	}

	// Results: success is recorded once, a retry is harmless.
	res := &pb.ReportResultRequest{Trial: trialOn["a"].GetTrial().GetName(), Generation: 1, State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{Steps: 40, ValMacroF1: 0.91}}
	for range 2 {
		if _, err := cl.ReportResult(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	best, err := cl.BestTrial(ctx, "es")
	if err != nil || best.GetName() != trialOn["a"].GetTrial().GetName() {
		t.Fatalf("best trial: %v %v", best, err)
	}
	st, err := cl.Sweep(ctx, "es")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, tr := range st.GetSweep().GetTrials() {
		states[tr.GetName()] = strings.TrimPrefix(tr.GetState().String(), "TRIAL_STATE_")
	}
	if states[trialOn["a"].GetTrial().GetName()] != "SUCCEEDED" || states[trialOn["c"].GetTrial().GetName()] != "STOPPED_EARLY" || states[bTrial] != "RUNNING" {
		t.Fatalf("trial states: %v", states)
	}
}
