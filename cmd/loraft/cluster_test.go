package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/chart"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/internal/proccluster"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/agent"
	"google.golang.org/protobuf/proto"
)

// The tests in this file run loraft as a cluster of real processes on
// loopback: three `loraft coordinator`s, trainers under them, and a real
// MinIO as the store.

// cluster is a proccluster.Cluster tied to one test: it fails the test on
// an error, and kills every process when the test ends, showing the ends of
// their logs when it failed.
type cluster struct {
	*proccluster.Cluster
	t     *testing.T
	store checkpoint.Store
	data  string
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

// newCluster starts MinIO, coordinators (fast raft timeouts, debug logs)
// and trainers.
func newCluster(t *testing.T, coordinators, trainers int, lease time.Duration) *cluster {
	t.Helper()
	bin := testBinary(t)
	bin.Env = append(bin.Env, "OMP_NUM_THREADS=1", "LORAFT_LOG_LEVEL=debug")
	pc, err := proccluster.Start(proccluster.Config{Bin: bin, Dir: t.TempDir(), Coordinators: coordinators, Trainers: trainers,
		RaftProfile: "fast", Lease: lease, TrainerArgs: []string{"--step-timeout", "5s"}, MinIO: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pc.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(pc.LogTails(25))
		}
	})
	c := &cluster{Cluster: pc, t: t, data: clusterData(t)}
	if c.store, err = pc.OpenStore(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls the consistent state until cond holds, or fails after limit.
func (c *cluster) waitFor(what string, limit time.Duration, cond func(*pb.State) bool) *pb.State {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := c.WaitState(ctx, cond)
	if err != nil {
		c.t.Fatalf("%s: not reached in %s: %v; last state:\n%s", what, limit, err, describeState(st))
	}
	return st
}

// leader returns the coordinator that leads now.
func (c *cluster) leader() *proccluster.Coordinator {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	co, err := c.Leader(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return co
}

// writeSpec writes a sweep spec for the tiny model into the cluster's dir.
func (c *cluster) writeSpec(name, body string) string {
	p := filepath.Join(c.Dir, name+".yaml")
	if err := os.WriteFile(p, []byte("name: "+name+"\n"+body), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// launch runs `loraft sweep launch` in-process against the cluster.
func (c *cluster) launch(spec string) {
	c.t.Helper()
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		c.t.Setenv(k, v)
	}
	if out, err := run(c.t, "sweep", "launch", "--spec", spec, "--data", c.data); err != nil {
		c.t.Fatalf("sweep launch: %v\n%s", err, out)
	}
}

// kill SIGKILLs p, failing the test on an error.
func (c *cluster) kill(p *proc.Proc) {
	c.t.Helper()
	if err := p.Kill(); err != nil {
		c.t.Fatal(err)
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

// checkNoOverlap fails when two trainers ran the same trial at the same
// time. killed gives the kill time of trainers whose last job has no end
// event.
func (c *cluster) checkNoOverlap(killed map[string]time.Time) {
	c.t.Helper()
	jobs, err := c.Jobs(killed)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, o := range proccluster.Overlaps(jobs) {
		c.t.Errorf("trial %s ran twice at once: %s (generation %d) until %d and %s (generation %d) from %d",
			o[0].Trial, o[0].Trainer, o[0].Generation, o[0].To, o[1].Trainer, o[1].Generation, o[1].From)
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
	out := filepath.Join(c.Dir, "best")
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
	report := filepath.Join(c.Dir, "report.json")
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
	c.kill(c.Trainer(victim).Proc)
	killedAt := time.Now()
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
	for _, p := range c.Trainers {
		if p.ID != victim && strings.Contains(p.Tail(200), "from step") {
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
	for _, p := range c.Coordinators {
		c.kill(p.Proc)
	}
	for _, p := range c.Coordinators {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
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
	h := coordinatortest.StartClients(t, ctx, c.APIAddrs(), 4, "lin")
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
	h.Run(t, 500*time.Millisecond, 20)
	old := c.leader()
	c.kill(old.Proc)
	h.Run(t, 2*time.Second, 40)
	if now := c.leader(); now == old {
		t.Fatalf("coordinator %s still leads after being killed", old.ID)
	}
	st := c.waitFor("sweep finished after the leader was killed", 4*time.Minute, sweepFinished("failover"))
	stop()
	for _, tr := range sweepOf(st, "failover").GetTrials() {
		if tr.GetState() != pb.TrialState_TRIAL_STATE_SUCCEEDED || !tr.GetHasMetric() {
			t.Errorf("trial %s: %v", tr.GetName(), tr)
		}
	}
	c.checkNoOverlap(nil)
	coordinatortest.CheckLinearizable(t, h.Wait(), "leader-kill")
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
	for _, p := range c.Trainers {
		b, err := os.ReadFile(p.Events)
		if err != nil {
			t.Fatalf("trainer %s ran nothing: %v", p.ID, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e agent.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			if e.Event == "end" {
				if e.World != 2 || e.Err != "" {
					t.Errorf("trainer %s: %+v", p.ID, e)
				}
				ranks[e.Rank] = true
			}
		}
	}
	if !ranks[0] || !ranks[1] {
		t.Fatalf("ranks that ran: %v, want 0 and 1", ranks)
	}
}
