package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// planFSM builds an FSM with one sweep of n trials and the given trainers.
func planFSM(t *testing.T, n, perTrial, maxConc int, trainers ...string) *fsm {
	t.Helper()
	f := newFSM()
	c := sweepCmd("sw", n)
	c.GetCreateSweep().GetSweep().TrainersPerTrial = int32(perTrial)
	c.GetCreateSweep().GetSweep().MaxConcurrent = int32(maxConc)
	if err := applyCmd(t, f, c); err != nil {
		t.Fatal(err)
	}
	for _, id := range trainers {
		if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: id, Address: id + ":1"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func decisionsOf(ds []decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.what)
	}
	return out
}

func TestPlan(t *testing.T) {
	now := time.Unix(1000, 0)
	all := func(string) bool { return true }
	tests := []struct {
		name              string
		trials, per, conc int
		trainers          []string
		running           map[string][]string // trial → trainers, assigned before planning
		alive, placeable  func(string) bool
		want              []string
	}{
		{name: "one trial per free trainer, in order", trials: 3, per: 1, trainers: []string{"b", "a"}, alive: all, placeable: all,
			want: []string{"assign sw-t000 (generation 1) to [a]", "assign sw-t001 (generation 1) to [b]"}},
		{name: "rings of two", trials: 3, per: 2, trainers: []string{"a", "b", "c"}, alive: all, placeable: all,
			want: []string{"assign sw-t000 (generation 1) to [a b]"}},
		{name: "max concurrent", trials: 3, per: 1, conc: 1, trainers: []string{"a", "b"}, alive: all, placeable: all,
			want: []string{"assign sw-t000 (generation 1) to [a]"}},
		{name: "busy trainers are not free", trials: 2, per: 1, trainers: []string{"a", "b"}, running: map[string][]string{"sw-t000": {"a"}},
			alive: all, placeable: all, want: []string{"assign sw-t001 (generation 1) to [b]"}},
		{name: "trainers not heard from this term get nothing", trials: 1, per: 1, trainers: []string{"a"}, alive: all,
			placeable: func(string) bool { return false }, want: nil},
		{name: "a lost trainer's trial is requeued", trials: 1, per: 2, trainers: []string{"a", "b"}, running: map[string][]string{"sw-t000": {"a", "b"}},
			alive: func(id string) bool { return id != "b" }, placeable: all,
			want: []string{"requeue sw-t000: trainer b lost"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := planFSM(t, tc.trials, tc.per, tc.conc, tc.trainers...)
			for trial, ring := range tc.running {
				if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: trial, Trainers: ring}}}); err != nil {
					t.Fatal(err)
				}
			}
			ds, _ := plan(f, now, tc.alive, tc.placeable, time.Second, nil, nil)
			got := decisionsOf(ds)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("decisions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			// Every decision is one the FSM accepts.
			for _, d := range ds {
				if err := applyCmd(t, f, d.cmd); err != nil {
					t.Fatalf("%s: %v", d.what, err)
				}
			}
		})
	}
}

func TestAssignmentNamesRingAndResumePoint(t *testing.T) {
	f := planFSM(t, 1, 2, 0, "a", "b")
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"b", "a"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Trial: "sw-t000", Generation: 1, Step: 30}}}); err != nil {
		t.Fatal(err)
	}
	a := assignment(f, "a")
	if a.GetRank() != 1 || a.GetWorld() != 2 || strings.Join(a.GetPeers(), ",") != "b:1,a:1" || a.GetGeneration() != 1 || a.GetCheckpointStep() != 30 {
		t.Fatalf("assignment of a: %v", a)
	}
	if assignment(f, "c") != nil {
		t.Fatal("an unassigned trainer got work")
	}
}

func history(points ...float64) []*pb.MetricPoint {
	var h []*pb.MetricPoint
	for i, m := range points {
		h = append(h, &pb.MetricPoint{Step: int64(10 * (i + 1)), Metric: m})
	}
	return h
}

