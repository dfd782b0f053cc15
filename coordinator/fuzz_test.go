package coordinator

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// fuzzBase is fuzzBaseFSM's state, encoded: built once, restored for each
// input (building it parses a spec, too slow for the fuzzer's minimizer).
var fuzzBase struct {
	once sync.Once
	data []byte
}

// fuzzBaseFSM is a fresh FSM with something in every table: two sweeps
// (one with early stopping), a running trial with history, a finished one,
// trainers, a dataset and a member.
func fuzzBaseFSM(tb testing.TB) *fsm {
	tb.Helper()
	fuzzBase.once.Do(func() { fuzzBase.data = stateBytes(tb, buildFuzzBase(tb)) })
	f := newFSM()
	if err := f.Restore(io.NopCloser(bytes.NewReader(fuzzBase.data))); err != nil {
		tb.Fatal(err)
	}
	return f
}

func buildFuzzBase(tb testing.TB) *fsm {
	tb.Helper()
	f := newFSM()
	a := validSweep("fa", 3)
	a.EarlyStopping = &pb.EarlyStopping{Rule: "asha", GraceSteps: 2, ReductionFactor: 2}
	b := validSweep("fb", 2)
	b.Train = nil
	cmds := []*pb.Command{
		{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: a, Dataset: &pb.Dataset{Sha256: "abc", Name: "d.csv", Rows: 1000, Size: 10}}}},
		{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: b}}},
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "t1", Address: "h:1"}}}},
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "t2", Address: "h:2"}}}},
		{Cmd: &pb.Command_SetMember{SetMember: &pb.SetMember{Member: &pb.Member{Id: "n1", RaftAddress: "r:1", ApiAddress: "a:1"}}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "fa-t000", Trainers: []string{"t1"}, UnixMs: 5}}},
		{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Trial: "fa-t000", Generation: 1, Step: 4, HasMetric: true, Metric: 0.4}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "fb-t000", Trainers: []string{"t2"}, UnixMs: 6}}},
		{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "fb-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{Steps: 3}, UnixMs: 9}}},
	}
	for _, c := range cmds {
		if err := f.apply(c); err != nil {
			tb.Fatalf("building the fuzz state: %v", err)
		}
	}
	return f
}

