package bench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/proccluster"
	"github.com/loraft/loraft/internal/syncbuf"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer/agent"
)

// Goals of the black-holed leader measurement: training stopped at most
// lease + election time.
const (
	blackholeGoalDefaultMS = 5000
	blackholeGoalLANMS     = 1500
)

// DefaultBlackholes is FailoverConfig.Blackholes when zero.
const DefaultBlackholes = 5

// Positions of the paused leader in the trainer's --coordinators list.
const (
	positionFirst    = "first"
	positionNotFirst = "not_first"
)

// blackholeRound is one leader paused with SIGSTOP (a black-holed host: its
// sockets stay open and nothing answers) while a trainer agent trains.
type blackholeRound struct {
	Position string `json:"position"`
	Paused   string `json:"paused"`
	// TrainingStoppedMS is how long, of the observed window after the pause,
	// no job of the trial ran on the trainer.
	TrainingStoppedMS float64 `json:"training_stopped_ms"`
	// StoppedAtMS and ResumedAtMS are when after the pause the job stopped
	// and when it ran again (-1: it never stopped, or never ran again).
	StoppedAtMS float64 `json:"stopped_at_ms"`
	ResumedAtMS float64 `json:"resumed_at_ms"`
	WindowMS    float64 `json:"window_ms"`
	// agentLog is the trainer agent's log (debug level) from the pause on.
	agentLog string
}

// blackholes pauses the leader n times with it first in the trainer's
// list, and n times with it last.
func (r *Runner) blackholes(ctx context.Context, cl *proccluster.Cluster, profile string, n int, lease time.Duration) ([]blackholeRound, error) {
	var out []blackholeRound
	for _, pos := range []string{positionFirst, positionNotFirst} {
		for k := 1; k <= n; k++ {
			round, err := blackhole(ctx, cl, fmt.Sprintf("bh-%s-%s-%d", profile, pos, k), pos, lease)
			if err != nil {
				return nil, fmt.Errorf("black-holed leader %s, round %d: %w", pos, k, err)
			}
			r.logf("bench failover: %s black-holed leader %s (%s in the list): training stopped %.0f ms (stopped at %.0f, ran again at %.0f)\n",
				profile, round.Paused, pos, round.TrainingStoppedMS, round.StoppedAtMS, round.ResumedAtMS)
			if round.TrainingStoppedMS > 0 {
				// Why it stopped is in the agent's log.
				r.logf("%s", lastLines(round.agentLog, 40))
			}
			out = append(out, round)
		}
	}
	return out, nil
}

// blackhole runs a real trainer agent (coordinator.Client with its default
// settings, as `loraft trainer` dials, and the agent's own self-fencing)
// whose job only checks its authorization every 50 ms, as a training step
// would. Once the job runs, the leader is paused for the window; the time
// without a running job in it is the cost. Then the leader is resumed, the
// trial finished and the group let heal.
func blackhole(ctx context.Context, cl *proccluster.Cluster, name, pos string, lease time.Duration) (blackholeRound, error) {
	round := blackholeRound{Position: pos, StoppedAtMS: -1, ResumedAtMS: -1}
	leader, err := waitHealthy(ctx, cl, nil)
	if err != nil {
		return round, err
	}
	round.Paused = leader.ID
	addrs := cl.APIAddrs(leader)
	if pos == positionFirst {
		addrs = append([]string{leader.APIAddr}, addrs...)
	} else {
		addrs = append(addrs, leader.APIAddr)
	}
	client, err := coordinator.NewClient(addrs)
	if err != nil {
		return round, err
	}
	defer client.Close()
	run := &spanRunner{started: make(chan struct{}, 16), finish: make(chan struct{})}
	var logBuf syncbuf.Buffer
	a, err := agent.New(agent.Config{ID: name, Address: "127.0.0.1:1", Coordinator: client, Runner: run,
		Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		return round, err
	}
	actx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() {
		stopAgent()
		<-agentDone
	}()

	launcher, err := proccluster.PollingClient(cl.APIAddrs())
	if err != nil {
		return round, err
	}
	defer launcher.Close()
	launcher.Attempts = 40
	trial := name + "-t0"
	lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = launcher.LaunchSweep(lctx, &pb.Sweep{Name: name, DatasetSha256: "bench", Trials: []*pb.Trial{{Name: trial, Rank: 8, Alpha: 16}}, TrainersPerTrial: 1})
	cancel()
	if err != nil {
		return round, fmt.Errorf("launching sweep %s: %w", name, err)
	}
	select {
	case <-run.started:
	case <-time.After(30 * time.Second):
		return round, fmt.Errorf("trial %s did not start on trainer %s within 30 s", trial, name)
	case <-ctx.Done():
		return round, ctx.Err()
	}
	// A few heartbeats in: the trainer knows the leader.
	time.Sleep(lease / 2)

	// Long enough for the default profile's election, a lapsed lease and a
	// new assignment, several times over.
	window := max(5*lease, 10*time.Second)
	logFrom := len(logBuf.String())
	t0 := time.Now()
	if err := leader.Pause(); err != nil {
		return round, err
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		_ = leader.Resume()
		return round, ctx.Err()
	}
	end := time.Now()
	if err := leader.Resume(); err != nil {
		return round, fmt.Errorf("resuming %s: %w", leader.ID, err)
	}
	round.WindowMS = ms(end.Sub(t0))
	round.agentLog = logBuf.String()[logFrom:]
	spans := run.spansUntil(end)
	idle, stopped, resumed := idleIn(spans, t0, end)
	round.TrainingStoppedMS = ms(idle)
	if !stopped.IsZero() {
		round.StoppedAtMS = ms(stopped.Sub(t0))
	}
	if !resumed.IsZero() {
		round.ResumedAtMS = ms(resumed.Sub(t0))
	}

	// Finish the trial and let the group heal before the next round.
	close(run.finish)
	if _, err := waitHealthy(ctx, cl, trialDone(name)); err != nil {
		return round, fmt.Errorf("finishing sweep %s after resuming %s: %w", name, leader.ID, err)
	}
	return round, nil
}

// lastLines is s's last n lines, indented.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ") + "\n"
}

