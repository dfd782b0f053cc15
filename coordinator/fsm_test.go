package coordinator

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

func applyCmd(t *testing.T, f *fsm, c *pb.Command) error {
	t.Helper()
	data, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(&raft.Log{Index: 1, Data: data})
	if res == nil {
		return nil
	}
	return res.(error)
}

func sweepCmd(name string, n int) *pb.Command {
	s := &pb.Sweep{Name: name, DatasetSha256: "abc"}
	for i := range n {
		s.Trials = append(s.Trials, &pb.Trial{Name: name + "-t00" + string(rune('0'+i)), Index: int32(i), Rank: 8, Alpha: 16})
	}
	return &pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: s}}}
}

func TestFSMLifecycleAndFencing(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, sweepCmd("sw", 2)); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, sweepCmd("sw", 1)); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate sweep: %v", err)
	}
	assign := &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"a", "b"}}}}
	if err := applyCmd(t, f, assign); err != nil {
		t.Fatal(err)
	}
	tr := f.trials["sw-t000"]
	if tr.Generation != 1 || tr.State != pb.TrialState_TRIAL_STATE_RUNNING || tr.Attempts != 1 {
		t.Fatalf("after assignment: %v", tr)
	}
	ck := func(gen uint64, step int64, metric float64) error {
		return applyCmd(t, f, &pb.Command{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Trial: "sw-t000", Generation: gen, Step: step, HasMetric: true, Metric: metric}}})
	}
	if err := ck(1, 10, 0.4); err != nil {
		t.Fatal(err)
	}
	// The trainer is lost: back to pending, then reassigned with a new generation.
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "sw-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_PENDING, Reason: "lease expired"}}}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, assign); err != nil {
		t.Fatal(err)
	}
	if tr.Generation != 2 || tr.CheckpointStep != 10 {
		t.Fatalf("after reassignment: %v", tr)
	}
	// The old assignment's late report is fenced out and changes nothing.
	if err := ck(1, 20, 0.9); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("stale checkpoint report: %v", err)
	}
	if tr.CheckpointStep != 10 || tr.BestMetric != 0.4 {
		t.Fatalf("a stale report changed the trial: %v", tr)
	}
	if err := ck(2, 20, 0.3); err != nil || tr.CheckpointStep != 20 || tr.BestMetric != 0.4 {
		t.Fatalf("current report: %v, trial %v (best must stay 0.4)", err, tr)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "sw"}}}); err != nil {
		t.Fatal(err)
	}
	if tr.State != pb.TrialState_TRIAL_STATE_CANCELLED || tr.Generation != 3 || f.trials["sw-t001"].State != pb.TrialState_TRIAL_STATE_CANCELLED {
		t.Fatalf("after cancel: %v / %v", tr, f.trials["sw-t001"])
	}
}

func TestFSMRejectsBadCommands(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, sweepCmd("sw", 1)); err != nil {
		t.Fatal(err)
	}
	before := f.state()
	// A command from a future coordinator version.
	future, _ := proto.Marshal(&pb.Command{Version: 2, Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "sw"}}})
	res := f.Apply(&raft.Log{Index: 7, Data: future})
	if err, _ := res.(error); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("version 2: %v", res)
	}
	if res := f.Apply(&raft.Log{Index: 8, Data: []byte{0xff, 0xff, 0xff}}); !errors.Is(res.(error), ErrBadCommand) {
		t.Fatalf("garbage: %v", res)
	}
	if err := applyCmd(t, f, &pb.Command{}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("empty envelope: %v", err)
	}
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "nope"}}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown trial: %v", err)
	}
	if !proto.Equal(before, f.state()) {
		t.Fatal("a rejected command changed the state")
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	f := newFSM()
	for _, c := range []*pb.Command{sweepCmd("a", 3), sweepCmd("b", 1),
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "a-t001", Trainers: []string{"x"}}}},
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "x", Address: "127.0.0.1:1"}}}},
	} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(f.state(), g.state()) {
		t.Fatalf("restored state differs:\n%v\n%v", f.state(), g.state())
	}
	// The restored FSM keeps applying: trials are linked to their sweeps.
	if err := applyCmd(t, g, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "a"}}}); err != nil {
		t.Fatal(err)
	}
	if g.trials["a-t000"].State != pb.TrialState_TRIAL_STATE_CANCELLED {
		t.Fatal("restored trials are not the sweep's trials")
	}
	future, _ := proto.Marshal(&pb.State{Version: 9})
	if err := g.Restore(io.NopCloser(bytes.NewReader(future))); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("restoring a version-9 snapshot: %v", err)
	}
}

// TestFSMOnRaft applies commands through a real raft node backed by
// OpenStores, restarts it, and finds the same state rebuilt from the log.
func TestFSMOnRaft(t *testing.T) {
	dir := t.TempDir()
	f := newFSM()
	r, stores := startNode(t, dir, f, true)
	for _, c := range []*pb.Command{sweepCmd("sw", 2), {Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"a"}}}}} {
		data, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		fut := r.Apply(data, 5*time.Second)
		if err := fut.Error(); err != nil {
			t.Fatal(err)
		}
		if res, _ := fut.Response().(error); res != nil {
			t.Fatal(res)
		}
	}
	want := f.state()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := stores.Close(); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	r2, stores2 := startNode(t, dir, g, false)
	if err := r2.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, g.state()) {
		t.Fatalf("state after restart:\n%v\nwant\n%v", g.state(), want)
	}
	_ = r2.Shutdown().Error()
	_ = stores2.Close()
}