func TestShouldStop(t *testing.T) {
	sweep := func(rule string, grace int64, me []float64, others ...[]float64) (*pb.Sweep, *pb.Trial) {
		sw := &pb.Sweep{Metric: "macro_f1", EarlyStopping: &pb.EarlyStopping{Rule: rule, GraceSteps: grace, ReductionFactor: 2}}
		t := &pb.Trial{Name: "me", History: history(me...)}
		sw.Trials = append(sw.Trials, t)
		for i, o := range others {
			sw.Trials = append(sw.Trials, &pb.Trial{Name: string(rune('a' + i)), History: history(o...)})
		}
		return sw, t
	}
	tests := []struct {
		name  string
		rule  string
		grace int64
		me    []float64
		other [][]float64
		step  int64
		want  bool
	}{
		{"median: below the others", "median", 0, []float64{0.1, 0.2}, [][]float64{{0.5, 0.6}, {0.4, 0.7}}, 20, true},
		{"median: above the median", "median", 0, []float64{0.1, 0.65}, [][]float64{{0.5, 0.6}, {0.4, 0.7}, {0.3, 0.3}}, 20, false},
		{"median: within grace", "median", 30, []float64{0.1, 0.2}, [][]float64{{0.5, 0.6}, {0.4, 0.7}}, 20, false},
		{"median: one other is not enough", "median", 0, []float64{0.1, 0.2}, [][]float64{{0.5, 0.6}}, 20, false},
		{"median: others not at this step yet", "median", 0, []float64{0.1, 0.2}, [][]float64{{0.5}, {0.4}}, 20, false},
		{"asha: outside the top half at a rung", "asha", 10, []float64{0.1, 0.2}, [][]float64{{0.5, 0.6}, {0.4, 0.7}, {0.9, 0.9}}, 20, true},
		{"asha: inside the top half", "asha", 10, []float64{0.1, 0.8}, [][]float64{{0.5, 0.6}, {0.4, 0.7}, {0.3, 0.3}}, 20, false},
		{"asha: first arrival continues", "asha", 10, []float64{0.1, 0.2}, nil, 20, false},
		{"no rule", "", 0, []float64{0.1}, [][]float64{{0.9}, {0.9}}, 10, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sw, me := sweep(tc.rule, tc.grace, tc.me, tc.other...)
			if tc.rule == "" {
				sw.EarlyStopping = nil
			}
			got, why := shouldStop(sw, me, tc.step)
			if got != tc.want {
				t.Fatalf("shouldStop = %v (%s), want %v", got, why, tc.want)
			}
			if got && why == "" {
				t.Fatal("a stop without a reason")
			}
		})
	}
}

func TestFSMTransitions(t *testing.T) {
	set := func(gen uint64, s pb.TrialState) *pb.Command {
		return &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "sw-t000", Generation: gen, State: s, Result: &pb.TrialResult{Steps: 5}}}}
	}
	resume := &pb.Command{Cmd: &pb.Command_ResumeTrial{ResumeTrial: &pb.ResumeTrial{Trial: "sw-t000"}}}
	assign := &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"a"}}}}
	f := planFSM(t, 1, 1, 0, "a")
	steps := []struct {
		name string
		cmd  *pb.Command
		ok   bool
		want pb.TrialState
		gen  uint64
	}{
		{"assign", assign, true, pb.TrialState_TRIAL_STATE_RUNNING, 1},
		{"assigning a running trial is refused", assign, false, pb.TrialState_TRIAL_STATE_RUNNING, 1},
		{"running cannot be set directly", set(1, pb.TrialState_TRIAL_STATE_RUNNING), false, pb.TrialState_TRIAL_STATE_RUNNING, 1},
		{"stopped early fences the generation", set(1, pb.TrialState_TRIAL_STATE_STOPPED_EARLY), true, pb.TrialState_TRIAL_STATE_STOPPED_EARLY, 2},
		{"a late success of the old generation is refused", set(1, pb.TrialState_TRIAL_STATE_SUCCEEDED), false, pb.TrialState_TRIAL_STATE_STOPPED_EARLY, 2},
		{"resume queues it", resume, true, pb.TrialState_TRIAL_STATE_PENDING, 2},
		{"resuming a queued trial is a no-op", resume, true, pb.TrialState_TRIAL_STATE_PENDING, 2},
		{"reassign bumps the generation", assign, true, pb.TrialState_TRIAL_STATE_RUNNING, 3},
		{"success", set(3, pb.TrialState_TRIAL_STATE_SUCCEEDED), true, pb.TrialState_TRIAL_STATE_SUCCEEDED, 3},
		{"a retried success is a no-op", set(3, pb.TrialState_TRIAL_STATE_SUCCEEDED), true, pb.TrialState_TRIAL_STATE_SUCCEEDED, 3},
		{"a failure after success is refused", set(3, pb.TrialState_TRIAL_STATE_FAILED), false, pb.TrialState_TRIAL_STATE_SUCCEEDED, 3},
		{"a succeeded trial cannot be resumed", resume, false, pb.TrialState_TRIAL_STATE_SUCCEEDED, 3},
	}
	for _, s := range steps {
		err := applyCmd(t, f, s.cmd)
		if (err == nil) != s.ok {
			t.Fatalf("%s: err %v, want ok=%v", s.name, err, s.ok)
		}
		tr := f.trials["sw-t000"]
		if tr.GetState() != s.want || tr.GetGeneration() != s.gen {
			t.Fatalf("%s: trial %s generation %d, want %s generation %d", s.name, tr.GetState(), tr.GetGeneration(), s.want, s.gen)
		}
	}
	if f.trials["sw-t000"].GetResult().GetSteps() != 5 {
		t.Fatal("result not recorded")
	}
	// Members round-trip through a snapshot with the rest.
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_SetMember{SetMember: &pb.SetMember{Member: &pb.Member{Id: "n4", RaftAddress: "r:1", ApiAddress: "a:1"}}}}); err != nil {
		t.Fatal(err)
	}
	if st := f.state(); len(st.GetMembers()) != 1 || st.GetMembers()[0].GetApiAddress() != "a:1" {
		t.Fatalf("members: %v", st.GetMembers())
	}
}

