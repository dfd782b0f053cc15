package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/proccluster"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// Goals of the failover benchmark.
const (
	failoverGoalElectDefaultMS = 3000
	failoverGoalElectFastMS    = 1000
	failoverGoalHeartbeatsPerS = 5000
)

// RaftProfile is a coordinator --raft-profile and the timeouts it stands
// for (recorded in the report).
type RaftProfile struct {
	Name                             string
	Heartbeat, Election, LeaderLease time.Duration
}

// FailoverConfig tunes the failover benchmark.
type FailoverConfig struct {
	// Profiles are measured in order, each on a fresh group of 3.
	Profiles []RaftProfile
	// Kills is the number of leader kills per profile (at least 1).
	Kills int
	// Lease is the coordinators' trainer --lease.
	Lease time.Duration
	// Trainers simulated trainers are registered for the heartbeat
	// measurement, which HeartbeatGoroutines concurrent senders run for
	// HeartbeatTime on the "default" profile's group.
	Trainers, HeartbeatGoroutines int
	HeartbeatTime                 time.Duration
	// Blackholes is the number of leader pauses (SIGSTOP) per profile and
	// position in the trainer's list, first and not first, with a trainer
	// agent training (0: DefaultBlackholes; negative: none).
	Blackholes int
}

// FailoverResult is the failover benchmark's report and its summary.
type FailoverResult struct {
	Report Report
	// Summary is a few lines for a person: elect and resume times per
	// profile, heartbeats, goals met.
	Summary string
}

