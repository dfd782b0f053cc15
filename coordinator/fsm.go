package coordinator

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// CommandVersion is the Command envelope schema this FSM applies; it
// rejects any other version rather than guess at its meaning.
const CommandVersion = 1

// StateVersion is the snapshot schema this FSM writes and restores.
const StateVersion = 1

// fsm is the coordinator's raft.FSM: sweeps, trials and trainers. Its
// methods are unexported so the package's API is not raft's. mu guards the
// tables; Apply is called by raft one entry at a time.
type fsm struct {
	mu       sync.RWMutex
	sweeps   map[string]*pb.Sweep
	trials   map[string]*pb.Trial // by trial name, pointing into sweeps
	trainers map[string]*pb.TrainerRecord
	datasets map[string]*pb.Dataset // by sha256
	members  map[string]*pb.Member  // coordinators, by raft server ID
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	return &fsm{sweeps: map[string]*pb.Sweep{}, trials: map[string]*pb.Trial{}, trainers: map[string]*pb.TrainerRecord{},
		datasets: map[string]*pb.Dataset{}, members: map[string]*pb.Member{}}
}

// Apply decodes and applies one command. The result is nil or an error; a
// rejected command leaves the state untouched.
func (f *fsm) Apply(l *raft.Log) any {
	var c pb.Command
	if err := proto.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("%w: log index %d: %v", ErrBadCommand, l.Index, err)
	}
	if c.GetVersion() != CommandVersion {
		return fmt.Errorf("%w %d at log index %d (this coordinator applies version %d)", ErrUnknownVersion, c.GetVersion(), l.Index, CommandVersion)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.apply(&c)
}

func (f *fsm) apply(c *pb.Command) error {
	switch cmd := c.Cmd.(type) {
	case *pb.Command_CreateSweep:
		return f.createSweep(cmd.CreateSweep)
	case *pb.Command_AssignTrial:
		t, err := f.trial(cmd.AssignTrial.GetTrial())
		if err != nil {
			return err
		}
		if t.State != pb.TrialState_TRIAL_STATE_PENDING {
			return fmt.Errorf("trial %s is %s: %w", t.GetName(), stateName(t.State), ErrNotPending)
		}
		if err := checkRing(cmd.AssignTrial.GetTrainers()); err != nil {
			return fmt.Errorf("%w: trial %s: %w", ErrBadCommand, t.GetName(), err)
		}
		t.Generation++
		t.Attempts++
		t.Trainers = slices.Clone(cmd.AssignTrial.GetTrainers())
		t.State, t.Reason = pb.TrialState_TRIAL_STATE_RUNNING, ""
		t.StartedUnixMs = cmd.AssignTrial.GetUnixMs()
		return nil
	case *pb.Command_SetTrialState:
		return f.setTrialState(cmd.SetTrialState)
	case *pb.Command_RecordCheckpoint:
		m := cmd.RecordCheckpoint
		if err := checkReport(f, m); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		t, err := f.trial(m.GetTrial())
		if err != nil {
			return err
		}
		if m.GetGeneration() != t.Generation {
			return fmt.Errorf("trial %s: %w %d (current %d)", t.GetName(), ErrStaleGeneration, m.GetGeneration(), t.Generation)
		}
		if m.GetStep() <= t.CheckpointStep && len(t.History) > 0 {
			return nil // a retried report: already recorded
		}
		if t.State != pb.TrialState_TRIAL_STATE_RUNNING {
			return fmt.Errorf("trial %s is %s: %w", t.GetName(), stateName(t.State), ErrNotRunning)
		}
		t.CheckpointStep = max(t.CheckpointStep, m.GetStep())
		if m.GetHasMetric() {
			t.History = append(t.History, &pb.MetricPoint{Step: m.GetStep(), Metric: m.GetMetric()})
			if !t.HasMetric || m.GetMetric() > t.BestMetric {
				t.HasMetric, t.BestMetric = true, m.GetMetric()
			}
		}
		return nil
	case *pb.Command_CancelSweep:
		s, ok := f.sweeps[cmd.CancelSweep.GetName()]
		if !ok {
			return fmt.Errorf("sweep %s: %w", cmd.CancelSweep.GetName(), ErrNotFound)
		}
		s.Cancelled = true
		for _, t := range s.Trials {
			if t.State == pb.TrialState_TRIAL_STATE_PENDING || t.State == pb.TrialState_TRIAL_STATE_RUNNING {
				t.State, t.Reason = pb.TrialState_TRIAL_STATE_CANCELLED, "sweep cancelled"
				t.Trainers = nil
				t.Generation++ // fence out the trainers still running it
			}
		}
		return nil
	case *pb.Command_ResumeTrial:
		t, err := f.trial(cmd.ResumeTrial.GetTrial())
		if err != nil {
			return err
		}
		switch t.State {
		case pb.TrialState_TRIAL_STATE_PENDING, pb.TrialState_TRIAL_STATE_RUNNING:
			return nil // already queued or running
		case pb.TrialState_TRIAL_STATE_SUCCEEDED:
			return fmt.Errorf("trial %s succeeded: %w", t.GetName(), ErrNothingToResume)
		}
		t.State, t.Reason, t.Trainers = pb.TrialState_TRIAL_STATE_PENDING, "resumed", nil
		for _, s := range f.sweeps {
			if slices.Contains(s.Trials, t) {
				s.Cancelled = false
			}
		}
		return nil
	case *pb.Command_RegisterTrainer:
		tr := cmd.RegisterTrainer.GetTrainer()
		if err := checkTrainer(tr); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		f.trainers[tr.GetId()] = proto.Clone(tr).(*pb.TrainerRecord)
		return nil
	case *pb.Command_SetMember:
		m := cmd.SetMember.GetMember()
		if err := checkMember(m, false); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		f.members[m.GetId()] = proto.Clone(m).(*pb.Member)
		return nil
	case *pb.Command_DeleteSweep:
		return f.deleteSweep(cmd.DeleteSweep.GetName())
	case *pb.Command_ForgetTrainer:
		return f.forgetTrainer(cmd.ForgetTrainer.GetId())
	case *pb.Command_RemoveMember:
		delete(f.members, cmd.RemoveMember.GetId())
		return nil
	default:
		return fmt.Errorf("%w: no command in the envelope", ErrBadCommand)
	}
}

