// Package agent is the trainer's loop under a coordinator: register,
// heartbeat, run the assigned rank of a trial, report checkpoints and the
// result. It knows the coordinator only through its gRPC messages and the
// small Coordinator interface, never raft.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/allreduce"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Coordinator is the part of the coordinator API a trainer calls; the
// coordinator package's Client (leader routing, retries) implements it.
type Coordinator interface {
	RegisterTrainer(ctx context.Context, req *pb.RegisterTrainerRequest) (*pb.RegisterTrainerResponse, error)
	Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error)
	ReportCheckpoint(ctx context.Context, req *pb.ReportCheckpointRequest) (*pb.ReportCheckpointResponse, error)
	ReportResult(ctx context.Context, req *pb.ReportResultRequest) (*pb.ReportResultResponse, error)
}

// Reporter is how a running job talks back: live progress for heartbeats,
// and committed checkpoints for the raft log.
type Reporter interface {
	Progress(p *pb.Progress)
	// Checkpoint reports a committed checkpoint; when the coordinator stops
	// the trial (early stopping, or a newer generation fenced this one) the
	// job's context is cancelled.
	Checkpoint(ctx context.Context, step int64, metric float64, hasMetric bool)
	// Authorized is nil while the trainer's lease surely holds, and
	// errLostContact once it may not: the job checks it before every step
	// and checkpoint, so a trainer that wakes from a pause past its fence
	// does no further work on the trial.
	Authorized() error
}

// Runner runs one rank of an assignment until it ends or ctx is cancelled,
// and returns the trial's result (rank 0's is reported).
type Runner interface {
	Run(ctx context.Context, a *pb.Assignment, r Reporter) (*pb.TrialResult, error)
}

// Config configures an Agent.
type Config struct {
	// ID is the trainer's stable name; Address its all-reduce listener (host:port).
	ID, Address string
	Coordinator Coordinator
	Runner      Runner
	// Events, when set, receives a JSON line per job start and end (for
	// operators and tests that check no trial ever runs twice at once).
	Events io.Writer
	Log    *slog.Logger
}

// Agent is one trainer under a coordinator group.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu  sync.Mutex // guards the fields below and Events
	job *job
	// finished holds every job that ended by itself here: such a job is
	// never restarted at the same generation, and while the coordinator
	// still assigns it its report is sent again (the first one may have been
	// lost with a leader), at most every resendEvery.
	finished map[jobKey]*finishedJob
	// newest is the highest generation of each trial this trainer has been
	// assigned; nothing older is ever obeyed.
	newest   map[string]uint64
	progress *pb.Progress
	// fence is when this trainer's lease may no longer hold (Unix ns):
	// 80% of the lease after the last acknowledged heartbeat was sent.
	fence atomic.Int64
}

// resendEvery spaces out re-sent results of a trial the coordinator still assigns.
const resendEvery = 2 * time.Second

// finishedJob is a job that ended by itself: its result report (nil when
// another rank reports) and when it was last sent.
type finishedJob struct {
	report *pb.ReportResultRequest
	sent   time.Time
}

type jobKey struct {
	trial      string
	generation uint64
}

type job struct {
	key    jobKey
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.ID == "" || cfg.Address == "" || cfg.Coordinator == nil || cfg.Runner == nil {
		return nil, errors.New("trainer agent: ID, Address, Coordinator and Runner are required")
	}
	lg := cfg.Log
	if lg == nil {
		lg = slog.Default()
	}
	return &Agent{cfg: cfg, log: lg.With("trainer", cfg.ID), finished: map[jobKey]*finishedJob{}, newest: map[string]uint64{}}, nil
}

// errLostContact cancels a job whose trainer could not renew its lease:
// the leader may already have given the trial to someone else.
var errLostContact = errors.New("lost contact with the coordinators for most of a lease")

// errUnassigned cancels a job the coordinator no longer assigns to this trainer.
var errUnassigned = errors.New("the coordinator no longer assigns this trial here")

