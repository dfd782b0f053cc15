package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/chart"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/agent"
	"google.golang.org/protobuf/proto"
)

// The tests in this file run loraft as a cluster of real processes on
// loopback: three `loraft coordinator`s, trainers under them, and a real
// MinIO as the store.

// proc is one loraft child process with its output in a log file.
type proc struct {
	name string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(self, p.args...)
	p.cmd.Env = append(append(os.Environ(), "LORAFT_TEST_MAIN=1", "OMP_NUM_THREADS=1"), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cluster is a loopback loraft cluster for one test.
type cluster struct {
	t        *testing.T
	dir      string
	env      []string
	apis     []string
	coords   []*proc
	trainers []*proc
	store    checkpoint.Store
	data     string
}

// clusterData is the dataset the cluster tests train on: the real sample
// when ../shared/data is present, else the project's own demo file.
func clusterData(t *testing.T) string {
	p := "../../../shared/data/combined-sample.csv"
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Logf("%s is absent (it exists only on the project's machines): training on experiments/data/demo.csv instead", p)
	return "../../experiments/data/demo.csv"
}

// newCluster starts MinIO, coordinators and trainers.
func newCluster(t *testing.T, coordinators, trainers int, lease time.Duration) *cluster {
	t.Helper()
	srv := miniotest.Start(t)
	c := &cluster{t: t, dir: t.TempDir(), data: clusterData(t)}
	c.env = []string{"LORAFT_STORE=s3://loraft/test", "LORAFT_S3_ENDPOINT=" + srv.Endpoint,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "LORAFT_CACHE=" + filepath.Join(c.dir, "cache")}
	var err error
	c.store, err = checkpoint.NewS3Store(context.Background(), checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: "loraft", Prefix: "test",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 2*coordinators+trainers)
	var peers []string
	for i := range coordinators {
		raft, api := ports[2*i], ports[2*i+1]
		c.apis = append(c.apis, api)
		peers = append(peers, fmt.Sprintf("n%d=%s/%s", i+1, raft, api))
	}
	c.env = append(c.env, "LORAFT_COORDINATORS="+strings.Join(c.apis, ","))
	for i := range coordinators {
		p := &proc{name: fmt.Sprintf("n%d", i+1), log: filepath.Join(c.dir, fmt.Sprintf("coordinator-n%d.log", i+1)), env: c.env,
			args: []string{"--log-level", "debug", "coordinator", "--id", fmt.Sprintf("n%d", i+1), "--raft-addr", ports[2*i], "--api-addr", c.apis[i],
				"--dir", filepath.Join(c.dir, fmt.Sprintf("raft-n%d", i+1)), "--peers", strings.Join(peers, ","),
				"--raft-profile", "fast", "--lease", lease.String()}}
		p.start(t)
		c.coords = append(c.coords, p)
	}
	for i := range trainers {
		id := fmt.Sprintf("t%d", i+1)
		p := &proc{name: id, log: filepath.Join(c.dir, "trainer-"+id+".log"), env: c.env,
			args: []string{"trainer", "--id", id, "--listen", ports[2*coordinators+i], "--events", filepath.Join(c.dir, "events-"+id+".jsonl"),
				"--step-timeout", "5s"}}
		p.start(t)
		c.trainers = append(c.trainers, p)
	}
	t.Cleanup(func() {
		for _, p := range append(slices.Clone(c.trainers), c.coords...) {
			p.signal(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range append(slices.Clone(c.coords), c.trainers...) {
				t.Logf("--- %s (last lines of %s)\n%s", p.name, p.log, p.tail(25))
			}
		}
	})
	return c
}

func (c *cluster) client() *coordinator.Client {
	cl, err := coordinator.NewClient(c.apis)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// waitFor polls the consistent state until cond holds, or fails after limit.
func (c *cluster) waitFor(what string, limit time.Duration, cond func(*pb.State) bool) *pb.State {
	c.t.Helper()
	cl := c.client()
	deadline := time.Now().Add(limit)
	var last *pb.State
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cl.ConsistentState(ctx)
		cancel()
		if err == nil {
			last = st
			if cond(st) {
				return st
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("%s: not reached in %s; last state:\n%s", what, limit, describeState(last))
	return nil
}

// leader returns the index of the coordinator that leads now.
func (c *cluster) leader() int {
	c.t.Helper()
	cl := c.client()
	c.waitFor("a leader", 30*time.Second, func(*pb.State) bool { return true })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.ConsistentState(ctx); err != nil {
		c.t.Fatal(err)
	}
	i := slices.Index(c.apis, cl.Leader())
	if i < 0 {
		c.t.Fatalf("leader %q is not one of %v", cl.Leader(), c.apis)
	}
	return i
}

// writeSpec writes a sweep spec for the tiny model into the cluster's dir.
func (c *cluster) writeSpec(name, body string) string {
	p := filepath.Join(c.dir, name+".yaml")
	if err := os.WriteFile(p, []byte("name: "+name+"\n"+body), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// launch runs `loraft sweep launch` in-process against the cluster.
func (c *cluster) launch(spec string) {
	c.t.Helper()
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		c.t.Setenv(k, v)
	}
	if out, err := run(c.t, "sweep", "launch", "--spec", spec, "--data", c.data); err != nil {
		c.t.Fatalf("sweep launch: %v\n%s", err, out)
	}
}

func sweepOf(st *pb.State, name string) *pb.Sweep {
	for _, s := range st.GetSweeps() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func sweepFinished(name string) func(*pb.State) bool {
	return func(st *pb.State) bool { s := sweepOf(st, name); return s != nil && sweepDone(s) }
}

func describeState(st *pb.State) string {
	if st == nil {
		return "(no state read)"
	}
	var b strings.Builder
	for _, s := range st.GetSweeps() {
		for _, t := range s.GetTrials() {
			fmt.Fprintf(&b, "  %s %s gen %d attempts %d ckpt %d trainers %v %s\n", t.GetName(), t.GetState(), t.GetGeneration(), t.GetAttempts(), t.GetCheckpointStep(), t.GetTrainers(), t.GetReason())
		}
	}
	return b.String()
}

// checkNoOverlap reads every trainer's events and fails when two trainers
// ran the same trial at the same time. killed gives the kill time of
// trainers whose last job has no end event.
func (c *cluster) checkNoOverlap(killed map[string]time.Time) {
	c.t.Helper()
	type span struct {
		trainer    string
		generation uint64
		from, to   int64
	}
	spans := map[string][]span{}
	open := map[string]map[string]agent.Event{} // trainer → trial → start
	for _, p := range c.trainers {
		f, err := os.Open(filepath.Join(c.dir, "events-"+p.name+".jsonl"))
		if err != nil {
			continue // never started a job
		}
		sc := bufio.NewScanner(f)
		open[p.name] = map[string]agent.Event{}
		for sc.Scan() {
			var e agent.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				c.t.Fatalf("events of %s: %v", p.name, err)
			}
			switch e.Event {
			case "start":
				open[p.name][e.Trial] = e
			case "end":
				s := open[p.name][e.Trial]
				delete(open[p.name], e.Trial)
				spans[e.Trial] = append(spans[e.Trial], span{p.name, e.Generation, s.UnixNano, e.UnixNano})
			}
		}
		f.Close()
		for trial, s := range open[p.name] {
			end, ok := killed[p.name]
			if !ok {
				c.t.Errorf("trainer %s never ended its job on %s", p.name, trial)
				continue
			}
			spans[trial] = append(spans[trial], span{p.name, s.Generation, s.UnixNano, end.UnixNano()})
		}
	}
	for trial, ss := range spans {
		slices.SortFunc(ss, func(a, b span) int { return int(a.from - b.from) })
		for i := 1; i < len(ss); i++ {
			if ss[i].from < ss[i-1].to {
				c.t.Errorf("trial %s ran twice at once: %s (generation %d) until %d and %s (generation %d) from %d",
					trial, ss[i-1].trainer, ss[i-1].generation, ss[i-1].to, ss[i].trainer, ss[i].generation, ss[i].from)
			}
		}
	}
}

const clusterSpec = `trainers_per_trial: 1
space:
  rank: [4, 8]
  alpha: [8, 32]
  learning_rate: [3.0e-3]
  lora_dropout: [0.0]
train:
  config: tiny
  epochs: %d
  batch_size: 16
  max_len: 48
  checkpoint_every: 3
`

// TestClusterSweep: 3 coordinators and 3 trainers run a 4-trial sweep to
// the end, and `adapter pull --best --sweep` returns its best trial.
func TestClusterSweep(t *testing.T) {
	c := newCluster(t, 3, 3, 2*time.Second)
	c.launch(c.writeSpec("grid", fmt.Sprintf(clusterSpec, 3)))
	st := c.waitFor("sweep grid finished", 4*time.Minute, sweepFinished("grid"))
	sw := sweepOf(st, "grid")
	var best *pb.Trial
	for _, tr := range sw.GetTrials() {
		if tr.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED || !tr.GetHasMetric() || tr.GetResult().GetSteps() == 0 {
			t.Fatalf("trial %s: %v", tr.GetName(), tr)
		}
		if best == nil || tr.GetBestMetric() > best.GetBestMetric() {
			best = tr
		}
	}
	out := filepath.Join(c.dir, "best")
	got, err := run(t, "adapter", "pull", "--best", "--sweep", "grid", "--out", out)
	if err != nil {
		t.Fatalf("adapter pull: %v\n%s", err, got)
	}
	if !strings.Contains(got, "pulled run "+best.GetName()+" ") {
		t.Fatalf("adapter pull --best picked another trial than %s (%.4f):\n%s", best.GetName(), best.GetBestMetric(), got)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "README.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	out2, err := run(t, "sweep", "status", "grid")
	if err != nil || !strings.Contains(out2, "SUCCEEDED") || !strings.Contains(out2, "best macro-f1") {
		t.Fatalf("sweep status: %v\n%s", err, out2)
	}
	report := filepath.Join(c.dir, "report.json")
	if out, err := run(t, "sweep", "report", "--out", report, "grid"); err != nil {
		t.Fatalf("sweep report: %v\n%s", err, out)
	}
	rep, err := chart.ReadReport(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Trials {
		if tr.Metric == nil || len(tr.Loss) == 0 || len(tr.Eval) == 0 {
			t.Errorf("report of %s lacks its metric or curves: %+v", tr.Name, tr)
		}
	}
	c.checkNoOverlap(nil)
}

func trialOf(st *pb.State, name string) *pb.Trial {
	for _, s := range st.GetSweeps() {
		for _, t := range s.GetTrials() {
			if t.GetName() == name {
				return t
			}
		}
	}
	return nil
}

// finalParams reads the adapter and classifier tensors of run's latest checkpoint.
func (c *cluster) finalParams(run string) (int, map[string][]float32) {
	c.t.Helper()
	ck, files, err := checkpoint.LoadLatest(context.Background(), c.store, run, nil)
	if err != nil {
		c.t.Fatalf("run %s: %v", run, err)
	}
	st, _, err := trainer.StateFromFiles(files)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string][]float32{}
	for name, p := range st.Params {
		out[name] = p.Data
	}
	return ck.Step, out
}

// TestClusterTrainerKill: SIGKILL the trainer of a running trial; the leader
// sees its lease expire and places the trial on another trainer, which
// resumes from the committed checkpoint and ends with the same adapter as an
// uninterrupted run of the same trial.
func TestClusterTrainerKill(t *testing.T) {
	c := newCluster(t, 3, 3, 1500*time.Millisecond)
	spec := `trainers_per_trial: 1
space:
  rank: [8]
  alpha: [16]
  learning_rate: [3.0e-3]
  lora_dropout: [0.1]
train:
  config: tiny
  epochs: 8
  batch_size: 16
  max_len: 48
  checkpoint_every: 3
`
	c.launch(c.writeSpec("victim", spec))
	st := c.waitFor("victim past its second checkpoint", 3*time.Minute, func(st *pb.State) bool {
		tr := trialOf(st, "victim-t000")
		return tr.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && tr.GetCheckpointStep() >= 6
	})
	victim := trialOf(st, "victim-t000").GetTrainers()[0]
	var killedAt time.Time
	for _, p := range c.trainers {
		if p.name == victim {
			p.signal(syscall.SIGKILL)
			killedAt = time.Now()
		}
	}
	// The reference: the same trial, never interrupted.
	c.launch(c.writeSpec("reference", spec))
	st = c.waitFor("both sweeps finished", 4*time.Minute, func(st *pb.State) bool {
		return sweepFinished("victim")(st) && sweepFinished("reference")(st)
	})
	got := trialOf(st, "victim-t000")
	// At least two attempts: a loaded machine may starve a live trainer's
	// heartbeats past its lease too, which requeues the trial once more.
	if got.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED || got.GetAttempts() < 2 {
		t.Fatalf("killed trial: %v, want SUCCEEDED after at least 2 attempts", got)
	}
	if ref := trialOf(st, "reference-t000"); ref.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED {
		t.Fatalf("reference trial: %v", ref)
	}
	stepA, a := c.finalParams("victim-t000")
	stepB, b := c.finalParams("reference-t000")
	if stepA != stepB || len(a) != len(b) || len(a) == 0 {
		t.Fatalf("final checkpoints: step %d with %d tensors vs step %d with %d", stepA, len(a), stepB, len(b))
	}
	for name, v := range a {
		if !slices.Equal(v, b[name]) {
			t.Errorf("tensor %s differs between the resumed and the uninterrupted run", name)
		}
	}
	resumed := false
	for _, p := range c.trainers {
		if p.name != victim && strings.Contains(p.tail(200), "from step") {
			resumed = true
		}
	}
	if !resumed {
		t.Error("no trainer logged resuming the killed trial from a checkpoint")
	}
	c.checkNoOverlap(map[string]time.Time{victim: killedAt})
}

// TestClusterFullRestart: stop every coordinator mid-sweep and start them
// again on the same directories: sweeps, trials and best metrics are
// intact, and the unfinished sweep runs to the end.
func TestClusterFullRestart(t *testing.T) {
	c := newCluster(t, 3, 2, 2*time.Second)
	c.launch(c.writeSpec("restart", fmt.Sprintf(clusterSpec, 4)))
	before := c.waitFor("one trial done, others not", 3*time.Minute, func(st *pb.State) bool {
		n := countStates(sweepOf(st, "restart"))
		return n[pb.TrialState_TRIAL_STATE_SUCCEEDED] >= 1 && n[pb.TrialState_TRIAL_STATE_SUCCEEDED] < 4
	})
	for _, p := range c.coords {
		p.signal(syscall.SIGKILL)
	}
	for _, p := range c.coords {
		p.start(t)
	}
	after := c.waitFor("state back after the restart", time.Minute, func(st *pb.State) bool { return sweepOf(st, "restart") != nil })
	for _, tb := range sweepOf(before, "restart").GetTrials() {
		ta := trialOf(after, tb.GetName())
		if tb.GetState() == pb.TrialState_TRIAL_STATE_SUCCEEDED {
			if !proto.Equal(ta, tb) {
				t.Errorf("finished trial %s changed across the restart:\nbefore %v\nafter  %v", tb.GetName(), tb, ta)
			}
			continue
		}
		if ta.GetCheckpointStep() < tb.GetCheckpointStep() || ta.GetBestMetric() < tb.GetBestMetric() || ta.GetGeneration() < tb.GetGeneration() {
			t.Errorf("trial %s went back across the restart:\nbefore %v\nafter  %v", tb.GetName(), tb, ta)
		}
	}
	st := c.waitFor("sweep finished after the restart", 4*time.Minute, sweepFinished("restart"))
	for _, tr := range sweepOf(st, "restart").GetTrials() {
		if tr.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED {
			t.Errorf("trial %s: %v", tr.GetName(), tr)
		}
	}
	c.checkNoOverlap(nil)
}

// TestClusterLeaderKill: SIGKILL the raft leader mid-sweep while clients
// launch, cancel and read sweeps. A new leader takes over, the sweep
// completes with no trial lost and none run twice at once, and the clients'
// history is linearizable.
func TestClusterLeaderKill(t *testing.T) {
	c := newCluster(t, 3, 3, 2*time.Second)
	ctx, stop := context.WithCancel(context.Background())
	h := startLinClients(t, ctx, c.apis, 4, "lin")
	t.Cleanup(func() { stop(); h.Wait() })
	c.launch(c.writeSpec("failover", fmt.Sprintf(clusterSpec, 4)))
	c.waitFor("a trial past a checkpoint", 3*time.Minute, func(st *pb.State) bool {
		for _, tr := range sweepOf(st, "failover").GetTrials() {
			if tr.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && tr.GetCheckpointStep() > 0 {
				return true
			}
		}
		return false
	})
	h.run(t, 500*time.Millisecond, 20)
	old := c.leader()
	c.coords[old].signal(syscall.SIGKILL)
	h.run(t, 2*time.Second, 40)
	if now := c.leader(); now == old {
		t.Fatalf("coordinator %d still leads after being killed", old)
	}
	st := c.waitFor("sweep finished after the leader was killed", 4*time.Minute, sweepFinished("failover"))
	stop()
	for _, tr := range sweepOf(st, "failover").GetTrials() {
		if tr.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED || !tr.GetHasMetric() {
			t.Errorf("trial %s: %v", tr.GetName(), tr)
		}
	}
	c.checkNoOverlap(nil)
	checkLinearizable(t, h.Wait(), "leader-kill")
}

// TestClusterRing: a trial with trainers_per_trial 2 is placed on two
// trainers that form an all-reduce ring from the assignment (ranks, peers,
// generation) and train it together to the end.
func TestClusterRing(t *testing.T) {
	c := newCluster(t, 3, 2, 2*time.Second)
	c.launch(c.writeSpec("ring", `trainers_per_trial: 2
space:
  rank: [8]
  alpha: [16]
train:
  config: tiny
  epochs: 2
  batch_size: 16
  max_len: 48
  checkpoint_every: 5
`))
	st := c.waitFor("sweep ring finished", 4*time.Minute, sweepFinished("ring"))
	tr := trialOf(st, "ring-t000")
	if tr.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED || tr.GetResult().GetSteps() == 0 {
		t.Fatalf("ring trial: %v", tr)
	}
	ranks := map[int32]bool{}
	for _, p := range c.trainers {
		b, err := os.ReadFile(filepath.Join(c.dir, "events-"+p.name+".jsonl"))
		if err != nil {
			t.Fatalf("trainer %s ran nothing: %v", p.name, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e agent.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			if e.Event == "end" {
				if e.World != 2 || e.Err != "" {
					t.Errorf("trainer %s: %+v", p.name, e)
				}
				ranks[e.Rank] = true
			}
		}
	}
	if !ranks[0] || !ranks[1] {
		t.Fatalf("ranks that ran: %v, want 0 and 1", ranks)
	}
}
