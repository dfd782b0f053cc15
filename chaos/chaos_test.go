//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/internal/faultproxy"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/internal/proccluster"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
)

var (
	runs     = flag.Int("runs", 1, "how many times each scenario runs")
	only     = flag.String("scenario", "", "run only the scenarios whose name matches this regexp")
	outFile  = flag.String("out", "", "write the results (JSON) here")
	dataFile = flag.String("data", "../experiments/data/demo.csv", "dataset the sweep trains on")
)

// spec is the sweep every run trains: four tiny trials on two trainers,
// long enough (a minute or so) for a fault to land mid-training.
const spec = `name: chaos
search: grid
trainers_per_trial: 1
metric: macro_f1
space:
  rank: [4, 8]
  alpha: [16, 32]
  learning_rate: [3.0e-3]
  lora_dropout: [0.0]
  seed: [7]
train:
  config: tiny
  epochs: 10
  batch_size: 16
  max_len: 48
  checkpoint_every: 7
`

// ringSpec is the sweep of the ring scenarios: two trials, each trained by
// both trainers at once (a data-parallel ring of two), so one trial runs at
// a time. Its undisturbed run is the baseline-ring entry.
const ringSpec = `name: chaos
search: grid
trainers_per_trial: 2
metric: macro_f1
space:
  rank: [4, 8]
  alpha: [16]
  learning_rate: [3.0e-3]
  lora_dropout: [0.0]
  seed: [7]
train:
  config: tiny
  epochs: 10
  batch_size: 16
  max_len: 48
  checkpoint_every: 7
`

// ringStepTimeout is the trainers' --step-timeout in the ring scenarios:
// well inside their 20 s cut, so the all-reduce gives up during it.
const ringStepTimeout = "8s"

// lease is the trainers' lease: the coordinators' default.
const lease = 3 * time.Second

// scenario is one fault. inject starts it once the sweep trains, and returns
// when the fault is over (the process resumed, the store back).
type scenario struct {
	name   string
	inject func(ctx context.Context, r *runCtx) error
	// proxied puts a fault proxy (r.proxies) between the trainers and each
	// coordinator and the store.
	proxied bool
	// prepare, when set, runs on the run's directory before the cluster starts.
	prepare func(t *testing.T, dir string)
	// netns runs each coordinator in a network namespace of its own (r.net).
	netns bool
	// ring trains ringSpec, with each trainer's all-reduce reached through
	// a fault proxy of its own (r.ringProxies; proxied must be set too).
	ring bool
	// check, when set, looks at the finished sweep for the fault's expected
	// effect (a scenario whose fault did nothing proves nothing).
	check func(st *pb.State) error
}

// Result is one scenario run, as written to chaos.json.
type Result struct {
	Scenario string `json:"scenario"`
	Run      int    `json:"run"`
	Passed   bool   `json:"passed"`
	// NoTrainingMs is the longest time after the fault began during which no
	// trainer ran a job (the undisturbed run's own longest gap is in the
	// baseline entry).
	NoTrainingMs int64 `json:"no_training_ms"`
	// CLIAnswerMs is the longest a fresh client's sweep read took while the
	// fault lasted (the CLI's `sweep status`).
	CLIAnswerMs int64 `json:"cli_answer_ms"`
	// CLIStaleReads counts the reads labelled stale.
	CLIStaleReads int `json:"cli_stale_reads"`
	// CLIWarnings counts the reads that showed a trainer's warning (failing
	// checkpoint saves).
	CLIWarnings int `json:"cli_warnings"`
	// TrialsLost counts trials that did not succeed with the undisturbed
	// run's adapter and metrics.
	TrialsLost          int      `json:"trials_lost"`
	DuplicateExecutions int      `json:"duplicate_executions"`
	AdapterBytesEqual   bool     `json:"adapter_bytes_equal"`
	BestTrialEqual      bool     `json:"best_trial_equal"`
	Linearizable        bool     `json:"linearizable"`
	ProcessesLeft       int      `json:"processes_left"`
	WallS               float64  `json:"wall_s"`
	Failures            []string `json:"failures,omitempty"`
}

// outcome is what a finished sweep left: each trial's state, result and
// final adapter, and the best trial.
type outcome struct {
	trials map[string]trialOutcome
	best   string
}

type trialOutcome struct {
	state   pb.TrialState
	reason  string // why it ended so (the trial's reason)
	result  string // the metrics of the result, formatted
	step    int
	adapter string // the final checkpoint's parameters, bit-exact
}