// createSweep records a sweep; an identical sweep (same spec, dataset and
// trial names) is accepted again, so a client may retry a launch whose
// answer it lost.
func (f *fsm) createSweep(m *pb.CreateSweep) error {
	s := m.GetSweep()
	if err := checkSweep(s, 0); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := checkDataset(m.GetDataset()); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if old, ok := f.sweeps[s.GetName()]; ok {
		if sameLaunch(old, s) {
			return nil
		}
		return fmt.Errorf("sweep %s: %w with another spec", s.GetName(), ErrExists)
	}
	for _, t := range s.GetTrials() { // named, and each name once: checkSweep
		if _, ok := f.trials[t.GetName()]; ok {
			return fmt.Errorf("trial %s: %w", t.GetName(), ErrExists)
		}
	}
	s = proto.Clone(s).(*pb.Sweep)
	f.sweeps[s.GetName()] = s
	for _, t := range s.Trials {
		t.State = pb.TrialState_TRIAL_STATE_PENDING
		f.trials[t.GetName()] = t
	}
	if d := m.GetDataset(); d.GetSha256() != "" {
		f.datasets[d.GetSha256()] = proto.Clone(d).(*pb.Dataset)
	}
	return nil
}

func sameLaunch(a, b *pb.Sweep) bool {
	if !bytes.Equal(a.GetSpecYaml(), b.GetSpecYaml()) || a.GetDatasetSha256() != b.GetDatasetSha256() || len(a.GetTrials()) != len(b.GetTrials()) {
		return false
	}
	for i, t := range a.GetTrials() {
		if t.GetName() != b.GetTrials()[i].GetName() {
			return false
		}
	}
	return true
}