// stateBytes is the state, deterministically encoded (byte equality also
// holds for NaN, where proto.Equal would not).
func stateBytes(tb testing.TB, f *fsm) []byte {
	tb.Helper()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(f.state())
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// fuzzCommandSeeds are encoded commands of every kind, valid and not.
func fuzzCommandSeeds(tb testing.TB) [][]byte {
	big := validSweep("fc", 2)
	big.Trials[1].Name = big.Trials[0].Name
	var out [][]byte
	for _, c := range []*pb.Command{
		{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: validSweep("fc", 2)}}},
		{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: big}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "fa-t001", Trainers: []string{"t2"}}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "fa-t001", Trainers: []string{"t2", "t2"}}}},
		{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Trial: "fa-t000", Generation: 1, Step: 8, HasMetric: true, Metric: 0.5}}},
		{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Trial: "fa-t000", Generation: 1, Step: math.MaxInt64, HasMetric: true, Metric: math.NaN()}}},
		{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "fa-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_PENDING}}},
		{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "fa-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{ValEce: math.Inf(1)}}}},
		{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: "fa"}}},
		{Cmd: &pb.Command_ResumeTrial{ResumeTrial: &pb.ResumeTrial{Trial: "fb-t000"}}},
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "t3", Address: "h:3"}}}},
		{Cmd: &pb.Command_SetMember{SetMember: &pb.SetMember{Member: &pb.Member{Id: "n2", RaftAddress: "r:2"}}}},
		{Cmd: &pb.Command_RemoveMember{RemoveMember: &pb.RemoveMember{Id: "n1"}}},
		{Cmd: &pb.Command_DeleteSweep{DeleteSweep: &pb.DeleteSweep{Name: "fa"}}}, // running: refused
		{Cmd: &pb.Command_DeleteSweep{DeleteSweep: &pb.DeleteSweep{Name: "fb"}}},
		{Cmd: &pb.Command_ForgetTrainer{ForgetTrainer: &pb.ForgetTrainer{Id: "t1"}}}, // assigned: refused
		{Cmd: &pb.Command_ForgetTrainer{ForgetTrainer: &pb.ForgetTrainer{Id: "t2"}}},
		{},
	} {
		data, err := EncodeCommand(c)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// FuzzFSMApply applies arbitrary log entries to a populated FSM: Apply
// never panics, a refused command changes nothing, and whatever state
// results survives a snapshot round trip and can be planned and judged.
func FuzzFSMApply(f *testing.F) {
	for _, s := range fuzzCommandSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := fuzzBaseFSM(t)
		before := stateBytes(t, m)
		res := m.Apply(&raft.Log{Index: 7, Data: data})
		after := stateBytes(t, m)
		if res != nil {
			if _, ok := res.(error); !ok {
				t.Fatalf("Apply returned %T %v, want nil or an error", res, res)
			}
			if !bytes.Equal(before, after) {
				t.Fatalf("refused command (%v) changed the state", res)
			}
		}
		exercise(t, m)
		r := newFSM()
		if err := r.Restore(io.NopCloser(bytes.NewReader(after))); err != nil {
			t.Fatalf("restoring an applied state: %v", err)
		}
		if !bytes.Equal(stateBytes(t, r), after) {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}

// FuzzRestore restores arbitrary snapshot bytes: Restore never panics, a
// refused snapshot leaves the state as it was, and a restored state can be
// planned, assigned and judged without a panic.
func FuzzRestore(f *testing.F) {
	m := fuzzBaseFSM(f)
	f.Add(stateBytes(f, m))
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add([]byte{0x08, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := fuzzBaseFSM(t)
		before := stateBytes(t, m)
		if err := m.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			if !bytes.Equal(before, stateBytes(t, m)) {
				t.Fatalf("refused snapshot (%v) changed the state", err)
			}
			return
		}
		exercise(t, m)
	})
}

// exercise runs what the leader does with a state: plan, assignments, and
// early stopping for every trial with history; each must return promptly.
func exercise(t *testing.T, m *fsm) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		all := func(string) bool { return true }
		plan(m, time.Unix(100, 0), all, all, time.Second, nil, nil)
		for id := range m.trainers {
			assignment(m, id)
		}
		for _, sw := range m.sweeps {
			for _, tr := range sw.GetTrials() {
				if h := tr.GetHistory(); len(h) > 0 {
					shouldStop(sw, tr, h[len(h)-1].GetStep())
				}
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader's work on this state did not return within 5 s")
	}
}

// FuzzShouldStop judges random histories at random steps with both rules:
// it returns promptly, never panics, and a stop always has a reason.
func FuzzShouldStop(f *testing.F) {
	point := func(trial uint8, step int64, metric float64) []byte {
		b := make([]byte, 17)
		b[0] = trial
		binary.LittleEndian.PutUint64(b[1:], uint64(step))
		binary.LittleEndian.PutUint64(b[9:], math.Float64bits(metric))
		return b
	}
	hist := func(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
	f.Add(uint8(1), int64(10), int32(2), int64(20), hist(point(0, 10, 0.1), point(0, 20, 0.2), point(1, 20, 0.9), point(2, 20, 0.8), point(3, 20, 0.7)))
	f.Add(uint8(0), int64(0), int32(0), int64(20), hist(point(0, 20, 0.1), point(1, 20, 0.5), point(2, 20, 0.6)))
	f.Add(uint8(1), int64(1), int32(3), int64(math.MaxInt64), hist(point(0, math.MaxInt64, 0.1), point(1, math.MaxInt64, 0.9)))
	f.Add(uint8(1), int64(math.MinInt64), int32(math.MinInt32), int64(math.MinInt64), hist(point(0, math.MinInt64, math.NaN())))
	f.Fuzz(func(t *testing.T, rule uint8, grace int64, eta int32, step int64, h []byte) {
		sw := &pb.Sweep{Metric: "macro_f1", EarlyStopping: &pb.EarlyStopping{Rule: []string{"median", "asha", ""}[rule%3], GraceSteps: grace, ReductionFactor: eta}}
		for i := range 4 {
			sw.Trials = append(sw.Trials, &pb.Trial{Name: string(rune('a' + i))})
		}
		for ; len(h) >= 17; h = h[17:] {
			tr := sw.Trials[int(h[0])%len(sw.Trials)]
			tr.History = append(tr.History, &pb.MetricPoint{Step: int64(binary.LittleEndian.Uint64(h[1:])), Metric: math.Float64frombits(binary.LittleEndian.Uint64(h[9:]))})
		}
		done := make(chan struct{})
		var stop bool
		var why string
		go func() {
			defer close(done)
			stop, why = shouldStop(sw, sw.Trials[0], step)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("shouldStop at step %d (grace %d, η %d) did not return", step, grace, eta)
		}
		if stop && why == "" {
			t.Fatal("a stop without a reason")
		}
	})
}
