package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/loopback"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Goals of the failover benchmark.
const (
	failoverGoalElectDefaultMS = 3000
	failoverGoalElectFastMS    = 1000
	failoverGoalHeartbeatsPerS = 5000
)

func benchFailoverCommand() *cli.Command {
	return &cli.Command{
		Name: "failover",
		Usage: "SIGKILL the leader of 3 coordinator processes on loopback: time until a new leader answers a consistent read " +
			"and until its scheduler places a trial again, per raft profile; and leader heartbeat throughput (JSON)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write the JSON here (default: stdout)"},
			&cli.IntFlag{Name: "kills", Value: 10, Usage: "leader kills per raft profile"},
			&cli.StringFlag{Name: "profiles", Value: "default,fast", Usage: "raft profiles to measure"},
			&cli.DurationFlag{Name: "lease", Value: 2 * time.Second, Usage: "the coordinators' trainer --lease"},
			&cli.IntFlag{Name: "trainers", Value: 200, Usage: "simulated trainers registered for the heartbeat measurement"},
			&cli.IntFlag{Name: "heartbeat-goroutines", Value: 64, Usage: "concurrent heartbeat senders"},
			&cli.DurationFlag{Name: "heartbeat-time", Value: 5 * time.Second, Usage: "how long heartbeats are measured"},
		},
		Action: runBenchFailover,
	}
}