// setTrialState moves a trial out of RUNNING: back to PENDING (its trainer
// was lost), or to an end state. Repeating the current state is a no-op so
// reports can be retried.
func (f *fsm) setTrialState(m *pb.SetTrialState) error {
	if len(m.GetReason()) > MaxReasonBytes {
		return fmt.Errorf("%w: %w", ErrBadCommand, argErr("reason", "%d bytes, want at most %d", len(m.GetReason()), MaxReasonBytes))
	}
	if m.GetState() == pb.TrialState_TRIAL_STATE_SUCCEEDED {
		if err := checkResult(m.GetResult()); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
	}
	t, err := f.trial(m.GetTrial())
	if err != nil {
		return err
	}
	if m.GetGeneration() != t.Generation {
		return fmt.Errorf("trial %s: %w %d (current %d)", t.GetName(), ErrStaleGeneration, m.GetGeneration(), t.Generation)
	}
	switch m.GetState() {
	case pb.TrialState_TRIAL_STATE_UNSPECIFIED, pb.TrialState_TRIAL_STATE_RUNNING, pb.TrialState_TRIAL_STATE_CANCELLED:
		return fmt.Errorf("%w: trial %s: state %s cannot be set directly", ErrBadCommand, t.GetName(), stateName(m.GetState()))
	}
	if m.GetState() == t.State {
		return nil
	}
	if t.State != pb.TrialState_TRIAL_STATE_RUNNING {
		return fmt.Errorf("trial %s is %s: %w", t.GetName(), stateName(t.State), ErrNotRunning)
	}
	if m.GetUnixMs() > 0 && t.StartedUnixMs > 0 && m.GetUnixMs() > t.StartedUnixMs {
		t.RunningMs += m.GetUnixMs() - t.StartedUnixMs
	}
	t.State, t.Reason, t.Trainers = m.GetState(), m.GetReason(), nil
	switch t.State {
	case pb.TrialState_TRIAL_STATE_PENDING:
		// Back in the queue: the next assignment bumps the generation.
	case pb.TrialState_TRIAL_STATE_SUCCEEDED:
		t.Result = proto.Clone(m.GetResult()).(*pb.TrialResult)
		t.FinishedUnixMs = m.GetUnixMs()
	default: // failed or stopped early: fence out ranks still running it
		t.FinishedUnixMs = m.GetUnixMs()
		t.Generation++
	}
	return nil
}

// stateName is a trial state without its enum prefix: "RUNNING".
func stateName(s pb.TrialState) string {
	return strings.TrimPrefix(s.String(), "TRIAL_STATE_")
}

func (f *fsm) trial(name string) (*pb.Trial, error) {
	t, ok := f.trials[name]
	if !ok {
		return nil, fmt.Errorf("trial %s: %w", name, ErrNotFound)
	}
	return t, nil
}

// state copies the tables into a State message, sweeps and trainers sorted by name.
func (f *fsm) state() *pb.State {
	st := &pb.State{Version: StateVersion}
	for _, s := range f.sweeps {
		st.Sweeps = append(st.Sweeps, proto.Clone(s).(*pb.Sweep))
	}
	slices.SortFunc(st.Sweeps, func(a, b *pb.Sweep) int { return cmp.Compare(a.GetName(), b.GetName()) })
	for _, t := range f.trainers {
		st.Trainers = append(st.Trainers, proto.Clone(t).(*pb.TrainerRecord))
	}
	slices.SortFunc(st.Trainers, func(a, b *pb.TrainerRecord) int { return cmp.Compare(a.GetId(), b.GetId()) })
	for _, d := range f.datasets {
		st.Datasets = append(st.Datasets, proto.Clone(d).(*pb.Dataset))
	}
	slices.SortFunc(st.Datasets, func(a, b *pb.Dataset) int { return cmp.Compare(a.GetSha256(), b.GetSha256()) })
	for _, m := range f.members {
		st.Members = append(st.Members, proto.Clone(m).(*pb.Member))
	}
	slices.SortFunc(st.Members, func(a, b *pb.Member) int { return cmp.Compare(a.GetId(), b.GetId()) })
	return st
}

// Snapshot copies the state under the lock; Persist writes it outside.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	st := f.state()
	f.mu.RUnlock()
	return &fsmSnapshot{state: st}, nil
}

// Restore replaces the state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading fsm snapshot: %w", err)
	}
	var st pb.State
	if err := proto.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("decoding fsm snapshot: %w", err)
	}
	if st.GetVersion() != StateVersion {
		return fmt.Errorf("fsm snapshot: %w %d (this coordinator reads version %d)", ErrUnknownVersion, st.GetVersion(), StateVersion)
	}
	fresh := newFSM()
	for _, s := range st.GetSweeps() {
		fresh.sweeps[s.GetName()] = s
		for _, t := range s.GetTrials() {
			fresh.trials[t.GetName()] = t
		}
	}
	for _, t := range st.GetTrainers() {
		fresh.trainers[t.GetId()] = t
	}
	for _, d := range st.GetDatasets() {
		fresh.datasets[d.GetSha256()] = d
	}
	for _, m := range st.GetMembers() {
		fresh.members[m.GetId()] = m
	}
	f.mu.Lock()
	f.sweeps, f.trials, f.trainers, f.datasets, f.members = fresh.sweeps, fresh.trials, fresh.trainers, fresh.datasets, fresh.members
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ state *pb.State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(data)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persisting fsm snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// EncodeCommand wraps a command body in a versioned envelope for raft.Apply.
func EncodeCommand(c *pb.Command) ([]byte, error) {
	c.Version = CommandVersion
	return proto.Marshal(c)
}
