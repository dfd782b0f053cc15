package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ServerConfig configures a node's API.
type ServerConfig struct {
	// APIAddrs maps members' raft addresses to their API addresses for
	// leader hints; the replicated member table is consulted first.
	APIAddrs  map[string]string
	Scheduler SchedulerConfig
	// MaxTrialsPerSweep bounds the trials of a launched sweep (0: DefaultMaxTrialsPerSweep).
	MaxTrialsPerSweep int
}

// Server serves the Coordinator gRPC API on one node. Reads are answered
// locally; writes are applied through raft on the leader, and a follower
// refuses them with Unavailable and a LeaderHint. The leader also
// runs the scheduler. Open assembles it with its node.
type Server struct {
	pb.UnimplementedCoordinatorServer
	node      *Node
	apiAddrs  map[string]string
	sched     *scheduler
	maxTrials int
}

// newServer serves node.
func newServer(node *Node, cfg ServerConfig) *Server {
	maxTrials := cfg.MaxTrialsPerSweep
	if maxTrials <= 0 {
		maxTrials = DefaultMaxTrialsPerSweep
	}
	return &Server{node: node, apiAddrs: cfg.APIAddrs, sched: newScheduler(node, cfg.Scheduler), maxTrials: maxTrials}
}

// runScheduler runs the leader's placement and lease loop until ctx ends;
// on followers it idles.
func (s *Server) runScheduler(ctx context.Context) { s.sched.run(ctx) }

// GetState returns this node's applied state, or a linearizable one from the leader.
func (s *Server) GetState(ctx context.Context, req *pb.GetStateRequest) (*pb.State, error) {
	if !req.GetConsistent() {
		return s.node.State(), nil
	}
	st, err := s.node.ConsistentState(ctx)
	if err != nil {
		return nil, s.status(err)
	}
	return st, nil
}

// GetSweep returns a sweep, with live progress when this node leads.
func (s *Server) GetSweep(ctx context.Context, req *pb.GetSweepRequest) (*pb.SweepStatus, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, s.status(err)
	}
	if req.GetConsistent() {
		if err := s.node.barrier(ctx); err != nil {
			return nil, s.status(err)
		}
	}
	var sw *pb.Sweep
	s.node.view(func(f *fsm) {
		if x, ok := f.sweeps[req.GetName()]; ok {
			sw = proto.Clone(x).(*pb.Sweep)
		}
	})
	if sw == nil {
		return nil, status.Errorf(codes.NotFound, "sweep %s: %v", req.GetName(), ErrNotFound)
	}
	out := &pb.SweepStatus{Sweep: sw, Progress: map[string]*pb.Progress{}}
	if s.node.IsLeader() {
		for _, t := range sw.GetTrials() {
			if t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
				if p := s.sched.live(t.GetName(), t.GetGeneration()); p != nil {
					out.Progress[t.GetName()] = p
				}
			}
		}
	}
	return out, nil
}

// LaunchSweep records a sweep and its trials.
func (s *Server) LaunchSweep(ctx context.Context, req *pb.LaunchSweepRequest) (*pb.LaunchSweepResponse, error) {
	if err := checkSweep(req.GetSweep(), s.maxTrials); err != nil {
		return nil, s.status(err)
	}
	if err := checkDataset(req.GetDataset()); err != nil {
		return nil, s.status(err)
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: req.GetSweep(), Dataset: req.GetDataset()}}}); err != nil {
		return nil, err
	}
	return &pb.LaunchSweepResponse{Leader: s.node.cfg.ID}, nil
}

// CancelSweep cancels a sweep.
func (s *Server) CancelSweep(ctx context.Context, req *pb.CancelSweepRequest) (*pb.CancelSweepResponse, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, s.status(err)
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: req.GetName()}}}); err != nil {
		return nil, err
	}
	return &pb.CancelSweepResponse{}, nil
}

