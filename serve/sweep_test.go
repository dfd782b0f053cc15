package serve

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// TestFollowSweepEndToEnd serves a sweep's best trial from a real
// coordinator and a real MinIO store, as `loraft serve --sweep` does: the
// best is trial A, so A answers; then trial B reports a better checkpoint
// and serving switches to it. While it switches, concurrent requests never
// fail and each answer is, text by text, what the one adapter it names
// gives.
func TestFollowSweepEndToEnd(t *testing.T) {
	// Generous: under the race detector on a loaded machine each model
	// build takes many seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	srv := miniotest.Start(t)
	store, err := checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: "serve",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A lease far past the test's length: the trials stay with the trainers
	// that heartbeat once, so their checkpoint reports are never fenced.
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.Scheduler = coordinator.SchedulerConfig{Lease: 10 * time.Minute, Tick: 10 * time.Millisecond}
	}})
	c.WaitForLeader(10 * time.Second)
	cl := c.Client()
	const trialA, trialB = "follow-t000", "follow-t001"
	sw := &pb.Sweep{Name: "follow", DatasetSha256: "abc", Metric: metrics.MacroF1, Trials: []*pb.Trial{
		{Name: trialA, Index: 0, Rank: 4, Alpha: 8}, {Name: trialB, Index: 1, Rank: 4, Alpha: 8}}}
	if err := cl.LaunchSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	gens := placeTrials(t, ctx, cl, "a", "b")

	// Three checkpoints, each a tiny random adapter whose classifier head
	// comes from its seed, and what each gives every statement alone;
	// written out before any request runs, so requests only read want.
	type ckpt struct {
		trial string
		step  int
		score float64
		files map[string][]byte
	}
	want := map[string][]string{} // adapter id → each statement's "label confidence"
	cks := map[string]ckpt{}
	for _, ck := range []struct {
		trial string
		step  int
		seed  uint64
		score float64
	}{{trialA, 10, 1, 0.5}, {trialB, 10, 2, 0.3}, {trialB, 20, 3, 0.9}} {
		id := fmt.Sprintf("%s@%d", ck.trial, ck.step)
		files := checkpointFiles(t, ck.seed, ck.step)
		if ck.score > 0.3 { // B@10 is never the best: nothing may answer with it
			want[id] = answersOf(t, files, ck.trial, ck.step)
		}
		cks[id] = ckpt{ck.trial, ck.step, ck.score, files}
	}
	const idA, idB = trialA + "@10", trialB + "@20"
	if fmt.Sprint(want[idA]) == fmt.Sprint(want[idB]) {
		t.Fatal("adapters A and B answer alike: the test could not see a mix")
	}
	// report saves a checkpoint to the store and reports its score to the
	// coordinators, as a trainer does.
	report := func(id string) {
		t.Helper()
		ck := cks[id]
		if _, err := checkpoint.Save(ctx, store, ck.trial, ck.step, ck.files, map[string]float64{metrics.MacroF1: ck.score}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: ck.trial, Generation: gens[ck.trial],
			Step: int64(ck.step), HasMetric: true, Metric: ck.score}); err != nil {
			t.Fatalf("reporting %s: %v", id, err)
		}
	}
	report(idA)
	report(trialB + "@10") // B's first checkpoint scores lower: A stays the best

	cfg := DefaultConfig()
	cfg.MaxBatch = 4 // a request's texts span several batches
	s := newService(t, cfg)
	src := &SweepSource{Coordinators: cl, Store: store, Sweep: "follow"}
	open := func(dir, id string) (*Model, error) { return OpenAdapter(dir, "", id, gotch.CPU) }
	fctx, stopFollow := context.WithCancel(ctx)
	var following sync.WaitGroup
	following.Add(1)
	go func() { defer following.Done(); Follow(fctx, s, src, open, t.TempDir(), 20*time.Millisecond) }()
	defer following.Wait()
	defer stopFollow()

	serving := func(id string) {
		t.Helper()
		coordinatortest.Eventually(t, 5*time.Minute, func() error {
			name := "nothing"
			if m := s.Model(); m != nil {
				name = m.Name
			}
			if name != id {
				return fmt.Errorf("serving %s, want %s", name, id)
			}
			return nil
		})
	}
	serving(idA)
	a, err := s.Classify(ctx, statements)
	if err != nil || a.Model != idA {
		t.Fatalf("first answer: %v by %q, want one by %s", err, a.Model, idA)
	}

	// Requests run throughout the switch.
	var mu sync.Mutex
	seen := map[string]int{}
	var failures []string
	rctx, stopRequests := context.WithCancel(ctx)
	var requests sync.WaitGroup
	for range 4 {
		requests.Add(1)
		go func() {
			defer requests.Done()
			for rctx.Err() == nil {
				a, err := s.Classify(ctx, statements)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case want[a.Model] == nil:
					failures = append(failures, fmt.Sprintf("answered by %q, not an adapter of the sweep", a.Model))
				default:
					seen[a.Model]++
					for i, r := range a.Results {
						if got := fmt.Sprintf("%s %.5f", r.Label, r.Confidence); got != want[a.Model][i] {
							failures = append(failures, fmt.Sprintf("text %d answered %q, but %s gives %q", i, got, a.Model, want[a.Model][i]))
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	report(idB)
	serving(idB)
	// Some answers by B after the switch, then the requests stop.
	coordinatortest.Eventually(t, 5*time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if seen[idB] < 3 {
			return fmt.Errorf("answers by model %v, want some by %s", seen, idB)
		}
		return nil
	})
	stopRequests()
	requests.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d failures while switching from %s to %s, first: %s", len(failures), idA, idB, failures[0])
	}
	if seen[idA] == 0 {
		t.Fatalf("answers by model %v, want some by %s before the switch", seen, idA)
	}
	if m := s.Model(); m.ReviewBelow != 0.3 {
		t.Errorf("review threshold %v, want the checkpoint's validation value 0.3", m.ReviewBelow)
	}
}

// placeTrials registers trainers and heartbeats until each holds a trial;
// it returns each trial's generation.
func placeTrials(t *testing.T, ctx context.Context, cl *coordinator.Client, trainers ...string) map[string]uint64 {
	t.Helper()
	for _, id := range trainers {
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: id + ":7500"}}); err != nil {
			t.Fatal(err)
		}
	}
	gens := map[string]uint64{}
	coordinatortest.Eventually(t, 30*time.Second, func() error {
		for _, id := range trainers {
			resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id})
			if err != nil {
				return err
			}
			if a := resp.GetAssignment(); a != nil {
				gens[a.GetTrial().GetName()] = a.GetGeneration()
			}
		}
		if len(gens) < len(trainers) {
			return fmt.Errorf("trials placed: %v, want %d", gens, len(trainers))
		}
		return nil
	})
	return gens
}