func runBenchFailover(c *cli.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	kills := c.Int("kills")
	if kills < 1 {
		return fmt.Errorf("flag --kills: %d, want at least 1", kills)
	}
	profiles := splitList(c.String("profiles"))
	if len(profiles) == 0 {
		return errors.New("flag --profiles: none")
	}
	ctx := c.Context
	report := map[string]any{}
	profilesOut := map[string]any{}
	p99 := map[string]float64{}
	var hb *heartbeatResult
	for _, profile := range profiles {
		hbT, elT, llT, err := raftProfile(profile)
		if err != nil {
			return err
		}
		def := raft.DefaultConfig()
		hbT, elT, llT = orDefault(hbT, def.HeartbeatTimeout), orDefault(elT, def.ElectionTimeout), orDefault(llT, def.LeaderLeaseTimeout)
		fmt.Fprintf(os.Stderr, "bench failover: %s profile (heartbeat %s, election %s, leader lease %s): starting 3 coordinators …\n", profile, hbT, elT, llT)
		res, hbRes, err := benchFailoverProfile(ctx, self, profile, c.Duration("lease"), kills, func(cl *coordCluster) (*heartbeatResult, error) {
			if profile != "default" {
				return nil, nil
			}
			return benchHeartbeats(ctx, cl, c.Int("trainers"), c.Int("heartbeat-goroutines"), c.Duration("heartbeat-time"))
		})
		if err != nil {
			return fmt.Errorf("%s profile: %w", profile, err)
		}
		if hbRes != nil {
			hb = hbRes
		}
		var elect, resume []float64
		for _, r := range res {
			elect, resume = append(elect, r.ElectMS), append(resume, r.ResumeMS)
		}
		p99[profile] = percentile(elect, 0.99)
		profilesOut[profile] = map[string]any{
			"raft": map[string]any{"heartbeat_timeout_ms": hbT.Milliseconds(), "election_timeout_ms": elT.Milliseconds(),
				"leader_lease_timeout_ms": llT.Milliseconds()},
			"elect_ms": msStats(elect), "resume_ms": msStats(resume), "kills": len(res), "rounds": res,
		}
	}
	report["profiles"] = profilesOut
	met := map[string]bool{}
	if v, ok := p99["default"]; ok {
		met["elect_p99_default"] = v <= failoverGoalElectDefaultMS
	}
	if v, ok := p99["fast"]; ok {
		met["elect_p99_fast"] = v <= failoverGoalElectFastMS
	}
	if hb != nil {
		report["heartbeats_per_s"] = round1(hb.perS)
		report["heartbeat_latency_ms"] = map[string]float64{"p50": round3(hb.p50), "p99": round3(hb.p99), "max": round3(hb.max)}
		report["heartbeat_errors"] = hb.errors
		report["heartbeat_goroutines"] = hb.goroutines
		report["heartbeat_seconds"] = hb.seconds
		report["simulated_trainers"] = hb.trainers
		met["heartbeats_per_s"] = hb.perS >= failoverGoalHeartbeatsPerS
	}
	report["goals"] = map[string]any{"elect_p99_default_ms": failoverGoalElectDefaultMS, "elect_p99_fast_ms": failoverGoalElectFastMS,
		"heartbeats_per_s": failoverGoalHeartbeatsPerS}
	report["met"] = met
	report["lease_ms"] = c.Duration("lease").Milliseconds()
	report["machine"] = machineInfo()
	report["when"] = time.Now().UTC().Format(time.RFC3339)
	report["loraft"] = version
	report["note"] = "3 coordinator processes on loopback on one machine, sharing its cores with this benchmark; t0 is the leader's SIGKILL. " +
		"elect_ms: t0 until a survivor answers a consistent read (raft barrier on the new leader), polled every 5 ms. " +
		"resume_ms: t0 until a simulated trainer (heartbeat every 50 ms, registered and idle before the kill) is handed the trial of a sweep launched through the survivors right after the kill. " +
		"Clients retry every few ms rather than with the coordinator client's growing backoff, so the times are the group's, not a client's. " +
		"heartbeats_per_s: Heartbeat RPCs answered by the leader, from concurrent senders in this process over a few gRPC connections."

	w := io.Writer(os.Stderr)
	if c.String("out") != "" {
		w = c.App.Writer
	}
	for _, profile := range profiles {
		p := profilesOut[profile].(map[string]any)
		e, r := p["elect_ms"].(map[string]float64), p["resume_ms"].(map[string]float64)
		fmt.Fprintf(w, "failover %-7s %2d kills: elect p50 %6.0f ms  p99 %6.0f ms | resume p50 %6.0f ms  p99 %6.0f ms\n",
			profile, p["kills"], e["p50"], e["p99"], r["p50"], r["p99"])
	}
	if hb != nil {
		fmt.Fprintf(w, "heartbeats: %.0f/s on the leader (%d trainers, %d senders), latency p50 %.2f ms p99 %.2f ms, %d errors\n",
			hb.perS, hb.trainers, hb.goroutines, hb.p50, hb.p99, hb.errors)
	}
	fmt.Fprintf(w, "goals met: %v\n", met)
	return writeJSON(c, c.String("out"), report)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// msStats summarizes millisecond samples.
func msStats(v []float64) map[string]float64 {
	if len(v) == 0 {
		return map[string]float64{}
	}
	sum, mx := 0.0, math.Inf(-1)
	for _, x := range v {
		sum += x
		mx = max(mx, x)
	}
	return map[string]float64{"p50": round1(percentile(v, 0.5)), "p99": round1(percentile(v, 0.99)), "max": round1(mx), "mean": round1(sum / float64(len(v)))}
}

func machineInfo() map[string]any {
	m := map[string]any{"cpus": runtime.NumCPU(), "gomaxprocs": runtime.GOMAXPROCS(0), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu_model"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// failoverRound is one leader kill.
type failoverRound struct {
	Killed    string  `json:"killed"`
	NewLeader string  `json:"new_leader"`
	ElectMS   float64 `json:"elect_ms"`
	ResumeMS  float64 `json:"resume_ms"`
}

// benchFailoverProfile runs kills rounds on a fresh 3-coordinator group, then
// after(group) while it is still healthy.
func benchFailoverProfile(ctx context.Context, self, profile string, lease time.Duration, kills int,
	after func(*coordCluster) (*heartbeatResult, error)) (rounds []failoverRound, hb *heartbeatResult, err error) {
	cl, err := startCoordCluster(ctx, self, profile, lease)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w%s", err, cl.logTails())
		}
		cl.Close()
	}()
	if _, err := cl.waitHealthy(ctx, "", 30*time.Second); err != nil {
		return nil, nil, err
	}
	const trainerID = "bench-trainer"
	reg, err := newBenchClient(cl.apiAddrs(nil))
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = reg.RegisterTrainer(rctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: trainerID, Address: "127.0.0.1:1"}})
	cancel()
	reg.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("registering the simulated trainer: %w", err)
	}
	for k := 1; k <= kills; k++ {
		r, err := cl.failoverRound(ctx, k, trainerID)
		if err != nil {
			return nil, nil, fmt.Errorf("round %d: %w", k, err)
		}
		fmt.Fprintf(os.Stderr, "bench failover: %s round %d/%d: killed leader %s, %s answered a consistent read after %.0f ms, trial placed after %.0f ms\n",
			profile, k, kills, r.Killed, r.NewLeader, r.ElectMS, r.ResumeMS)
		rounds = append(rounds, r)
	}
	if after != nil {
		if hb, err = after(cl); err != nil {
			return nil, nil, err
		}
	}
	return rounds, hb, nil
}