// trialDone holds once every trial of sweep name has ended.
func trialDone(name string) func(*pb.State) bool {
	return func(st *pb.State) bool {
		for _, s := range st.GetSweeps() {
			if s.GetName() != name {
				continue
			}
			for _, t := range s.GetTrials() {
				if t.GetState() == pb.TrialState_TRIAL_STATE_PENDING || t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
					return false
				}
			}
			return true
		}
		return false
	}
}

// span is one job's run on the trainer; end is zero while it runs.
type span struct{ start, end time.Time }

// spanRunner is an agent.Runner whose job trains nothing: it checks its
// authorization every 50 ms, as a real job does before every step, and
// ends when cancelled, unauthorized, or told to finish.
type spanRunner struct {
	started chan struct{}
	finish  chan struct{}

	mu    sync.Mutex
	spans []span
}

// Run implements agent.Runner.
func (s *spanRunner) Run(ctx context.Context, _ *pb.Assignment, rep agent.Reporter) (*pb.TrialResult, error) {
	s.mu.Lock()
	i := len(s.spans)
	s.spans = append(s.spans, span{start: time.Now()})
	s.mu.Unlock()
	select {
	case s.started <- struct{}{}:
	default:
	}
	defer func() {
		s.mu.Lock()
		s.spans[i].end = time.Now()
		s.mu.Unlock()
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-s.finish:
			return &pb.TrialResult{Steps: 1}, nil
		case <-tick.C:
			if err := rep.Authorized(); err != nil {
				return nil, err
			}
		}
	}
}

// spansUntil are the spans so far, running ones ending at end.
func (s *spanRunner) spansUntil(end time.Time) []span {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.spans)
	for i := range out {
		if out[i].end.IsZero() || out[i].end.After(end) {
			out[i].end = end
		}
	}
	return out
}

// idleIn is the time in [from, to] that no span covers, when the first
// span running at from stopped (zero: none stopped), and when a job first
// ran again after that (zero: none did).
func idleIn(spans []span, from, to time.Time) (idle time.Duration, stopped, resumed time.Time) {
	slices.SortFunc(spans, func(a, b span) int { return a.start.Compare(b.start) })
	covered := from
	for _, sp := range spans {
		if !sp.end.After(covered) {
			continue
		}
		if sp.start.After(covered) {
			if stopped.IsZero() {
				stopped = covered
			}
			if resumed.IsZero() && sp.start.Before(to) {
				resumed = sp.start
			}
			until := sp.start
			if until.After(to) {
				until = to
			}
			idle += until.Sub(covered)
		}
		if sp.end.After(covered) {
			covered = sp.end
		}
		if !covered.Before(to) {
			break
		}
	}
	if covered.Before(to) {
		if stopped.IsZero() {
			stopped = covered
		}
		idle += to.Sub(covered)
	}
	return idle, stopped, resumed
}

// blackholeReport summarises a profile's rounds: training stopped per
// position (ms stats) and the worst round.
func blackholeReport(rounds []blackholeRound) (map[string]any, float64) {
	byPos := map[string][]float64{}
	worst := 0.0
	for _, r := range rounds {
		byPos[r.Position] = append(byPos[r.Position], r.TrainingStoppedMS)
		worst = max(worst, r.TrainingStoppedMS)
	}
	stopped := map[string]any{}
	for pos, v := range byPos {
		stopped[pos] = msStats(v)
	}
	return map[string]any{"training_stopped_ms": stopped, "worst_ms": worst, "rounds": rounds}, worst
}

// lanProfile reports whether a --raft-profile name is the LAN profile.
func lanProfile(name string) bool { return name == "lan" || name == "fast" }