// checkpointFiles are the objects of a training checkpoint at step of the tiny
// model on a random base with LoRA and classifier initialized from seed,
// with a validation report whose review threshold is 0.3.
func checkpointFiles(t *testing.T, seed uint64, step int) map[string][]byte {
	t.Helper()
	m, man := tinyAdapter(t, seed)
	defer m.Drop()
	params, err := m.ParamValues()
	if err != nil {
		t.Fatal(err)
	}
	st := &trainer.State{Step: step, Manifest: man, Params: params, M: map[string]*model.Tensor{}, V: map[string]*model.Tensor{},
		Val: metrics.Report{N: 10, ReviewBelow: 0.3, ReviewTarget: 0.9}}
	files, err := st.Files(wordpiece.BertBaseUncasedVocab())
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// answersOf is what the adapter of a checkpoint gives each of statements
// alone: "label confidence".
func answersOf(t *testing.T, files map[string][]byte, run string, step int) []string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := trainer.WriteAdapterFromCheckpoint(files, run, step, dir); err != nil {
		t.Fatal(err)
	}
	m := openAdapter(t, dir, run)
	defer m.retire()
	var out []string
	for _, text := range statements {
		ids, _ := m.enc.Encode(text, m.MaxLen)
		p, err := m.cls.ClassifyTokens(context.Background(), [][]int32{ids})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %.5f", p[0].Label, p[0].Confidence))
	}
	return out
}