// Run registers and heartbeats until ctx ends, starting and stopping jobs
// as the coordinator's assignments say.
func (a *Agent) Run(ctx context.Context) error {
	interval, lease, err := a.register(ctx)
	if err != nil {
		return err
	}
	defer a.stopJob(context.Canceled)
	a.log.Info("registered", "address", a.cfg.Address, "heartbeat", interval, "lease", lease)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastAck := time.Now()
	for {
		// A job may run only while this trainer's lease surely holds: the
		// leader's lease runs from when it received our last acknowledged
		// heartbeat, which is after we sent it. Stop the job at 80% of the
		// lease since that send, and never let a heartbeat call outlive it.
		fence := lastAck.Add(lease * 8 / 10)
		a.fence.Store(fence.UnixNano())
		if time.Now().After(fence) {
			a.stopJob(errLostContact)
		}
		timeout := max(interval*3, time.Second)
		if a.running() {
			timeout = max(time.Millisecond, min(timeout, time.Until(fence)))
		}
		sent := time.Now()
		resp, err := a.heartbeat(ctx, timeout)
		switch {
		case err == nil:
			lastAck = sent
			if l := time.Duration(resp.GetLeaseMs()) * time.Millisecond; l > 0 {
				lease = l
			}
			a.fence.Store(lastAck.Add(lease * 8 / 10).UnixNano())
			a.follow(ctx, resp.GetAssignment())
		case status.Code(err) == codes.NotFound:
			if interval, lease, err = a.register(ctx); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return nil
		default:
			a.log.Debug("heartbeat failed", "err", err)
			if time.Now().After(fence) {
				a.stopJob(errLostContact)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// running reports whether a job is running.
func (a *Agent) running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.job != nil
}

func (a *Agent) register(ctx context.Context) (interval, lease time.Duration, err error) {
	backoff := 100 * time.Millisecond
	for {
		resp, err := a.cfg.Coordinator.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: a.cfg.ID, Address: a.cfg.Address}})
		if err == nil {
			return max(10*time.Millisecond, time.Duration(resp.GetHeartbeatIntervalMs())*time.Millisecond),
				max(100*time.Millisecond, time.Duration(resp.GetLeaseMs())*time.Millisecond), nil
		}
		a.log.Warn("registering with the coordinators", "err", err)
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("registering trainer %s: %w (last error: %v)", a.cfg.ID, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (a *Agent) heartbeat(ctx context.Context, timeout time.Duration) (*pb.HeartbeatResponse, error) {
	req := &pb.HeartbeatRequest{TrainerId: a.cfg.ID}
	a.mu.Lock()
	if a.job != nil {
		req.Trial, req.Generation = a.job.key.trial, a.job.key.generation
		if a.progress != nil {
			req.Progress = proto.Clone(a.progress).(*pb.Progress)
		}
	}
	a.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return a.cfg.Coordinator.Heartbeat(hctx, req)
}

// follow makes the running job match the assignment. An assignment of a
// trial at an older generation than one this trainer has already seen
// comes from a leader the group has moved past: it is ignored, whatever job
// runs or ran here.
func (a *Agent) follow(ctx context.Context, as *pb.Assignment) {
	var want jobKey
	if as != nil {
		want = jobKey{as.GetTrial().GetName(), as.GetGeneration()}
	}
	a.mu.Lock()
	if as != nil {
		if seen := a.newest[want.trial]; want.generation < seen {
			a.mu.Unlock()
			a.log.Warn("ignoring an assignment older than one already seen", "trial", want.trial, "generation", want.generation, "seen", seen)
			return
		}
		a.newest[want.trial] = want.generation
	}
	cur := a.job
	a.mu.Unlock()
	if cur != nil && cur.key == want {
		return
	}
	if cur != nil {
		a.stopJob(errUnassigned)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if as == nil || a.job != nil {
		return
	}
	if f, ok := a.finished[want]; ok {
		if f.report != nil && time.Since(f.sent) > resendEvery {
			f.sent = time.Now()
			go a.report(ctx, f.report)
		}
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	j := &job{key: want, cancel: cancel, done: make(chan struct{})}
	a.job, a.progress = j, nil
	a.event("start", as, nil)
	go a.runJob(jctx, j, proto.Clone(as).(*pb.Assignment))
}

// stopJob cancels the running job and waits for it to end.
func (a *Agent) stopJob(cause error) {
	a.mu.Lock()
	j := a.job
	a.mu.Unlock()
	if j == nil {
		return
	}
	j.cancel(cause)
	<-j.done
}

func (a *Agent) runJob(ctx context.Context, j *job, as *pb.Assignment) {
	defer close(j.done)
	start := time.Now()
	res, err := a.cfg.Runner.Run(ctx, as, &reporter{agent: a, job: j, as: as})
	log := a.log.With("trial", j.key.trial, "generation", j.key.generation, "rank", as.GetRank())
	stopped := ctx.Err() != nil || errors.Is(err, errLostContact) // its lease may have lapsed: not the trial's failure
	var req *pb.ReportResultRequest
	if !stopped {
		req = &pb.ReportResultRequest{Trial: j.key.trial, Generation: j.key.generation}
		switch {
		case err == nil:
			res.WallMs = time.Since(start).Milliseconds()
			req.State, req.Result = pb.TrialState_TRIAL_STATE_SUCCEEDED, res
			log.Info("trial finished", "steps", res.GetSteps(), "val_macro_f1", res.GetValMacroF1())
			if as.GetRank() != 0 {
				req = nil // rank 0 reports the result
			}
		case ringBroken(err) && as.GetTrial().GetAttempts() < maxAttempts:
			// A peer died or was fenced: not the trial's fault. Give it back
			// to the queue; the next placement resumes it from its checkpoint.
			req.State, req.Reason = pb.TrialState_TRIAL_STATE_PENDING, "ring broken: "+err.Error()
			log.Warn("ring broken; trial goes back to the queue", "err", err)
		default:
			req.State, req.Reason = pb.TrialState_TRIAL_STATE_FAILED, err.Error()
			log.Error("trial failed", "err", err)
		}
	} else {
		// Stopped from here (unassigned, early-stopped, lost contact): the
		// coordinator has moved on, or will give the same generation back,
		// which then resumes from the committed checkpoint.
		log.Info("job stopped", "cause", context.Cause(ctx))
	}
	a.mu.Lock()
	if !stopped {
		a.finished[j.key] = &finishedJob{report: req, sent: time.Now()}
	}
	a.job = nil
	e := a.newEvent("end", as, err)
	if errors.Is(context.Cause(ctx), errLostContact) || errors.Is(err, errLostContact) {
		// From the fence on, the job did no work that counts (Authorized).
		e.FencedUnixNano = min(a.fence.Load(), e.UnixNano)
	}
	a.writeEvent(e)
	a.mu.Unlock()
	if req != nil {
		a.report(context.WithoutCancel(ctx), req)
	}
}

// report sends a result, retrying through the client for up to 30 s.
func (a *Agent) report(ctx context.Context, req *pb.ReportResultRequest) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := a.cfg.Coordinator.ReportResult(rctx, req)
	if err != nil && status.Code(err) == codes.InvalidArgument && req.GetState() == pb.TrialState_TRIAL_STATE_SUCCEEDED {
		// The coordinators refuse the result itself (a NaN metric, say):
		// sending it again would keep the trial RUNNING forever. Fail the
		// trial with their reason instead, and send that from now on.
		failed := &pb.ReportResultRequest{Trial: req.GetTrial(), Generation: req.GetGeneration(), State: pb.TrialState_TRIAL_STATE_FAILED,
			Reason: "result refused by the coordinators: " + status.Convert(err).Message()}
		a.log.Error("the coordinators refused the trial's result; reporting it failed", "trial", req.GetTrial(), "err", err)
		a.mu.Lock()
		if f, ok := a.finished[jobKey{req.GetTrial(), req.GetGeneration()}]; ok {
			f.report = failed
		}
		a.mu.Unlock()
		_, err = a.cfg.Coordinator.ReportResult(rctx, failed)
		req = failed
	}
	if err != nil && !pb.IsFenced(err) {
		a.log.Warn("reporting the result", "trial", req.GetTrial(), "state", req.GetState(), "err", err)
	}
}

// ErrRetryable marks a job error that is not the trial's fault (the store
// or the network failed): the trial goes back to the queue instead of failing.
var ErrRetryable = errors.New("retryable")

// maxAttempts bounds how often a trial is requeued after retryable errors.
const maxAttempts = 10

// ringBroken reports whether err came from the all-reduce ring or the
// infrastructure (an unreachable store) rather than the trial itself.
func ringBroken(err error) bool {
	var re *allreduce.RemoteError
	return errors.Is(err, ErrRetryable) || errors.Is(err, trainer.ErrStoreUnreachable) || errors.As(err, &re) || errors.Is(err, allreduce.ErrPeerLost) || errors.Is(err, allreduce.ErrTimeout) ||
		errors.Is(err, allreduce.ErrStaleGeneration) || errors.Is(err, allreduce.ErrWrongRun) || errors.Is(err, allreduce.ErrClosed) ||
		errors.Is(err, allreduce.ErrStepOrder) || errors.Is(err, allreduce.ErrProtocol)
}

// Event is one line of the events log.
type Event struct {
	Event      string `json:"event"` // start or end
	Trainer    string `json:"trainer"`
	Trial      string `json:"trial"`
	Generation uint64 `json:"generation"`
	Rank       int32  `json:"rank"`
	World      int32  `json:"world"`
	UnixNano   int64  `json:"unix_nano"`
	Err        string `json:"err,omitempty"`
	// FencedUnixNano, on the end of a job stopped for lost contact, is when
	// its trainer's fence passed: it did no step and no checkpoint after it.
	FencedUnixNano int64 `json:"fenced_unix_nano,omitempty"`
}

// event writes an Event; a.mu is held.
func (a *Agent) event(kind string, as *pb.Assignment, err error) {
	a.writeEvent(a.newEvent(kind, as, err))
}

func (a *Agent) newEvent(kind string, as *pb.Assignment, err error) Event {
	e := Event{Event: kind, Trainer: a.cfg.ID, Trial: as.GetTrial().GetName(), Generation: as.GetGeneration(),
		Rank: as.GetRank(), World: as.GetWorld(), UnixNano: time.Now().UnixNano()}
	if err != nil {
		e.Err = err.Error()
	}
	return e
}

// writeEvent writes e to Events; a.mu is held.
func (a *Agent) writeEvent(e Event) {
	if a.cfg.Events == nil {
		return
	}
	b, _ := json.Marshal(e)
	_, _ = a.cfg.Events.Write(append(b, '\n'))
}

type reporter struct {
	agent *Agent
	job   *job
	as    *pb.Assignment
}

func (r *reporter) Progress(p *pb.Progress) {
	r.agent.mu.Lock()
	if r.agent.job == r.job {
		r.agent.progress = proto.Clone(p).(*pb.Progress)
	}
	r.agent.mu.Unlock()
}

func (r *reporter) Authorized() error {
	if time.Now().UnixNano() > r.agent.fence.Load() {
		return errLostContact
	}
	return nil
}

func (r *reporter) Checkpoint(ctx context.Context, step int64, metric float64, hasMetric bool) {
	resp, err := r.agent.cfg.Coordinator.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: r.job.key.trial, Generation: r.job.key.generation,
		Step: step, HasMetric: hasMetric, Metric: metric})
	switch {
	case err == nil && resp.GetStop():
		r.agent.log.Info("early stopping", "trial", r.job.key.trial, "step", step)
		r.job.cancel(errors.New("stopped early by the sweep's rule"))
	case pb.IsFenced(err):
		// The trial moved on to another generation or ended. Only this
		// answer stops the job: a lost leader or a timeout does not.
		r.job.cancel(fmt.Errorf("checkpoint report refused: %w", err))
	case err != nil:
		r.agent.log.Warn("reporting a checkpoint", "trial", r.job.key.trial, "step", step, "err", err)
	}
}
