package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/syncbuf"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// blockingRunner runs until its context ends and records when.
type blockingRunner struct {
	started chan *pb.Assignment
	stopped chan time.Time
}

func (r *blockingRunner) Run(ctx context.Context, a *pb.Assignment, rep Reporter) (*pb.TrialResult, error) {
	r.started <- a
	rep.Progress(&pb.Progress{Step: 1, Steps: 10})
	<-ctx.Done()
	r.stopped <- time.Now()
	return nil, ctx.Err()
}

// TestAgentFencesItselfWhenCoordinatorsVanish: a trainer that can no longer
// reach any coordinator stops its job before the leader could give the
// trial to another trainer: within the lease counted from the last
// heartbeat the leader received (it aims at 80% of it).
func TestAgentFencesItselfWhenCoordinatorsVanish(t *testing.T) {
	lease := 2 * time.Second
	var mu sync.Mutex
	var lastBeat time.Time // when the leader last received a heartbeat
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.Scheduler = coordinator.SchedulerConfig{Lease: lease, Tick: 10 * time.Millisecond}
		cfg.UnaryInterceptors = []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if _, ok := req.(*pb.HeartbeatRequest); ok {
				mu.Lock()
				lastBeat = time.Now()
				mu.Unlock()
			}
			return h(ctx, req)
		}}
	}})
	c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := c.Client()
	run := &blockingRunner{started: make(chan *pb.Assignment, 1), stopped: make(chan time.Time, 1)}
	a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: cl, Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() { stopAgent(); <-agentDone }()

	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "f", DatasetSha256: "x", Trials: []*pb.Trial{{Name: "f-t000", Rank: 8, Alpha: 16}}}); err != nil {
		t.Fatal(err)
	}
	var as *pb.Assignment
	select {
	case as = <-run.started:
	case <-ctx.Done():
		t.Fatal("the trainer never got the trial")
	}
	if as.GetTrial().GetName() != "f-t000" || as.GetGeneration() != 1 {
		t.Fatalf("assignment: %v", as)
	}
	// Every coordinator vanishes at once.
	c.Stop(0)
	select {
	case stopped := <-run.stopped:
		mu.Lock()
		requeueAt := lastBeat.Add(lease)
		mu.Unlock()
		if !stopped.Before(requeueAt) {
			t.Fatalf("the job ran until %s after the last heartbeat the leader saw, past its %s lease", stopped.Sub(requeueAt.Add(-lease)), lease)
		}
	case <-time.After(10 * lease):
		t.Fatal("the job never stopped after the coordinators vanished")
	}
}

func TestNewRequiresConfig(t *testing.T) {
	if _, err := New(Config{ID: "x"}); err == nil {
		t.Fatal("an agent without a coordinator or runner was accepted")
	}
}

// stubCoordinator answers every checkpoint report with err.
type stubCoordinator struct {
	Coordinator
	err error
}

func (s stubCoordinator) ReportCheckpoint(context.Context, *pb.ReportCheckpointRequest) (*pb.ReportCheckpointResponse, error) {
	return nil, s.err
}

// TestOnlyFencingStopsTheJob: a checkpoint report refused with the fencing
// code stops the job; a follower's redirect, a client that found no
// leader, a timeout or another refusal do not.
func TestOnlyFencingStopsTheJob(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		stops bool
	}{
		{"fenced", status.Error(pb.FencedCode, "trial t: stale generation 1 (current 2)"), true},
		{"no leader", fmt.Errorf("coordinator call: %w after 40 attempts (last error: %v)", coordinator.ErrNoLeader,
			status.Error(codes.Unavailable, "not the leader (no leader elected yet)")), false},
		{"follower", status.Error(codes.Unavailable, "not the leader"), false},
		{"timeout", context.DeadlineExceeded, false},
		{"refused", status.Error(codes.FailedPrecondition, "nothing to resume"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: stubCoordinator{err: tc.err}, Runner: &blockingRunner{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			r := &reporter{agent: a, job: &job{key: jobKey{trial: "t", generation: 1}, cancel: cancel}}
			r.Checkpoint(context.Background(), 10, 0.5, true)
			if stopped := ctx.Err() != nil; stopped != tc.stops {
				t.Fatalf("report answered %v: job stopped %v, want %v", tc.err, stopped, tc.stops)
			}
		})
	}
}

// recordingRunner reports each assignment it starts and blocks until stopped.
type recordingRunner struct{ started chan jobKey }