// ResumeRun requeues a failed, cancelled or early-stopped trial.
func (s *Server) ResumeRun(ctx context.Context, req *pb.ResumeRunRequest) (*pb.ResumeRunResponse, error) {
	if err := checkName("run", req.GetRun()); err != nil {
		return nil, s.status(err)
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_ResumeTrial{ResumeTrial: &pb.ResumeTrial{Trial: req.GetRun()}}}); err != nil {
		return nil, err
	}
	return &pb.ResumeRunResponse{}, nil
}

// BestTrial returns the sweep's trial with the highest best metric (ties:
// the lowest index).
func (s *Server) BestTrial(_ context.Context, req *pb.BestTrialRequest) (*pb.Trial, error) {
	if err := checkName("sweep", req.GetSweep()); err != nil {
		return nil, s.status(err)
	}
	var best *pb.Trial
	found := false
	s.node.view(func(f *fsm) {
		sw, ok := f.sweeps[req.GetSweep()]
		if !ok {
			return
		}
		found = true
		for _, t := range sw.GetTrials() {
			if t.GetHasMetric() && (best == nil || t.GetBestMetric() > best.GetBestMetric()) {
				best = t
			}
		}
		if best != nil {
			best = proto.Clone(best).(*pb.Trial)
		}
	})
	switch {
	case !found:
		return nil, status.Errorf(codes.NotFound, "sweep %s: %v", req.GetSweep(), ErrNotFound)
	case best == nil:
		return nil, status.Errorf(codes.NotFound, "sweep %s: no trial has reported a metric yet", req.GetSweep())
	}
	return best, nil
}

// AddVoter adds a coordinator to the raft group and records its API
// address. Adding a member again with the same addresses does nothing;
// with other addresses it is FailedPrecondition (ErrMemberConflict): a
// member's addresses are never rewritten.
func (s *Server) AddVoter(ctx context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	m := req.GetMember()
	if err := checkMember(m, true); err != nil {
		return nil, s.status(fmt.Errorf("add voter: %w", err))
	}
	var known *pb.Member
	s.node.view(func(f *fsm) {
		if x, ok := f.members[m.GetId()]; ok {
			known = proto.Clone(x).(*pb.Member)
		}
	})
	if known != nil && !proto.Equal(known, m) {
		return nil, s.status(fmt.Errorf("coordinator %s is already a member (raft %s, API %s): %w",
			m.GetId(), known.GetRaftAddress(), known.GetApiAddress(), ErrMemberConflict))
	}
	if err := s.node.Join(m.GetId(), m.GetRaftAddress()); err != nil {
		return nil, s.status(fmt.Errorf("adding voter %s at %s: %w", m.GetId(), m.GetRaftAddress(), err))
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_SetMember{SetMember: &pb.SetMember{Member: m}}}); err != nil {
		return nil, err
	}
	return &pb.AddVoterResponse{}, nil
}

// RemoveVoter removes a coordinator from the raft group.
func (s *Server) RemoveVoter(ctx context.Context, req *pb.RemoveVoterRequest) (*pb.RemoveVoterResponse, error) {
	if err := checkID("id", req.GetId()); err != nil {
		return nil, s.status(err)
	}
	if err := s.node.Remove(req.GetId()); err != nil {
		return nil, s.status(fmt.Errorf("removing voter %s: %w", req.GetId(), err))
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_RemoveMember{RemoveMember: &pb.RemoveMember{Id: req.GetId()}}}); err != nil {
		return nil, err
	}
	return &pb.RemoveVoterResponse{}, nil
}

// RegisterTrainer records a trainer (a no-op write when nothing changed).
func (s *Server) RegisterTrainer(ctx context.Context, req *pb.RegisterTrainerRequest) (*pb.RegisterTrainerResponse, error) {
	tr := req.GetTrainer()
	if err := checkTrainer(tr); err != nil {
		return nil, s.status(fmt.Errorf("register trainer: %w", err))
	}
	if !s.node.IsLeader() {
		return nil, s.status(s.node.notLeader())
	}
	same := false
	s.node.view(func(f *fsm) { same = proto.Equal(f.trainers[tr.GetId()], tr) })
	if !same {
		if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: tr}}}); err != nil {
			return nil, err
		}
	}
	s.sched.beat(tr.GetId(), trialGen{}, "", 0, nil, time.Now())
	cfg := s.sched.cfg
	return &pb.RegisterTrainerResponse{HeartbeatIntervalMs: cfg.HeartbeatInterval.Milliseconds(), LeaseMs: cfg.Lease.Milliseconds()}, nil
}