// Failover SIGKILLs the leader of 3 coordinator processes on loopback, again
// and again, and times how long until a new leader answers a consistent read
// and until its scheduler places a trial again, per raft profile; and it
// measures the leader's heartbeat throughput.
func (r *Runner) Failover(ctx context.Context, cfg FailoverConfig) (*FailoverResult, error) {
	if cfg.Kills < 1 {
		return nil, fmt.Errorf("failover: %d kills, want at least 1", cfg.Kills)
	}
	if len(cfg.Profiles) == 0 {
		return nil, errors.New("failover: no raft profiles")
	}
	report := Report{}
	profilesOut := map[string]any{}
	p99 := map[string]float64{}
	worstStopped := map[string]float64{}
	var hb *heartbeatResult
	var summary strings.Builder
	for _, profile := range cfg.Profiles {
		r.logf("bench failover: %s profile (heartbeat %s, election %s, leader lease %s): starting 3 coordinators …\n",
			profile.Name, profile.Heartbeat, profile.Election, profile.LeaderLease)
		res, bh, hbRes, err := r.failoverProfile(ctx, profile.Name, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s profile: %w", profile.Name, err)
		}
		if hbRes != nil {
			hb = hbRes
		}
		var elect, resume []float64
		for _, r := range res {
			elect, resume = append(elect, r.ElectMS), append(resume, r.ResumeMS)
		}
		p99[profile.Name] = percentile(elect, 0.99)
		e, rs := msStats(elect), msStats(resume)
		out := map[string]any{
			"raft": map[string]any{"heartbeat_timeout_ms": profile.Heartbeat.Milliseconds(), "election_timeout_ms": profile.Election.Milliseconds(),
				"leader_lease_timeout_ms": profile.LeaderLease.Milliseconds()},
			"elect_ms": e, "resume_ms": rs, "kills": len(res), "rounds": res,
		}
		fmt.Fprintf(&summary, "failover %-7s %2d kills: elect p50 %6.0f ms  p99 %6.0f ms | resume p50 %6.0f ms  p99 %6.0f ms\n",
			profile.Name, len(res), e["p50"], e["p99"], rs["p50"], rs["p99"])
		if len(bh) > 0 {
			rep, worst := blackholeReport(bh)
			out["blackhole"] = rep
			worstStopped[profile.Name] = worst
			fmt.Fprintf(&summary, "black-holed leader %-7s %2d pauses: training stopped, worst %6.0f ms (first in list: %v; not first: %v)\n",
				profile.Name, len(bh), worst, stoppedList(bh, positionFirst), stoppedList(bh, positionNotFirst))
		}
		profilesOut[profile.Name] = out
	}
	report["profiles"] = profilesOut
	met := map[string]bool{}
	if v, ok := p99["default"]; ok {
		met["elect_p99_default"] = v <= failoverGoalElectDefaultMS
	}
	if v, ok := p99["fast"]; ok {
		met["elect_p99_fast"] = v <= failoverGoalElectFastMS
	}
	for name, worst := range worstStopped {
		if name == "default" {
			met["blackhole_training_stopped_default"] = worst <= blackholeGoalDefaultMS
		} else if lanProfile(name) {
			met["blackhole_training_stopped_lan"] = worst <= blackholeGoalLANMS
		}
	}
	if hb != nil {
		report["heartbeats_per_s"] = round1(hb.perS)
		report["heartbeat_latency_ms"] = map[string]float64{"p50": round3(hb.p50), "p99": round3(hb.p99), "max": round3(hb.max)}
		report["heartbeat_errors"] = hb.errors
		report["heartbeat_goroutines"] = hb.goroutines
		report["heartbeat_seconds"] = hb.seconds
		report["simulated_trainers"] = hb.trainers
		met["heartbeats_per_s"] = hb.perS >= failoverGoalHeartbeatsPerS
		fmt.Fprintf(&summary, "heartbeats: %.0f/s on the leader (%d trainers, %d senders), latency p50 %.2f ms p99 %.2f ms, %d errors\n",
			hb.perS, hb.trainers, hb.goroutines, hb.p50, hb.p99, hb.errors)
	}
	fmt.Fprintf(&summary, "goals met: %v\n", met)
	report["goals"] = map[string]any{"elect_p99_default_ms": failoverGoalElectDefaultMS, "elect_p99_fast_ms": failoverGoalElectFastMS,
		"heartbeats_per_s":                      failoverGoalHeartbeatsPerS,
		"blackhole_training_stopped_default_ms": blackholeGoalDefaultMS, "blackhole_training_stopped_lan_ms": blackholeGoalLANMS}
	report["met"] = met
	report["lease_ms"] = cfg.Lease.Milliseconds()
	report["machine"] = machineInfo()
	report["when"] = time.Now().UTC().Format(time.RFC3339)
	report["loraft"] = r.Version
	report["note"] = "3 coordinator processes on loopback on one machine, sharing its cores with this benchmark; t0 is the leader's SIGKILL. " +
		"elect_ms: t0 until a survivor answers a consistent read (raft barrier on the new leader), polled every 5 ms. " +
		"resume_ms: t0 until a simulated trainer (heartbeat every 50 ms, registered and idle before the kill) is handed the trial of a sweep launched through the survivors right after the kill. " +
		"Clients retry every few ms rather than with the coordinator client's growing backoff, so the times are the group's, not a client's. " +
		"heartbeats_per_s: Heartbeat RPCs answered by the leader, from concurrent senders in this process over a few gRPC connections. " +
		"blackhole: the leader paused with SIGSTOP (a black-holed host: sockets open, no answer) while a real trainer agent (loraft's agent, " +
		"coordinator.Client with default settings, self-fencing at 80% of the lease) runs a trial whose job checks its authorization every 50 ms; " +
		"the leader is first in the trainer's --coordinators list (first) or last (not_first). training_stopped_ms: time in the window after the pause " +
		"with no job running on the trainer (0: it never stopped). The profile named fast is the LAN profile (coordinator.LANConfig)."
	return &FailoverResult{Report: report, Summary: summary.String()}, nil
}

// stoppedList is the rounds' training-stopped ms at one position.
func stoppedList(rounds []blackholeRound, pos string) []float64 {
	var out []float64
	for _, r := range rounds {
		if r.Position == pos {
			out = append(out, math.Round(r.TrainingStoppedMS))
		}
	}
	return out
}

// failoverRound is one leader kill.
type failoverRound struct {
	Killed    string  `json:"killed"`
	NewLeader string  `json:"new_leader"`
	ElectMS   float64 `json:"elect_ms"`
	ResumeMS  float64 `json:"resume_ms"`
}

