package dashboard

import (
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

func sweepStatus(trials ...*pb.Trial) *pb.SweepStatus {
	return &pb.SweepStatus{Sweep: &pb.Sweep{Name: "s", Trials: trials}, Progress: map[string]*pb.Progress{}}
}

// TestWatcherEvents: each state change the watcher sees becomes one event
// of the right kind, with the reason the replicated state gives.
func TestWatcherEvents(t *testing.T) {
	const (
		pending = pb.TrialState_TRIAL_STATE_PENDING
		running = pb.TrialState_TRIAL_STATE_RUNNING
	)
	cases := []struct {
		name   string
		to     *pb.Trial
		from   pb.TrialState
		kind   string
		reason string
	}{
		{"placed", &pb.Trial{State: running, Attempts: 1, Trainers: []string{"a"}}, pending, "placed", "attempt 1 on a"},
		{"requeued", &pb.Trial{State: pending, Attempts: 1, Reason: "trainer a lost (no heartbeat for 3s)"}, running, "requeued", "trainer a lost (no heartbeat for 3s)"},
		{"resumed", &pb.Trial{State: pending, Attempts: 1, Reason: "resumed"}, pb.TrialState_TRIAL_STATE_FAILED, "resumed", "back in the queue from FAILED"},
		{"stopped early", &pb.Trial{State: pb.TrialState_TRIAL_STATE_STOPPED_EARLY, Attempts: 1, Reason: "asha: below the rung"}, running, "stopped early", "asha: below the rung"},
		{"failed", &pb.Trial{State: pb.TrialState_TRIAL_STATE_FAILED, Attempts: 1, Reason: "nan loss"}, running, "failed", "nan loss"},
		{"cancelled", &pb.Trial{State: pb.TrialState_TRIAL_STATE_CANCELLED, Attempts: 1, Reason: "sweep cancelled"}, pending, "cancelled", "sweep cancelled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWatcher()
			now := time.UnixMilli(1_000_000)
			c.to.Name = "s-t0"
			w.observe(sweepStatus(&pb.Trial{Name: "s-t0", State: c.from, Attempts: c.to.GetAttempts()}), now)
			if ev := w.events("s"); len(ev) != 0 {
				t.Fatalf("events before any change: %v", ev)
			}
			w.observe(sweepStatus(c.to), now.Add(time.Second))
			w.observe(sweepStatus(c.to), now.Add(2*time.Second)) // no change, no event
			ev := w.events("s")
			if len(ev) != 1 || ev[0].Kind != c.kind || ev[0].Text != c.reason || ev[0].Trial != "s-t0" || ev[0].UnixMs != now.Add(time.Second).UnixMilli() {
				t.Fatalf("events %+v, want one %q %q", ev, c.kind, c.reason)
			}
		})
	}
}

// TestWatcherLoss: loss points follow the steps, restart where a resumed
// trial goes back, stay bounded, and give a throughput.
func TestWatcherLoss(t *testing.T) {
	w := newWatcher()
	tr := &pb.Trial{Name: "s-t0", State: pb.TrialState_TRIAL_STATE_RUNNING}
	start := time.UnixMilli(0)
	beat := func(step int64, at time.Duration) {
		st := sweepStatus(tr)
		st.Progress["s-t0"] = &pb.Progress{Step: step, Loss: float64(step)}
		w.observe(st, start.Add(at))
	}
	beat(10, 0)
	beat(10, time.Second) // same step: no new point
	beat(20, 2*time.Second)
	if f := w.facts("s-t0"); len(f.loss) != 2 || f.rate != 5 {
		t.Fatalf("after steps 10 and 20: %+v, want 2 points and 5 steps/s", f)
	}
	beat(15, 3*time.Second) // resumed from an earlier checkpoint
	if f := w.facts("s-t0"); len(f.loss) != 2 || f.loss[1].Step != 15 {
		t.Fatalf("after the resume: %+v, want points at 10 and 15", f.loss)
	}
	for s := int64(16); s < 16+3*maxLossPoints; s++ {
		beat(s, time.Duration(s)*time.Second)
	}
	f := w.facts("s-t0")
	if len(f.loss) > maxLossPoints || f.loss[len(f.loss)-1].Step != 15+3*maxLossPoints {
		t.Fatalf("%d points, last %v: want at most %d ending at the last step", len(f.loss), f.loss[len(f.loss)-1], maxLossPoints)
	}
	if th := thin(f.loss); len(th) > maxCurvePoints || th[len(th)-1] != f.loss[len(f.loss)-1] || th[0] != f.loss[0] {
		t.Fatalf("thin: %d points", len(th))
	}
}

// TestMergeEvents: what the replicated state shows of changes nobody saw
// is listed once, and an observed event is not repeated.
func TestMergeEvents(t *testing.T) {
	trials := []*pb.Trial{
		{Name: "a", State: pb.TrialState_TRIAL_STATE_STOPPED_EARLY, Reason: "median", FinishedUnixMs: 5, Attempts: 1},
		{Name: "b", State: pb.TrialState_TRIAL_STATE_RUNNING, Attempts: 3},
		{Name: "c", State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Attempts: 1},
	}
	got := mergeEvents(trials, []Event{{UnixMs: 9, Trial: "b", Kind: "requeued", Text: "trainer x lost"}})
	want := []Event{{UnixMs: 9, Trial: "b", Kind: "requeued", Text: "trainer x lost"}, {UnixMs: 5, Trial: "a", Kind: "stopped early", Text: "median"}}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if ev := mergeEvents(trials[1:2], nil); len(ev) != 1 || ev[0].Kind != "requeued" || ev[0].Text != "placed 3 times (requeued or resumed 2×)" {
		t.Fatalf("unobserved requeues: %+v", ev)
	}
}