// Heartbeat renews a trainer's lease and returns its assignment. Only the
// leader holds leases, so followers redirect; and the leader confirms with
// a quorum that it still leads before it answers, so a paused leader that
// wakes up deposed cannot hand out an assignment the group has moved past.
// Live progress is kept only for the trial and generation the trainer is
// assigned (and only when its numbers are sane); other progress is
// ignored, never an error, so the lease is renewed all the same.
func (s *Server) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := checkID("trainer_id", req.GetTrainerId()); err != nil {
		return nil, s.status(err)
	}
	if err := s.node.verifyLeader(ctx); err != nil {
		return nil, s.status(err)
	}
	var a *pb.Assignment
	known := false
	s.node.view(func(f *fsm) {
		_, known = f.trainers[req.GetTrainerId()]
		if known {
			a = assignment(f, req.GetTrainerId())
		}
	})
	if !known {
		return nil, status.Errorf(codes.NotFound, "trainer %s is not registered", req.GetTrainerId())
	}
	trial, p := req.GetTrial(), req.GetProgress()
	var claimed trialGen
	if trial != "" && checkID("trial", trial) == nil {
		claimed = trialGen{trial, req.GetGeneration()}
	}
	if a == nil || a.GetTrial().GetName() != trial || a.GetGeneration() != req.GetGeneration() || !progressOK(p) {
		trial, p = "", nil
	}
	s.sched.beat(req.GetTrainerId(), claimed, trial, req.GetGeneration(), p, time.Now())
	return &pb.HeartbeatResponse{Assignment: a, LeaseMs: s.sched.cfg.Lease.Milliseconds()}, nil
}

// ReportCheckpoint records a committed checkpoint, then applies the sweep's
// early-stopping rule.
func (s *Server) ReportCheckpoint(ctx context.Context, req *pb.ReportCheckpointRequest) (*pb.ReportCheckpointResponse, error) {
	rc := &pb.RecordCheckpoint{Trial: req.GetTrial(), Generation: req.GetGeneration(), Step: req.GetStep(), HasMetric: req.GetHasMetric(), Metric: req.GetMetric()}
	var err error
	s.node.view(func(f *fsm) {
		if err = checkReport(f, rc); err == nil {
			err = staleReport(f, rc.GetTrial(), rc.GetGeneration())
		}
	})
	if err != nil {
		return nil, s.status(err)
	}
	err = s.apply(ctx, &pb.Command{Cmd: &pb.Command_RecordCheckpoint{RecordCheckpoint: rc}})
	if err != nil {
		return nil, err
	}
	if !req.GetHasMetric() {
		return &pb.ReportCheckpointResponse{}, nil
	}
	var stop bool
	var why string
	s.node.view(func(f *fsm) {
		t := f.trials[req.GetTrial()]
		for _, sw := range f.sweeps {
			if t != nil && t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && t.GetGeneration() == req.GetGeneration() && containsTrial(sw, t) {
				stop, why = shouldStop(sw, t, req.GetStep())
			}
		}
	})
	if !stop {
		return &pb.ReportCheckpointResponse{}, nil
	}
	err = s.apply(ctx, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: req.GetTrial(), Generation: req.GetGeneration(),
		State: pb.TrialState_TRIAL_STATE_STOPPED_EARLY, Reason: why, UnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		return nil, err
	}
	return &pb.ReportCheckpointResponse{Stop: true}, nil
}