// newBenchClient is a coordinator client that retries every few milliseconds
// a few times: the benchmark's loops poll, so the client's growing backoff
// would only blur the measured times.
func newBenchClient(addrs []string) (*coordinator.Client, error) {
	cl, err := coordinator.NewClient(addrs)
	if err != nil {
		return nil, err
	}
	cl.Backoff, cl.Attempts = 5*time.Millisecond, 4
	return cl, nil
}

func dialAPI(addr string) (*grpc.ClientConn, pb.CoordinatorClient, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return cc, pb.NewCoordinatorClient(cc), nil
}

// coordProc is one coordinator child process.
type coordProc struct {
	id, raftAddr, apiAddr, dir, logPath string
	args                                []string

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// coordCluster is a 3-coordinator group of child processes.
type coordCluster struct {
	self  string
	root  string
	procs []*coordProc
}

func startCoordCluster(ctx context.Context, self, profile string, lease time.Duration) (*coordCluster, error) {
	root, err := os.MkdirTemp("", "loraft-bench-failover-")
	if err != nil {
		return nil, err
	}
	cl := &coordCluster{self: self, root: root}
	addrs, err := loopback.Addrs(6)
	if err != nil {
		cl.Close()
		return nil, err
	}
	var peers []string
	for i := range 3 {
		p := &coordProc{id: fmt.Sprintf("n%d", i+1), raftAddr: addrs[2*i], apiAddr: addrs[2*i+1]}
		p.dir, p.logPath = filepath.Join(root, p.id), filepath.Join(root, p.id+".log")
		peers = append(peers, fmt.Sprintf("%s=%s/%s", p.id, p.raftAddr, p.apiAddr))
		cl.procs = append(cl.procs, p)
	}
	for _, p := range cl.procs {
		p.args = []string{"coordinator", "--id", p.id, "--raft-addr", p.raftAddr, "--api-addr", p.apiAddr, "--dir", p.dir,
			"--peers", strings.Join(peers, ","), "--raft-profile", profile, "--lease", lease.String()}
		if err := cl.start(p); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return cl, nil
}

// start runs p (again), its output appended to its log.
func (cl *coordCluster) start(p *coordProc) error {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(cl.self, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	// A coordinator must not outlive the benchmark, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting coordinator %s: %w", p.id, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
	return nil
}

// kill SIGKILLs p and waits for it.
func (p *coordProc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *coordProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Close kills every coordinator and removes their data.
func (cl *coordCluster) Close() {
	for _, p := range cl.procs {
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
		}
	}
	for _, p := range cl.procs {
		p.kill()
	}
	os.RemoveAll(cl.root)
}

// logTails is the end of every coordinator's log, for errors.
func (cl *coordCluster) logTails() string {
	var b strings.Builder
	for _, p := range cl.procs {
		buf, err := os.ReadFile(p.logPath)
		if err != nil {
			continue
		}
		if len(buf) > 1500 {
			buf = buf[len(buf)-1500:]
		}
		fmt.Fprintf(&b, "\n--- coordinator %s (log tail) ---\n%s", p.id, buf)
	}
	return b.String()
}

// apiAddrs lists the API addresses of every coordinator but except.
func (cl *coordCluster) apiAddrs(except *coordProc) []string {
	var out []string
	for _, p := range cl.procs {
		if p != except {
			out = append(out, p.apiAddr)
		}
	}
	return out
}

func (cl *coordCluster) byAPI(addr string) *coordProc {
	for _, p := range cl.procs {
		if p.apiAddr == addr {
			return p
		}
	}
	return nil
}

// waitHealthy waits until the group answers a consistent read through its
// leader and every coordinator answers GetState (having applied sweep, when
// named), and returns the leader.
func (cl *coordCluster) waitHealthy(ctx context.Context, sweep string, timeout time.Duration) (*coordProc, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		leader, err := cl.healthy(ctx, sweep)
		if err == nil {
			return leader, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("coordinators not healthy after %s: %w", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (cl *coordCluster) healthy(ctx context.Context, sweep string) (*coordProc, error) {
	for _, p := range cl.procs {
		if !p.running() {
			return nil, fmt.Errorf("coordinator %s exited", p.id)
		}
	}
	c, err := newBenchClient(cl.apiAddrs(nil))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := c.ConsistentState(cctx); err != nil {
		return nil, fmt.Errorf("consistent read: %w", err)
	}
	leader := cl.byAPI(c.Leader())
	if leader == nil {
		return nil, fmt.Errorf("leader API address %q is none of the coordinators'", c.Leader())
	}
	for _, p := range cl.procs {
		cc, api, err := dialAPI(p.apiAddr)
		if err != nil {
			return nil, err
		}
		st, err := api.GetState(cctx, &pb.GetStateRequest{})
		cc.Close()
		if err != nil {
			return nil, fmt.Errorf("coordinator %s: %w", p.id, err)
		}
		if sweep != "" && !hasSweep(st, sweep) {
			return nil, fmt.Errorf("coordinator %s has not applied sweep %s yet", p.id, sweep)
		}
	}
	return leader, nil
}

func hasSweep(st *pb.State, name string) bool {
	for _, s := range st.GetSweeps() {
		if s.GetName() == name {
			return true
		}
	}
	return false
}

// failoverRound kills the leader of a healthy group, measures, and brings
// the killed coordinator back.
func (cl *coordCluster) failoverRound(ctx context.Context, k int, trainerID string) (failoverRound, error) {
	var r failoverRound
	leader, err := cl.waitHealthy(ctx, "", 30*time.Second)
	if err != nil {
		return r, err
	}
	// The simulated trainer: registered, heartbeating, idle.
	tr, err := startSimTrainer(ctx, cl.apiAddrs(nil), trainerID)
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
	survivors := cl.apiAddrs(leader)
	var probes []pb.CoordinatorClient
	for _, addr := range survivors {
		cc, api, err := dialAPI(addr)
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
	launcher, err := newBenchClient(survivors)
	if err != nil {
		return r, err
	}
	defer launcher.Close()

	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	_ = leader.cmd.Process.Kill()
	r.Killed = leader.id

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
		r.ElectMS = float64(a.at.Sub(t0).Microseconds()) / 1000
		r.NewLeader = cl.byAPI(a.addr).id
	case <-rctx.Done():
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		return r, fmt.Errorf("no survivor answered a consistent read within a minute of killing leader %s", leader.id)
	}
	if err := <-launched; err != nil {
		return r, fmt.Errorf("launching sweep %s through the survivors: %w", sweep.Name, err)
	}
	var got placement
	select {
	case got = <-placed:
		r.ResumeMS = float64(got.at.Sub(t0).Microseconds()) / 1000
	case <-rctx.Done():
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		return r, fmt.Errorf("trial %s was not placed within a minute of killing leader %s", trial, leader.id)
	}

	// Finish the trial (the trainer is idle again), restart the killed
	// coordinator, and wait until it has caught up.
	rep, err := newBenchClient(survivors)
	if err != nil {
		return r, err
	}
	defer rep.Close()
	rep.Attempts = 40
	if _, err := rep.ReportResult(rctx, &pb.ReportResultRequest{Trial: trial, Generation: got.a.GetGeneration(),
		State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{}}); err != nil {
		return r, fmt.Errorf("finishing trial %s: %w", trial, err)
	}
	<-leader.exited
	if err := cl.start(leader); err != nil {
		return r, err
	}
	if _, err := cl.waitHealthy(ctx, sweep.Name, 30*time.Second); err != nil {
		return r, fmt.Errorf("after restarting %s: %w", leader.id, err)
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

	mu     sync.Mutex
	want   string
	placed chan placement
}

func startSimTrainer(ctx context.Context, addrs []string, id string) (*simTrainer, error) {
	client, err := newBenchClient(addrs)
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
func benchHeartbeats(ctx context.Context, cl *coordCluster, trainers, goroutines int, d time.Duration) (*heartbeatResult, error) {
	if trainers < 1 || goroutines < 1 {
		return nil, errors.New("heartbeats: need at least one trainer and one sender")
	}
	leader, err := cl.waitHealthy(ctx, "", 30*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "bench failover: heartbeats: registering %d trainers with leader %s …\n", trainers, leader.id)
	reg, err := coordinator.NewClient([]string{leader.apiAddr})
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
	if reg.Leader() != leader.apiAddr {
		return nil, fmt.Errorf("trainers registered through %q, not leader %s", reg.Leader(), leader.apiAddr)
	}

	// A few connections, as many trainers would spread over.
	const conns = 4
	var apis []pb.CoordinatorClient
	for range conns {
		cc, api, err := dialAPI(leader.apiAddr)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		apis = append(apis, api)
	}
	fmt.Fprintf(os.Stderr, "bench failover: heartbeats: %d senders for %s …\n", goroutines, d)
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
		fmt.Fprintf(os.Stderr, "bench failover: heartbeats: %d failed, the first: %v\n", errs.Load(), e)
	}
	mx := 0.0
	for _, x := range all {
		mx = max(mx, x)
	}
	return &heartbeatResult{perS: float64(len(all)) / d.Seconds(), p50: percentile(all, 0.5), p99: percentile(all, 0.99), max: mx,
		errors: errs.Load(), trainers: trainers, goroutines: goroutines, seconds: d.Seconds()}, nil
}