func TestChaos(t *testing.T) {
	bin := os.Getenv("LORAFT_BIN")
	if bin == "" {
		t.Fatal("LORAFT_BIN is not set: run the suite with `make chaos`, which builds bin/loraft and passes it")
	}
	if _, err := proc.MinIOBinary(); err != nil {
		t.Fatalf("%v (run the suite with `make chaos`, which builds MinIO once)", err)
	}
	var pick *regexp.Regexp
	if *only != "" {
		pick = regexp.MustCompile(*only)
	}
	binary := proc.Binary{Path: bin, Env: []string{"OMP_NUM_THREADS=1"}}
	var picked []scenario
	needRing, needPlain := false, false
	for _, s := range scenarios() {
		if pick == nil || pick.MatchString(s.name) {
			picked = append(picked, s)
			needRing, needPlain = needRing || s.ring, needPlain || !s.ring
		}
	}
	// The undisturbed runs the picked scenarios compare with (the plain one
	// always, as the suite's reference), keyed by ring.
	wants := map[bool]*outcome{}
	var results []Result
	for _, b := range []scenario{{name: "baseline"}, {name: "baseline-ring", ring: true, proxied: true}} {
		if b.ring && !needRing || !b.ring && !needPlain && needRing {
			continue
		}
		base := &runCtx{t: t, bin: binary}
		want, baseRes := base.sweep(t, &b)
		baseRes.Passed, baseRes.AdapterBytesEqual, baseRes.BestTrialEqual = !t.Failed(), true, true
		results = append(results, baseRes)
		wants[b.ring] = want
		t.Logf("%s: %d trials, best %s, longest gap without training %d ms", b.name, len(want.trials), want.best, baseRes.NoTrainingMs)
	}
	for _, s := range picked {
		want := wants[s.ring]
		for i := range *runs {
			t.Run(fmt.Sprintf("%s/%d", s.name, i+1), func(t *testing.T) {
				r := &runCtx{t: t, bin: binary}
				got, res := r.sweep(t, &s)
				res.Run = i + 1
				compare(t, want, got, &res)
				res.Passed = !t.Failed()
				results = append(results, res)
				t.Logf("%s: passed %v, no training %d ms, CLI answered within %d ms (%d stale), lost %d, duplicates %d",
					s.name, res.Passed, res.NoTrainingMs, res.CLIAnswerMs, res.CLIStaleReads, res.TrialsLost, res.DuplicateExecutions)
			})
		}
	}
	if *outFile != "" {
		b, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "runs_per_scenario": *runs,
			"lease_ms": lease.Milliseconds(), "raft_profile": "default", "results": results}, "", "  ")
		if err := atomicfile.WriteFile(*outFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// compare checks a disturbed run's outcome against the undisturbed one.
func compare(t *testing.T, want, got *outcome, res *Result) {
	res.AdapterBytesEqual, res.BestTrialEqual = true, got.best == want.best
	for name, w := range want.trials {
		g, ok := got.trials[name]
		switch {
		case !ok || g.state != pb.TrialState_TRIAL_STATE_SUCCEEDED:
			res.TrialsLost++
			fail(t, res, "trial %s ended %v (%q), want SUCCEEDED", name, g.state, g.reason)
		case g.adapter != w.adapter || g.step != w.step:
			res.TrialsLost++
			res.AdapterBytesEqual = false
			fail(t, res, "trial %s: final adapter at step %d differs from the undisturbed run's (step %d)", name, g.step, w.step)
		case g.result != w.result:
			res.TrialsLost++
			fail(t, res, "trial %s: result %s, want %s", name, g.result, w.result)
		}
	}
	if !res.BestTrialEqual {
		fail(t, res, "best trial %s, want %s", got.best, want.best)
	}
}

func fail(t *testing.T, res *Result, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	res.Failures = append(res.Failures, msg)
	t.Error(msg)
}

// runCtx is one sweep on a fresh cluster.
type runCtx struct {
	t       *testing.T
	bin     proc.Binary
	c       *proccluster.Cluster
	dir     string
	proxies []*faultproxy.Proxy
	// coordProxies are trainer ID → its proxies to the coordinators.
	coordProxies map[string][]*faultproxy.Proxy
	// ringProxies stand in front of each trainer's all-reduce listener
	// (ring scenarios only; not among proxies).
	ringProxies []*faultproxy.Proxy
	ring        bool
	net         *network
}

// route starts a fault proxy in front of target for one trainer.
func (r *runCtx) route(trainer, kind, target string) (string, error) {
	if kind == "ring" && !r.ring {
		return target, nil
	}
	p, err := faultproxy.Start("127.0.0.1:0", target)
	if err != nil {
		return "", err
	}
	if kind == "ring" {
		r.ringProxies = append(r.ringProxies, p)
		return p.Addr(), nil
	}
	r.proxies = append(r.proxies, p)
	if kind == "coordinator" {
		if r.coordProxies == nil {
			r.coordProxies = map[string][]*faultproxy.Proxy{}
		}
		r.coordProxies[trainer] = append(r.coordProxies[trainer], p)
	}
	return p.Addr(), nil
}

// setFaults sets the faults of every proxy.
func (r *runCtx) setFaults(f faultproxy.Faults) {
	for _, p := range r.proxies {
		p.Set(f)
	}
}

// sweep starts a cluster, launches the sweep, injects s's fault (none for
// a baseline, whose inject is nil) once the first trial has made progress,
// waits for the end and collects what it left.
func (r *runCtx) sweep(t *testing.T, s *scenario) (*outcome, Result) {
	t.Helper()
	name := s.name
	res := Result{Scenario: name, Linearizable: true}
	start := time.Now()
	r.dir = t.TempDir()
	cfg := proccluster.Config{Bin: r.bin, Dir: r.dir, Trainers: 2, Lease: lease, MinIO: true}
	r.ring = s.ring
	if s.ring {
		cfg.TrainerArgs = append(cfg.TrainerArgs, "--step-timeout", ringStepTimeout)
	}
	if s.prepare != nil {
		s.prepare(t, r.dir)
	}
	if s.netns {
		r.net = newNetwork(t, 3)
		cfg.CoordinatorNetns, cfg.CoordinatorHosts = r.net.netns, r.net.hosts
		cfg.CoordinatorArgs = insecureFlag(r.bin)
	}
	if s.proxied {
		cfg.TrainerRoute = r.route
		defer func() {
			for _, p := range append(r.proxies, r.ringProxies...) {
				p.Close()
			}
		}()
	}
	c, err := proccluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	closed := false
	closeCluster := func() {
		if closed {
			return
		}
		closed = true
		if err := c.Close(); err != nil {
			t.Logf("closing the cluster: %v", err)
		}
	}
	defer closeCluster()
	defer func() {
		if t.Failed() {
			t.Log(c.LogTails(30))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if _, err := c.WaitHealthy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	r.launch(t)

	linCtx, stopLin := context.WithCancel(ctx)
	h := coordinatortest.StartClients(t, linCtx, c.APIAddrs(), 3, "lin")
	defer func() { stopLin(); h.Wait() }()

	waitProgress(t, ctx, c)
	faultStart := time.Now()
	if s.inject != nil {
		probe := startProbe(ctx, c.APIAddrs())
		if err := s.inject(ctx, r); err != nil {
			t.Fatalf("injecting %s: %v", s.name, err)
		}
		res.CLIAnswerMs, res.CLIStaleReads, res.CLIWarnings = probe.stop()
		t.Logf("%s: fault over after %v", s.name, time.Since(faultStart).Round(time.Millisecond))
	}
	st, err := c.WaitState(ctx, func(st *pb.State) bool { sw := sweepOf(st, "chaos"); return sw != nil && done(sw) })
	if err != nil {
		t.Fatalf("the sweep did not finish: %v\n%s", err, describe(st))
	}
	stopLin()
	ops := h.Wait()
	coordinatortest.CheckLinearizable(t, ops, name)
	res.Linearizable = !t.Failed()

	if s.check != nil {
		if err := s.check(st); err != nil {
			fail(t, &res, "%s: %v", s.name, err)
		}
	}
	out := r.collect(t, ctx, st)
	jobs, err := c.Jobs(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range duplicates(jobs, s.ring) {
		res.DuplicateExecutions++
		fail(t, &res, "trial %s ran twice at once: on %s (generation %d) and %s (generation %d)", o[0].Trial, o[0].Trainer, o[0].Generation, o[1].Trainer, o[1].Generation)
	}
	res.NoTrainingMs = proccluster.LongestIdle(jobs, faultStart, time.Now()).Milliseconds()
	closeCluster()
	if left := leftBehind(r.dir); len(left) > 0 {
		res.ProcessesLeft = len(left)
		fail(t, &res, "processes left behind: %v", left)
	}
	res.WallS = math.Round(time.Since(start).Seconds()*10) / 10
	return out, res
}

// duplicates are the pairs of jobs that ran one trial twice at once. In a
// ring every rank runs the trial under the same generation at the same
// time, so there only jobs of different generations count.
func duplicates(jobs []proccluster.Job, ring bool) [][2]proccluster.Job {
	if !ring {
		return proccluster.Overlaps(jobs)
	}
	var out [][2]proccluster.Job
	for i, a := range jobs {
		for _, b := range jobs[i+1:] {
			if a.Trial == b.Trial && a.Generation != b.Generation && a.From < b.To && b.From < a.To {
				out = append(out, [2]proccluster.Job{a, b})
			}
		}
	}
	return out
}

// insecureFlag is --insecure when the binary has it: coordinators on
// addresses other than loopback refuse to run without TLS unless told.
func insecureFlag(bin proc.Binary) []string {
	out, _ := bin.Command(context.Background(), "coordinator", "--help").CombinedOutput()
	if strings.Contains(string(out), "--insecure") {
		return []string{"--insecure"}
	}
	return nil
}

// launch runs `loraft sweep launch` against the cluster.
func (r *runCtx) launch(t *testing.T) {
	t.Helper()
	specPath := filepath.Join(r.dir, "chaos.yaml")
	sp := spec
	if r.ring {
		sp = ringSpec
	}
	if err := os.WriteFile(specPath, []byte(sp), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := filepath.Abs(*dataFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := r.bin.Command(ctx, "sweep", "launch", "--spec", specPath, "--data", data)
	cmd.Env = append(cmd.Env, r.c.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sweep launch: %v\n%s", err, out)
	}
}

// waitProgress waits until some trial has committed a checkpoint: the
// fault then lands mid-training, with something to resume from.
func waitProgress(t *testing.T, ctx context.Context, c *proccluster.Cluster) {
	t.Helper()
	st, err := c.WaitState(ctx, func(st *pb.State) bool {
		for _, tr := range sweepOf(st, "chaos").GetTrials() {
			if tr.GetCheckpointStep() > 0 {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no trial made progress: %v\n%s", err, describe(st))
	}
}

// collect reads each trial's final adapter from the store.
func (r *runCtx) collect(t *testing.T, ctx context.Context, st *pb.State) *outcome {
	t.Helper()
	store, err := r.c.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := &outcome{trials: map[string]trialOutcome{}}
	sw := sweepOf(st, "chaos")
	var best *pb.Trial
	for _, tr := range sw.GetTrials() {
		o := trialOutcome{state: tr.GetState(), reason: tr.GetReason()}
		if res := tr.GetResult(); res != nil {
			o.result = fmt.Sprintf("steps %d val macro-F1 %v accuracy %v test macro-F1 %v", res.GetSteps(), res.GetValMacroF1(), res.GetValAccuracy(), res.GetTestMacroF1())
		}
		ck, files, err := checkpoint.LoadLatest(ctx, store, tr.GetName(), nil)
		if err == nil {
			o.step = ck.Step
			if ts, _, err := trainer.StateFromFiles(files); err == nil {
				o.adapter = paramsDigest(ts)
			}
		}
		out.trials[tr.GetName()] = o
		if tr.GetHasMetric() && (best == nil || tr.GetBestMetric() > best.GetBestMetric()) {
			best = tr
		}
	}
	if best != nil {
		out.best = best.GetName()
	}
	return out
}

// paramsDigest is a bit-exact rendering of a checkpoint's parameters.
func paramsDigest(st *trainer.State) string {
	names := make([]string, 0, len(st.Params))
	for n := range st.Params {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s:", n)
		for _, v := range st.Params[n].Data {
			fmt.Fprintf(&b, "%08x", math.Float32bits(v))
		}
		b.WriteByte(';')
	}
	return b.String()
}

// probe reads the sweep with a fresh client every 250 ms, as `loraft sweep
// status` does, and keeps the slowest answer.
type probe struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	worst  time.Duration
	stale  int
	warned int
}

func startProbe(ctx context.Context, addrs []string) *probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &probe{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			cl, err := coordinator.NewClient(addrs)
			if err != nil {
				return
			}
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			begin := time.Now()
			st, err := cl.Sweep(rctx, "chaos")
			took := time.Since(begin)
			rcancel()
			cl.Close()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			if err != nil {
				took = 30 * time.Second
			}
			p.worst = max(p.worst, took)
			if st.GetStale() {
				p.stale++
			}
			for _, pr := range st.GetProgress() {
				if pr.GetWarning() != "" {
					p.warned++
					break
				}
			}
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *probe) stop() (worstMs int64, stale, warned int) {
	p.cancel()
	p.wg.Wait()
	return p.worst.Milliseconds(), p.stale, p.warned
}

// leftBehind lists processes whose command line names dir.
func leftBehind(dir string) []string {
	var left []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		left = append(left, strings.ReplaceAll(string(b), "\x00", " "))
	}
	return left
}

func sweepOf(st *pb.State, name string) *pb.Sweep {
	for _, s := range st.GetSweeps() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func done(sw *pb.Sweep) bool {
	for _, t := range sw.GetTrials() {
		switch t.GetState() {
		case pb.TrialState_TRIAL_STATE_PENDING, pb.TrialState_TRIAL_STATE_RUNNING:
			return false
		}
	}
	return true
}

func describe(st *pb.State) string {
	var b strings.Builder
	for _, t := range sweepOf(st, "chaos").GetTrials() {
		fmt.Fprintf(&b, "  %s %s gen %d attempts %d ckpt %d trainers %v %s\n", t.GetName(), t.GetState(), t.GetGeneration(), t.GetAttempts(), t.GetCheckpointStep(), t.GetTrainers(), t.GetReason())
	}
	return b.String()
}