// healthyTimeout bounds each wait for the whole group to be up and caught up.
const healthyTimeout = 30 * time.Second

// failoverProfile runs cfg.Kills rounds on a fresh 3-coordinator group, then
// on the "default" profile the heartbeat measurement while it is still
// healthy.
func (r *Runner) failoverProfile(ctx context.Context, profile string, cfg FailoverConfig) (rounds []failoverRound, bh []blackholeRound, hb *heartbeatResult, err error) {
	dir, err := os.MkdirTemp("", "loraft-bench-failover-")
	if err != nil {
		return nil, nil, nil, err
	}
	defer os.RemoveAll(dir)
	cl, err := proccluster.Start(proccluster.Config{Bin: r.Bin, Dir: dir, Coordinators: 3, RaftProfile: profile, Lease: cfg.Lease})
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w%s", err, cl.LogTails(20))
		}
		_ = cl.Close()
	}()
	if _, err := waitHealthy(ctx, cl, nil); err != nil {
		return nil, nil, nil, err
	}
	const trainerID = "bench-trainer"
	reg, err := proccluster.PollingClient(cl.APIAddrs())
	if err != nil {
		return nil, nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = reg.RegisterTrainer(rctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: trainerID, Address: "127.0.0.1:1"}})
	cancel()
	reg.Close()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("registering the simulated trainer: %w", err)
	}
	for k := 1; k <= cfg.Kills; k++ {
		round, err := failover(ctx, cl, k, trainerID)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("round %d: %w", k, err)
		}
		r.logf("bench failover: %s round %d/%d: killed leader %s, %s answered a consistent read after %.0f ms, trial placed after %.0f ms\n",
			profile, k, cfg.Kills, round.Killed, round.NewLeader, round.ElectMS, round.ResumeMS)
		rounds = append(rounds, round)
	}
	if n := cfg.Blackholes; n >= 0 {
		if n == 0 {
			n = DefaultBlackholes
		}
		if bh, err = r.blackholes(ctx, cl, profile, n, cfg.Lease); err != nil {
			return nil, nil, nil, err
		}
	}
	if profile == "default" {
		if hb, err = r.benchHeartbeats(ctx, cl, cfg.Trainers, cfg.HeartbeatGoroutines, cfg.HeartbeatTime); err != nil {
			return nil, nil, nil, err
		}
	}
	return rounds, bh, hb, nil
}

// waitHealthy waits up to healthyTimeout for cl.WaitHealthy.
func waitHealthy(ctx context.Context, cl *proccluster.Cluster, cond func(*pb.State) bool) (*proccluster.Coordinator, error) {
	wctx, cancel := context.WithTimeout(ctx, healthyTimeout)
	defer cancel()
	leader, err := cl.WaitHealthy(wctx, cond)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return leader, err
}

func hasSweep(name string) func(*pb.State) bool {
	return func(st *pb.State) bool {
		for _, s := range st.GetSweeps() {
			if s.GetName() == name {
				return true
			}
		}
		return false
	}
}