// TestNewLeaderGrace: a leader that has not heard from a trainer yet
// counts it alive for the grace period, then requeues its trial; a
// trainer that heartbeats keeps its trial. The clock is the tick's argument.
func TestNewLeaderGrace(t *testing.T) {
	n := singleNode(t)
	ctx := context.Background()
	for _, c := range []*pb.Command{
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "quiet", Address: "q:1"}}}},
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "alive", Address: "a:1"}}}},
		sweepCmd("g", 2),
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "g-t000", Trainers: []string{"quiet"}}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "g-t001", Trainers: []string{"alive"}}}},
	} {
		if err := n.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	s := newScheduler(n, SchedulerConfig{Lease: time.Second, Grace: 5 * time.Second})
	t0 := time.Now()
	stateOf := func(trial string) pb.TrialState {
		for _, tr := range n.State().GetSweeps()[0].GetTrials() {
			if tr.GetName() == trial {
				return tr.GetState()
			}
		}
		return 0
	}
	steps := []struct {
		at          time.Duration
		beatAlive   bool
		quiet, live pb.TrialState
	}{
		{0, false, pb.TrialState_TRIAL_STATE_RUNNING, pb.TrialState_TRIAL_STATE_RUNNING},
		{4 * time.Second, true, pb.TrialState_TRIAL_STATE_RUNNING, pb.TrialState_TRIAL_STATE_RUNNING},
		{5500 * time.Millisecond, true, pb.TrialState_TRIAL_STATE_PENDING, pb.TrialState_TRIAL_STATE_RUNNING},
	}
	for _, st := range steps {
		now := t0.Add(st.at)
		if st.beatAlive {
			s.beat("alive", trialGen{"g-t001", 1}, "g-t001", 1, nil, now)
		}
		s.tick(ctx, now)
		if got := stateOf("g-t000"); got != st.quiet {
			t.Fatalf("at +%s the silent trainer's trial is %s, want %s", st.at, got, st.quiet)
		}
		if got := stateOf("g-t001"); got != st.live {
			t.Fatalf("at +%s the heartbeating trainer's trial is %s, want %s", st.at, got, st.live)
		}
	}
}

// TestASHARungNoOverflow: the rung search ends, without overflowing, for
// any step a report can carry (a step near 2^63 used to loop forever while
// holding the FSM's read lock).
func TestASHARungNoOverflow(t *testing.T) {
	tests := []struct {
		grace, eta, step, want int64
	}{
		{10, 2, 5, 10},
		{10, 2, 10, 10},
		{10, 2, 19, 10},
		{10, 2, 20, 20},
		{10, 2, 45, 40},
		{1, 3, 26, 9},
		{1, 3, 27, 27},
		{1, 2, math.MaxInt64, 1 << 62},
		{1, 3, math.MaxInt64, 4052555153018976267}, // 3^39
		{7, 2, math.MaxInt64 - 1, 7 << 60},
		{math.MaxInt64, 2, math.MaxInt64, math.MaxInt64},
		{1, math.MaxInt32, math.MaxInt64, math.MaxInt32 * math.MaxInt32},
	}
	for _, tc := range tests {
		if got := ashaRung(tc.grace, tc.eta, tc.step); got != tc.want {
			t.Errorf("ashaRung(%d, %d, %d) = %d, want %d", tc.grace, tc.eta, tc.step, got, tc.want)
		}
	}
	// shouldStop itself returns on a hostile step.
	for _, step := range []int64{math.MaxInt64, math.MaxInt64 - 1, 1 << 62, math.MinInt64} {
		sw := &pb.Sweep{EarlyStopping: &pb.EarlyStopping{Rule: "asha", GraceSteps: 1, ReductionFactor: 3}}
		me := &pb.Trial{Name: "me", History: []*pb.MetricPoint{{Step: step, Metric: 0.5}}}
		sw.Trials = []*pb.Trial{me, {Name: "o", History: []*pb.MetricPoint{{Step: step, Metric: 0.9}}}}
		done := make(chan struct{})
		go func() { shouldStop(sw, me, step); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("shouldStop at step %d did not return", step)
		}
	}
}