// staleReport refuses, without a raft entry, a report of a generation
// older than the trial's applied one: generations only grow, so the FSM
// would refuse it too. (A newer or equal generation, or an unknown trial,
// goes to the FSM: this node's applied state may lag what is committed.)
func staleReport(f *fsm, trial string, gen uint64) error {
	if t, ok := f.trials[trial]; ok && gen < t.GetGeneration() {
		return fmt.Errorf("trial %s: %w %d (current %d)", trial, ErrStaleGeneration, gen, t.GetGeneration())
	}
	return nil
}

func containsTrial(sw *pb.Sweep, t *pb.Trial) bool {
	for _, x := range sw.GetTrials() {
		if x == t {
			return true
		}
	}
	return false
}

// ReportResult ends a trial (SUCCEEDED or FAILED) or gives it back to the
// queue (PENDING: the ring broke, another placement resumes it).
func (s *Server) ReportResult(ctx context.Context, req *pb.ReportResultRequest) (*pb.ReportResultResponse, error) {
	switch req.GetState() {
	case pb.TrialState_TRIAL_STATE_SUCCEEDED, pb.TrialState_TRIAL_STATE_FAILED, pb.TrialState_TRIAL_STATE_PENDING:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "state: %s, want SUCCEEDED, FAILED or PENDING", req.GetState())
	}
	if err := checkName("trial", req.GetTrial()); err != nil {
		return nil, s.status(err)
	}
	var stale error
	s.node.view(func(f *fsm) { stale = staleReport(f, req.GetTrial(), req.GetGeneration()) })
	if stale != nil {
		return nil, s.status(stale)
	}
	// Only a success records its result, so only a success's is checked: a
	// failure is never refused over numbers that would be thrown away.
	result := req.GetResult()
	if req.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED {
		result = nil
	} else if err := checkResult(result); err != nil {
		return nil, s.status(err)
	}
	err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: req.GetTrial(), Generation: req.GetGeneration(),
		State: req.GetState(), Reason: cutReason(req.GetReason()), Result: result, UnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		return nil, err
	}
	return &pb.ReportResultResponse{}, nil
}

func (s *Server) apply(ctx context.Context, c *pb.Command) error {
	if err := s.node.Apply(ctx, c); err != nil {
		return s.status(err)
	}
	return nil
}

// status maps errors to gRPC codes, one code per situation (the table is
// in errors.go): not-leader → Unavailable with a LeaderHint detail (its
// address empty while no leader is known); fencing → Aborted; the FSM's
// other refusals → FailedPrecondition, so clients do not retry them.
func (s *Server) status(err error) error {
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		api := ""
		if nl.Leader != "" {
			api = s.node.memberAPI(nl.Leader)
			if api == "" {
				api = s.apiAddrs[nl.Leader]
			}
		}
		st, derr := status.New(codes.Unavailable, err.Error()).WithDetails(&pb.LeaderHint{ApiAddress: api})
		if derr != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		return st.Err()
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrStaleGeneration), errors.Is(err, ErrNotRunning):
		return status.Error(pb.FencedCode, err.Error())
	case errors.Is(err, ErrNotPending), errors.Is(err, ErrNothingToResume), errors.Is(err, ErrMemberConflict),
		errors.Is(err, ErrSweepActive), errors.Is(err, ErrTrainerBusy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrBadCommand), errors.Is(err, ErrUnknownVersion):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// TrainerLeases returns the leader's memory of each trainer it has heard
// from; a follower has none and refuses, naming the leader, so a
// follower's dashboard asks the leader.
func (s *Server) TrainerLeases(context.Context, *pb.TrainerLeasesRequest) (*pb.TrainerLeasesResponse, error) {
	if !s.node.IsLeader() {
		return nil, s.status(s.node.notLeader())
	}
	now := time.Now()
	out := &pb.TrainerLeasesResponse{}
	for _, l := range s.sched.leases() {
		out.Leases = append(out.Leases, &pb.TrainerLease{TrainerId: l.ID, AgeMs: now.Sub(l.LastSeen).Milliseconds(), LeaseMs: l.Lease.Milliseconds()})
	}
	return out, nil
}