// failover kills the leader of a healthy group, measures, and brings the
// killed coordinator back.
func failover(ctx context.Context, cl *proccluster.Cluster, k int, trainerID string) (failoverRound, error) {
	var r failoverRound
	leader, err := waitHealthy(ctx, cl, nil)
	if err != nil {
		return r, err
	}
	// The simulated trainer: registered, heartbeating, idle.
	tr, err := startSimTrainer(ctx, cl.APIAddrs(), trainerID)
	if err != nil {
		return r, err
	}
	defer tr.stop()
	select {
	case <-tr.idle:
	case <-time.After(10 * time.Second):
		return r, errors.New("the simulated trainer got no idle heartbeat answer in 10 s")
	case <-ctx.Done():
		return r, ctx.Err()
	}
	trial := fmt.Sprintf("fo-%d-t0", k)
	sweep := &pb.Sweep{Name: fmt.Sprintf("fo-%d", k), DatasetSha256: "bench",
		Trials: []*pb.Trial{{Name: trial, Rank: 8, Alpha: 16}}, TrainersPerTrial: 1}
	placed := tr.watch(trial)

	// Connections to the survivors, opened before the kill.
	survivors := cl.APIAddrs(leader)
	var probes []pb.CoordinatorClient
	for _, addr := range survivors {
		cc, api, err := proccluster.DialAPI(addr)
		if err != nil {
			return r, err
		}
		defer cc.Close()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = api.GetState(wctx, &pb.GetStateRequest{})
		cancel()
		if err != nil {
			return r, fmt.Errorf("coordinator %s: %w", addr, err)
		}
		probes = append(probes, api)
	}
	launcher, err := proccluster.PollingClient(survivors)
	if err != nil {
		return r, err
	}
	defer launcher.Close()

	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := leader.Signal(syscall.SIGKILL); err != nil {
		return r, err
	}
	r.Killed = leader.ID

	type answer struct {
		addr string
		at   time.Time
	}
	elected := make(chan answer, len(probes))
	pctx, stopProbes := context.WithCancel(rctx)
	defer stopProbes()
	for i, api := range probes {
		go func() {
			for pctx.Err() == nil {
				cctx, cancel := context.WithTimeout(pctx, 200*time.Millisecond)
				_, err := api.GetState(cctx, &pb.GetStateRequest{Consistent: true})
				cancel()
				if err == nil {
					elected <- answer{survivors[i], time.Now()}
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	launched := make(chan error, 1)
	go func() {
		for {
			cctx, cancel := context.WithTimeout(rctx, time.Second)
			err := launcher.LaunchSweep(cctx, sweep)
			cancel()
			if err == nil || rctx.Err() != nil {
				launched <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	select {
	case a := <-elected:
		stopProbes()
		r.ElectMS = ms(a.at.Sub(t0))
		r.NewLeader = cl.ByAPI(a.addr).ID
	case <-rctx.Done():
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		return r, fmt.Errorf("no survivor answered a consistent read within a minute of killing leader %s", leader.ID)
	}
	if err := <-launched; err != nil {
		return r, fmt.Errorf("launching sweep %s through the survivors: %w", sweep.Name, err)
	}
	var got placement
	select {
	case got = <-placed:
		r.ResumeMS = ms(got.at.Sub(t0))
	case <-rctx.Done():
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		return r, fmt.Errorf("trial %s was not placed within a minute of killing leader %s", trial, leader.ID)
	}

	// Finish the trial (the trainer is idle again), restart the killed
	// coordinator, and wait until it has caught up.
	rep, err := proccluster.PollingClient(survivors)
	if err != nil {
		return r, err
	}
	defer rep.Close()
	rep.Attempts = 40
	if _, err := rep.ReportResult(rctx, &pb.ReportResultRequest{Trial: trial, Generation: got.a.GetGeneration(),
		State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{}}); err != nil {
		return r, fmt.Errorf("finishing trial %s: %w", trial, err)
	}
	if err := leader.Restart(); err != nil {
		return r, err
	}
	if _, err := waitHealthy(ctx, cl, hasSweep(sweep.Name)); err != nil {
		return r, fmt.Errorf("after restarting %s: %w", leader.ID, err)
	}
	return r, nil
}

type placement struct {
	at time.Time
	a  *pb.Assignment
}

// simTrainer heartbeats every 50 ms as one trainer with no trial, like an
// idle trainer waiting for work.
type simTrainer struct {
	client *coordinator.Client
	cancel context.CancelFunc
	done   chan struct{}
	idle   chan struct{} // closed by the first answer without an assignment

	mu     sync.Mutex // guards want and placed
	want   string
	placed chan placement
}

func startSimTrainer(ctx context.Context, addrs []string, id string) (*simTrainer, error) {
	client, err := proccluster.PollingClient(addrs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	t := &simTrainer{client: client, cancel: cancel, done: make(chan struct{}), idle: make(chan struct{})}
	go t.run(ctx, id)
	return t, nil
}

func (t *simTrainer) run(ctx context.Context, id string) {
	defer close(t.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	idle := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		resp, err := t.client.Heartbeat(cctx, &pb.HeartbeatRequest{TrainerId: id})
		cancel()
		at := time.Now()
		if err == nil {
			a := resp.GetAssignment()
			if a == nil && !idle {
				idle = true
				close(t.idle)
			}
			t.mu.Lock()
			if a != nil && t.want != "" && a.GetTrial().GetName() == t.want {
				t.placed <- placement{at, a}
				t.want = ""
			}
			t.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watch reports when the trainer is first handed trial.
func (t *simTrainer) watch(trial string) <-chan placement {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want, t.placed = trial, make(chan placement, 1)
	return t.placed
}

func (t *simTrainer) stop() {
	t.cancel()
	<-t.done
	t.client.Close()
}

type heartbeatResult struct {
	perS, p50, p99, max float64
	errors              int64
	trainers            int
	goroutines          int
	seconds             float64
}

// benchHeartbeats registers trainers with the leader, then sends it
// Heartbeat RPCs from goroutines senders for d (after a short warm-up).
func (r *Runner) benchHeartbeats(ctx context.Context, cl *proccluster.Cluster, trainers, goroutines int, d time.Duration) (*heartbeatResult, error) {
	if trainers < 1 || goroutines < 1 {
		return nil, errors.New("heartbeats: need at least one trainer and one sender")
	}
	leader, err := waitHealthy(ctx, cl, nil)
	if err != nil {
		return nil, err
	}
	r.logf("bench failover: heartbeats: registering %d trainers with leader %s …\n", trainers, leader.ID)
	reg, err := coordinator.NewClient([]string{leader.APIAddr})
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	ids := make([]string, trainers)
	for i := range ids {
		ids[i] = fmt.Sprintf("hb-%04d", i)
	}
	var regErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := reg.RegisterTrainer(cctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: ids[i], Address: fmt.Sprintf("127.0.0.1:%d", 20000+i)}})
				cancel()
				if err != nil {
					regErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, _ := regErr.Load().(error); e != nil {
		return nil, fmt.Errorf("registering trainers: %w", e)
	}
	if reg.Leader() != leader.APIAddr {
		return nil, fmt.Errorf("trainers registered through %q, not leader %s", reg.Leader(), leader.APIAddr)
	}

	// A few connections, as many trainers would spread over.
	const conns = 4
	var apis []pb.CoordinatorClient
	for range conns {
		cc, api, err := proccluster.DialAPI(leader.APIAddr)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		apis = append(apis, api)
	}
	r.logf("bench failover: heartbeats: %d senders for %s …\n", goroutines, d)
	const warm = 500 * time.Millisecond
	start := time.Now().Add(warm)
	end := start.Add(d)
	lats := make([][]float64, goroutines)
	var errs atomic.Int64
	var firstErr atomic.Value
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := apis[g%conns]
			for i := g; ; i += goroutines {
				t := time.Now()
				if !t.Before(end) || ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := api.Heartbeat(cctx, &pb.HeartbeatRequest{TrainerId: ids[i%len(ids)]})
				cancel()
				if t.Before(start) {
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				lats[g] = append(lats[g], float64(time.Since(t).Nanoseconds())/1e6)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) == 0 {
		e, _ := firstErr.Load().(error)
		return nil, fmt.Errorf("heartbeats: none answered: %v", e)
	}
	if e, _ := firstErr.Load().(error); e != nil {
		r.logf("bench failover: heartbeats: %d failed, the first: %v\n", errs.Load(), e)
	}
	mx := 0.0
	for _, x := range all {
		mx = max(mx, x)
	}
	return &heartbeatResult{perS: float64(len(all)) / d.Seconds(), p50: percentile(all, 0.5), p99: percentile(all, 0.99), max: mx,
		errors: errs.Load(), trainers: trainers, goroutines: goroutines, seconds: d.Seconds()}, nil
}