// legacyDuplicateState is a state recorded before trial names had to be
// unique: sweep "dup" has two trials named dup-t000 (the FSM indexes the
// last, running one; the first stays pending and cannot be addressed), and a later sweep "next" waits behind it.
func legacyDuplicateState(t *testing.T) []byte {
	t.Helper()
	st := &pb.State{Version: StateVersion,
		Sweeps: []*pb.Sweep{
			{Name: "dup", CreatedUnixMs: 1, Trials: []*pb.Trial{
				{Name: "dup-t000", Rank: 8, Alpha: 16, State: pb.TrialState_TRIAL_STATE_PENDING},
				{Name: "dup-t000", Index: 1, Rank: 8, Alpha: 16, State: pb.TrialState_TRIAL_STATE_RUNNING, Generation: 1, Trainers: []string{"a"}}}},
			{Name: "next", CreatedUnixMs: 2, Trials: []*pb.Trial{{Name: "next-t000", Rank: 8, Alpha: 16, State: pb.TrialState_TRIAL_STATE_PENDING}}},
		},
		Trainers: []*pb.TrainerRecord{{Id: "a", Address: "a:1"}, {Id: "b", Address: "b:1"}}}
	data, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPlanSkipsWhatCannotBePlaced: a pending trial the FSM cannot address
// (a duplicate name) and a trial whose decision was refused are skipped,
// and the trainers go to the next trial instead.
func TestPlanSkipsWhatCannotBePlaced(t *testing.T) {
	now := time.Unix(1000, 0)
	all := func(string) bool { return true }
	tests := []struct {
		name      string
		skip      func(trialGen) bool
		want      []string
		wantStuck int
	}{
		{"duplicate name skipped", nil, []string{"assign next-t000 (generation 1) to [b]"}, 1},
		{"refused decision skipped", func(k trialGen) bool { return k.trial == "next-t000" }, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSM()
			if err := f.Restore(io.NopCloser(bytes.NewReader(legacyDuplicateState(t)))); err != nil {
				t.Fatal(err)
			}
			ds, stuck := plan(f, now, all, all, time.Second, tc.skip, nil)
			if got := decisionsOf(ds); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("decisions %q, want %q", got, tc.want)
			}
			if len(stuck) != tc.wantStuck {
				t.Fatalf("stuck %q, want %d", stuck, tc.wantStuck)
			}
		})
	}
}