func (r *recordingRunner) Run(ctx context.Context, a *pb.Assignment, _ Reporter) (*pb.TrialResult, error) {
	r.started <- jobKey{a.GetTrial().GetName(), a.GetGeneration()}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestIgnoresOlderAssignments: once a trainer has seen generation 3 of a
// trial, an answer assigning generation 2 (from a leader the group has
// moved past) neither stops the running job nor starts the old one, even
// after the job was stopped for lost contact.
func TestIgnoresOlderAssignments(t *testing.T) {
	run := &recordingRunner{started: make(chan jobKey, 4)}
	a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: stubCoordinator{}, Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer a.stopJob(errors.New("test over"))
	as := func(gen uint64) *pb.Assignment { return &pb.Assignment{Trial: &pb.Trial{Name: "t"}, Generation: gen} }
	a.follow(ctx, as(3))
	if got := <-run.started; got.generation != 3 {
		t.Fatalf("started %v, want generation 3", got)
	}
	a.follow(ctx, as(2))
	a.stopJob(errLostContact)
	a.follow(ctx, as(2))
	a.mu.Lock()
	running := a.job != nil
	a.mu.Unlock()
	select {
	case got := <-run.started:
		t.Fatalf("an older assignment started %v", got)
	default:
	}
	if running {
		t.Fatal("a job runs after an older assignment")
	}
	a.follow(ctx, as(4))
	if got := <-run.started; got.generation != 4 {
		t.Fatalf("started %v, want generation 4", got)
	}
}

// resultCoordinator refuses SUCCEEDED results with InvalidArgument and
// records what it was sent.
type resultCoordinator struct {
	Coordinator
	mu   sync.Mutex
	sent []*pb.ReportResultRequest
}

func (c *resultCoordinator) ReportResult(_ context.Context, req *pb.ReportResultRequest) (*pb.ReportResultResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, req)
	if req.GetState() == pb.TrialState_TRIAL_STATE_SUCCEEDED {
		return nil, status.Error(codes.InvalidArgument, "result.val_macro_f1: NaN, want a finite number")
	}
	return &pb.ReportResultResponse{}, nil
}

// TestRefusedResultFailsTheTrial: a result the coordinators refuse as
// invalid is reported as a failure with their reason, and that failure is
// what is re-sent from then on, so the trial does not stay RUNNING.
func TestRefusedResultFailsTheTrial(t *testing.T) {
	co := &resultCoordinator{}
	a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: co, Runner: &blockingRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	key := jobKey{"t", 3}
	req := &pb.ReportResultRequest{Trial: "t", Generation: 3, State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{ValMacroF1: math.NaN()}}
	a.finished[key] = &finishedJob{report: req}
	a.report(context.Background(), req)
	co.mu.Lock()
	defer co.mu.Unlock()
	if len(co.sent) != 2 || co.sent[1].GetState() != pb.TrialState_TRIAL_STATE_FAILED || !strings.Contains(co.sent[1].GetReason(), "NaN") {
		t.Fatalf("reports sent: %v, want the refused success then a failure naming the reason", co.sent)
	}
	if got := a.finished[key].report; got.GetState() != pb.TrialState_TRIAL_STATE_FAILED {
		t.Fatalf("the report kept for re-sending is %v, want the failure", got)
	}
}

func TestStoreWarning(t *testing.T) {
	w := storeWarning(45*time.Second+300*time.Millisecond, 14, errors.New("put runs/x/ckpt/14/MANIFEST.json: "+strings.Repeat("é", 400)))
	if !strings.HasPrefix(w, "checkpoint saves failing for 45s (step 14 waits): put runs/x") || len(w) > 512 || !utf8.ValidString(w) {
		t.Fatalf("warning %q (%d bytes)", w, len(w))
	}
}

// fencedRunner works until Authorized refuses, as a trainer's job does.
type fencedRunner struct{ done chan error }

func (r *fencedRunner) Run(ctx context.Context, _ *pb.Assignment, rep Reporter) (*pb.TrialResult, error) {
	for ctx.Err() == nil {
		if err := rep.Authorized(); err != nil {
			r.done <- err
			return nil, err
		}
		runtime.Gosched()
	}
	return nil, ctx.Err()
}

// TestJobStopsAtItsFence: once the trainer's fence has passed (a pause, or
// no acknowledged heartbeat for most of the lease), the job is refused its
// next step, nothing is reported as the trial's failure, and its end event
// records the fence.
func TestJobStopsAtItsFence(t *testing.T) {
	var events syncbuf.Buffer
	co := &resultCoordinator{}
	run := &fencedRunner{done: make(chan error, 1)}
	a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: co, Runner: run, Events: &events})
	if err != nil {
		t.Fatal(err)
	}
	fence := time.Now().Add(-time.Second)
	a.fence.Store(fence.UnixNano())
	a.follow(context.Background(), &pb.Assignment{Trial: &pb.Trial{Name: "t"}, Generation: 1})
	if err := <-run.done; !errors.Is(err, errLostContact) {
		t.Fatalf("the job was told %v, want errLostContact", err)
	}
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(events.String(), `"event":"end"`) {
			return errors.New("no end event yet")
		}
		return nil
	})
	var end Event
	lines := strings.Split(strings.TrimSpace(events.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &end); err != nil {
		t.Fatal(err)
	}
	if end.FencedUnixNano != fence.UnixNano() {
		t.Fatalf("end event %+v, want fenced at %d", end, fence.UnixNano())
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if len(co.sent) != 0 {
		t.Fatalf("reported %v for a job stopped at its fence, want nothing", co.sent)
	}
}
