package coordinator

import (
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// TestFSMDeleteSweep: a sweep with a pending or running trial cannot be
// deleted, and the refusal changes nothing; once it ended, deleting it
// gives back the state from before its launch (trials and its dataset's
// record too, unless another sweep uses the dataset).
func TestFSMDeleteSweep(t *testing.T) {
	f := newFSM()
	del := func(name string) error {
		return applyCmd(t, f, &pb.Command{Cmd: &pb.Command_DeleteSweep{DeleteSweep: &pb.DeleteSweep{Name: name}}})
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "a", Address: "h:1"}}}}); err != nil {
		t.Fatal(err)
	}
	withData := func(name string) *pb.Command {
		c := sweepCmd(name, 3)
		c.GetCreateSweep().Dataset = &pb.Dataset{Sha256: "abc", Name: "d.csv", Rows: 10, Size: 100}
		return c
	}
	empty := proto.Clone(f.state()).(*pb.State)
	if err := applyCmd(t, f, withData("sw")); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t001", Trainers: []string{"a"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want error
	}{
		{"sw", ErrSweepActive},
		{"absent", ErrNotFound},
		{"", ErrBadCommand},
		{"../x", ErrBadCommand},
	} {
		before := proto.Clone(f.state())
		if err := del(tc.name); !errors.Is(err, tc.want) {
			t.Fatalf("delete %q: %v, want %v", tc.name, err, tc.want)
		}
		if !proto.Equal(before, f.state()) {
			t.Fatalf("the refused delete of %q changed the state", tc.name)
		}
	}
	if err := del("sw"); err == nil || !containsAll(err.Error(), "sw-t001 (RUNNING)", "sw-t000 (PENDING)") {
		t.Fatalf("the refusal does not name the active trials: %v", err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "sw"}}}); err != nil {
		t.Fatal(err)
	}
	// A second sweep on the same dataset keeps its record alive.
	if err := applyCmd(t, f, withData("other")); err != nil {
		t.Fatal(err)
	}
	if err := del("sw"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.trials["sw-t000"]; ok || len(f.datasets) != 1 {
		t.Fatalf("after deleting sw: trial sw-t000 still there %v, datasets %v", ok, f.datasets)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "other"}}}); err != nil {
		t.Fatal(err)
	}
	if err := del("other"); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(empty, f.state()) {
		t.Fatalf("after deleting every sweep the state is not what it was before:\nbefore %v\nafter  %v", empty, f.state())
	}
	// The name is free again.
	if err := applyCmd(t, f, withData("sw")); err != nil {
		t.Fatalf("launching a deleted sweep's name again: %v", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestFSMForgetTrainer: a trainer a running trial names is not forgotten
// (and the refusal changes nothing); an idle one is.
func TestFSMForgetTrainer(t *testing.T) {
	f := newFSM()
	forget := func(id string) error {
		return applyCmd(t, f, &pb.Command{Cmd: &pb.Command_ForgetTrainer{ForgetTrainer: &pb.ForgetTrainer{Id: id}}})
	}
	for _, id := range []string{"a", "b"} {
		if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: id, Address: "h:1"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, sweepCmd("sw", 1)); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"a"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"a", ErrTrainerBusy},
		{"ghost", ErrNotFound},
		{"", ErrBadCommand},
		{"a/b", ErrBadCommand},
	} {
		before := proto.Clone(f.state())
		if err := forget(tc.id); !errors.Is(err, tc.want) {
			t.Fatalf("forget %q: %v, want %v", tc.id, err, tc.want)
		}
		if !proto.Equal(before, f.state()) {
			t.Fatalf("the refused forget of %q changed the state", tc.id)
		}
	}
	if err := forget("b"); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "sw-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_FAILED}}}); err != nil {
		t.Fatal(err)
	}
	if err := forget("a"); err != nil {
		t.Fatalf("forgetting a trainer whose trial ended: %v", err)
	}
	if len(f.trainers) != 0 {
		t.Fatalf("trainers left: %v", f.trainers)
	}
}

// TestTidyDecisions: the leader deletes only sweeps that ended longer ago
// than the retention (never with retention 0, never an active one) and
// forgets only idle trainers silent for longer than ForgetTrainerAfter.
func TestTidyDecisions(t *testing.T) {
	now := time.UnixMilli(10_000_000_000)
	hour := time.Hour.Milliseconds()
	f := newFSM()
	for _, s := range []*pb.Sweep{
		{Name: "old", CreatedUnixMs: now.UnixMilli() - 5*hour, Trials: []*pb.Trial{
			{Name: "old-a", State: pb.TrialState_TRIAL_STATE_SUCCEEDED, StartedUnixMs: now.UnixMilli() - 4*hour, FinishedUnixMs: now.UnixMilli() - 3*hour}}},
		{Name: "recent", CreatedUnixMs: now.UnixMilli() - 5*hour, Trials: []*pb.Trial{
			{Name: "recent-a", State: pb.TrialState_TRIAL_STATE_FAILED, FinishedUnixMs: now.UnixMilli() - hour/2}}},
		{Name: "active", CreatedUnixMs: now.UnixMilli() - 5*hour, Trials: []*pb.Trial{
			{Name: "active-a", State: pb.TrialState_TRIAL_STATE_RUNNING, Trainers: []string{"busy"}}}},
		{Name: "cancelled", CreatedUnixMs: now.UnixMilli() - 5*hour, Cancelled: true, Trials: []*pb.Trial{
			{Name: "cancelled-a", State: pb.TrialState_TRIAL_STATE_CANCELLED}}},
	} {
		f.sweeps[s.Name] = s
		for _, tr := range s.Trials {
			f.trials[tr.Name] = tr
		}
	}
	for _, id := range []string{"busy", "silent", "recent"} {
		f.trainers[id] = &pb.TrainerRecord{Id: id, Address: "h:1"}
	}
	heard := map[string]time.Time{"busy": now.Add(-48 * time.Hour), "silent": now.Add(-25 * time.Hour), "recent": now.Add(-time.Hour)}
	lastHeard := func(id string) time.Time { return heard[id] }
	names := func(ds []decision) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.trial.trial)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  SchedulerConfig
		skip func(trialGen) bool
		want []string
	}{
		{"retention 2h", SchedulerConfig{SweepRetention: 2 * time.Hour, ForgetTrainerAfter: 24 * time.Hour}, nil,
			[]string{"sweep cancelled", "sweep old", "trainer silent"}},
		{"no retention", SchedulerConfig{ForgetTrainerAfter: 24 * time.Hour}, nil, []string{"trainer silent"}},
		{"retention 10m", SchedulerConfig{SweepRetention: 10 * time.Minute, ForgetTrainerAfter: 30 * time.Minute}, nil,
			[]string{"sweep cancelled", "sweep old", "sweep recent", "trainer recent", "trainer silent"}},
		{"refused before", SchedulerConfig{SweepRetention: 2 * time.Hour, ForgetTrainerAfter: 24 * time.Hour},
			func(k trialGen) bool { return k.trial == "sweep old" }, []string{"sweep cancelled", "trainer silent"}},
	} {
		skip := tc.skip
		if skip == nil {
			skip = func(trialGen) bool { return false }
		}
		got := names(tidyDecisions(f, now, tc.cfg, lastHeard, skip))
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}