// TestTickDoesNotStallOnABadSweep: on a leader whose state holds a sweep
// with a trial it cannot place, the scheduler still places the next
// sweep's trial, and later ticks write nothing more to the raft log.
func TestTickDoesNotStallOnABadSweep(t *testing.T) {
	n := singleNode(t)
	if err := n.fsm.Restore(io.NopCloser(bytes.NewReader(legacyDuplicateState(t)))); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := newScheduler(n, SchedulerConfig{Lease: time.Minute})
	now := time.Now()
	s.tick(ctx, now) // the term starts
	s.beat("a", trialGen{}, "", 0, nil, now)
	s.beat("b", trialGen{}, "", 0, nil, now)
	s.tick(ctx, now)
	if st := n.fsm.trials["next-t000"].GetState(); st != pb.TrialState_TRIAL_STATE_RUNNING {
		t.Fatalf("the next sweep's trial is %s, want RUNNING", st)
	}
	last := n.raft.LastIndex()
	for i := range 20 {
		s.tick(ctx, now.Add(time.Duration(i)*time.Millisecond))
	}
	if got := n.raft.LastIndex(); got != last {
		t.Fatalf("20 idle ticks wrote %d raft entries", got-last)
	}
	if err := n.Apply(ctx, sweepCmd("again", 1)); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(ctx, &pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: &pb.Sweep{Name: "twice",
		Trials: []*pb.Trial{{Name: "twice-t0", Rank: 8, Alpha: 16}, {Name: "twice-t0", Rank: 8, Alpha: 16}}}}}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a sweep with two trials of one name: %v, want ErrBadCommand", err)
	}
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("trial x is RUNNING: %w", ErrNotPending), true},
		{fmt.Errorf("trial x: %w", ErrNotFound), true},
		{&NotLeaderError{}, false},
		{context.DeadlineExceeded, false},
	} {
		if got := refusal(tc.err); got != tc.want {
			t.Errorf("refusal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestTickPrunesProgress: live progress is forgotten once its trial no
// longer runs at the generation it was reported for.
func TestTickPrunesProgress(t *testing.T) {
	n := singleNode(t)
	ctx := context.Background()
	for _, c := range []*pb.Command{
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "a", Address: "a:1"}}}},
		sweepCmd("p", 2),
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "p-t000", Trainers: []string{"a"}}}},
	} {
		if err := n.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	s := newScheduler(n, SchedulerConfig{Lease: time.Minute})
	now := time.Now()
	s.tick(ctx, now) // the term starts
	s.beat("a", trialGen{}, "p-t000", 1, &pb.Progress{Step: 3}, now)
	s.beat("a", trialGen{}, "p-t001", 0, &pb.Progress{Step: 4}, now) // not running
	s.beat("a", trialGen{}, "gone", 1, &pb.Progress{Step: 5}, now)   // no such trial
	s.tick(ctx, now)
	if s.live("p-t000", 1).GetStep() != 3 {
		t.Fatal("the running trial's progress was pruned")
	}
	s.mu.Lock()
	kept := len(s.progress)
	s.mu.Unlock()
	if kept != 1 {
		t.Fatalf("%d trials' progress kept, want only the running one's", kept)
	}
	if err := n.Apply(ctx, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "p-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_FAILED}}}); err != nil {
		t.Fatal(err)
	}
	s.tick(ctx, now)
	s.mu.Lock()
	kept = len(s.progress)
	s.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d trials' progress kept after the trial failed, want none", kept)
	}
}

// TestPlacementWaitsForEarlierGeneration: a requeued trial is not placed
// again while a trainer still heard from says it runs the trial's previous
// generation (it has not yet learnt it lost it), so two generations never
// run at once; it is placed as soon as that trainer lets go, or after a
// lease if it never does (the generation fence then keeps it harmless).
func TestPlacementWaitsForEarlierGeneration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		letGo   bool          // the old trainer's next heartbeat claims nothing
		at      time.Duration // when the trial is placed again
		stuckAt time.Duration // a time before that when it still waits
	}{
		{"lets go", true, 600 * time.Millisecond, 300 * time.Millisecond},
		{"holds on", false, time.Second, 900 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := singleNode(t)
			ctx := context.Background()
			for _, c := range []*pb.Command{
				{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "old", Address: "o:1"}}}},
				{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "new", Address: "n:1"}}}},
				sweepCmd("w", 1),
				{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "w-t000", Trainers: []string{"old"}}}},
				{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "w-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_PENDING, Reason: "ring broken"}}},
			} {
				if err := n.Apply(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			s := newScheduler(n, SchedulerConfig{Lease: time.Second, Grace: time.Millisecond})
			t0 := time.Now()
			trial := func() *pb.Trial { return n.State().GetSweeps()[0].GetTrials()[0] }
			s.tick(ctx, t0) // the term starts
			for at := time.Duration(0); at <= tc.at; at += 100 * time.Millisecond {
				now := t0.Add(at)
				claim := trialGen{"w-t000", 1}
				if tc.letGo && at >= tc.at {
					claim = trialGen{}
				}
				s.beat("old", claim, "", 0, nil, now)
				s.beat("new", trialGen{}, "", 0, nil, now)
				s.tick(ctx, now)
				placed := trial().GetState() == pb.TrialState_TRIAL_STATE_RUNNING
				switch {
				case at < tc.at && placed:
					t.Fatalf("at +%s the trial was placed (generation %d on %v) while %q still ran generation 1", at, trial().GetGeneration(), trial().GetTrainers(), "old")
				case at == tc.stuckAt && trial().GetState() != pb.TrialState_TRIAL_STATE_PENDING:
					t.Fatalf("at +%s the trial is %s, want PENDING", at, trial().GetState())
				}
			}
			if tr := trial(); tr.GetState() != pb.TrialState_TRIAL_STATE_RUNNING || tr.GetGeneration() != 2 {
				t.Fatalf("at +%s the trial is %s generation %d, want RUNNING generation 2", tc.at, tr.GetState(), tr.GetGeneration())
			}
		})
	}
}
