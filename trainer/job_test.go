package trainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// failingStore fails the first failures Puts under prefix, and the first
// listFailures Lists (a store that is down when a job starts).
type failingStore struct {
	checkpoint.Store
	prefix       string
	failures     atomic.Int64
	listFailures atomic.Int64
}

func (f *failingStore) List(ctx context.Context, prefix string) ([]checkpoint.ObjectInfo, error) {
	if f.listFailures.Add(-1) >= 0 {
		return nil, errors.New("injected list failure: connection refused")
	}
	return f.Store.List(ctx, prefix)
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if f.prefix != "" && strings.HasPrefix(key, f.prefix) && f.failures.Add(-1) >= 0 {
		return errors.New("injected put failure")
	}
	return f.Store.Put(ctx, key, r, size)
}

// jobRecord is what a RunJob reported through its callbacks.
type jobRecord struct {
	saved      []int
	metrics    []map[string]float64
	saveFailed []int
	warnings   []string
	firstStep  int
}

// tinyJob is a 7-step run of the tiny random-init model on the demo data
// (224 training rows, batch 32) that checkpoints every 2 steps to store.
func tinyJob(d *Data, store checkpoint.Store, rec *jobRecord) Job {
	h := DefaultHyper()
	h.Epochs, h.BatchSize, h.LR, h.Seed = 1, 32, 2e-3, 7
	tok := Tokenizer{VocabSHA256: "vocab-sha", MaxLen: 16, LowerCase: true}
	rec.firstStep = -1
	return Job{Run: "r", Base: Base{ConfigName: "tiny", Config: model.Tiny(), InitSeed: 3, Quant: model.NF4, Compute: "fp32"},
		LoRA: testLoRA, Hyper: h, Data: d, Tokenizer: tok, Vocab: wordpiece.BertBaseUncasedVocab(), Device: gotch.CPU,
		Store: store, CheckpointEvery: 2,
		Progress: func(p Progress) {
			if rec.firstStep < 0 && p.Loss != 0 {
				rec.firstStep = p.Step
			}
		},
		Saved: func(_ context.Context, step int, m map[string]float64) {
			rec.saved, rec.metrics = append(rec.saved, step), append(rec.metrics, m)
		},
		SaveFailed: func(step int, _ error) { rec.saveFailed = append(rec.saveFailed, step) },
		Warn:       func(msg string) { rec.warnings = append(rec.warnings, msg) },
	}
}

// paramBits are a model's trainable tensors as raw float32 bits.
func paramBits(t *testing.T, m *model.Model) map[string][]uint32 {
	t.Helper()
	vals, err := m.ParamValues()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]uint32{}
	for n, v := range vals {
		b := make([]uint32, len(v.Data))
		for i, x := range v.Data {
			b[i] = math.Float32bits(x)
		}
		out[n] = b
	}
	return out
}

// copyStore copies every object of src into a fresh DirStore.
func copyStore(t *testing.T, src checkpoint.Store) *checkpoint.DirStore {
	t.Helper()
	ctx := context.Background()
	dst, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := src.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		b, err := checkpoint.GetBytes(ctx, src, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkpoint.PutBytes(ctx, dst, o.Key, b); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func listSteps(t *testing.T, s checkpoint.Store) []int {
	t.Helper()
	cks, err := checkpoint.List(context.Background(), s, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, ck := range cks {
		steps = append(steps, ck.Step)
	}
	return steps
}

// TestRunJob runs a tiny job uninterrupted, then resumes copies of its store
// at various steps: each resumed run starts from the newest valid checkpoint
// at or before its step, reports exactly the checkpoints it commits, and
// ends with the uninterrupted run's adapter, bit for bit.
func TestRunJob(t *testing.T) {
	ctx := context.Background()
	d := demoData(t, "../experiments/data/demo.csv", 16)
	ref, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var rec jobRecord
	m, man, res, err := RunJob(ctx, tinyJob(d, ref, &rec))
	if err != nil {
		t.Fatal(err)
	}
	want, wantLosses := paramBits(t, m), res.Losses
	m.Drop()
	if man.Steps != 7 || res.Steps != 7 || man.Temperature != res.Temperature || man.SplitID != d.Split.Spec.ID() {
		t.Fatalf("manifest steps %d, temperature %v, split %s; result steps %d, temperature %v", man.Steps, man.Temperature, man.SplitID, res.Steps, res.Temperature)
	}
	if want := []int{2, 4, 6, 7}; !slices.Equal(rec.saved, want) || !slices.Equal(listSteps(t, ref), want) {
		t.Fatalf("Saved reported %v, the store lists %v; want %v", rec.saved, listSteps(t, ref), want)
	}
	for i, mt := range rec.metrics {
		if _, ok := mt["macro_f1"]; !ok {
			t.Errorf("Saved(step %d) metrics %v lack macro_f1", rec.saved[i], mt)
		}
	}
	if rec.firstStep != 1 || len(rec.saveFailed) != 0 {
		t.Fatalf("uninterrupted run: first step %d, failed saves %v", rec.firstStep, rec.saveFailed)
	}

	tests := []struct {
		name         string
		resumeAt     int
		resumeLatest bool
		corrupt      []int // checkpoints whose adapter tensors are overwritten
		failSave     int   // a step whose checkpoint fails to be written twice, then is
		listFailures int64 // the store's first Lists fail: it is down when the job starts
		wantFrom     int   // the step the run resumes from (0: from scratch)
		wantSaved    []int
		wantSkipped  int // "skipping checkpoint" warnings
	}{
		{name: "at a checkpoint", resumeAt: 4, wantFrom: 4, wantSaved: []int{6, 7}},
		{name: "between checkpoints, later ones exist", resumeAt: 5, wantFrom: 4, wantSaved: []int{6, 7}},
		{name: "corrupt falls back to older, a failed save is retried and reported once written", resumeAt: 5, corrupt: []int{4}, failSave: 6,
			wantFrom: 2, wantSaved: []int{4, 6, 7}, wantSkipped: 1},
		{name: "latest", resumeLatest: true, wantFrom: 7, wantSaved: []int{7}},
		{name: "latest skips corrupt", resumeLatest: true, corrupt: []int{7, 6}, wantFrom: 4, wantSaved: []int{6, 7}, wantSkipped: 2},
		{name: "none at or before", resumeAt: 1, wantFrom: 0, wantSaved: []int{2, 4, 6, 7}},
		{name: "the store is down at the start: waited for", resumeAt: 4, listFailures: 2, wantFrom: 4, wantSaved: []int{6, 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := copyStore(t, ref)
			for _, step := range tc.corrupt {
				if err := checkpoint.PutBytes(ctx, store, checkpoint.Prefix("r", step)+paramsFile, []byte("not tensors")); err != nil {
					t.Fatal(err)
				}
			}
			var rec jobRecord
			fs := &failingStore{Store: store}
			fs.listFailures.Store(tc.listFailures)
			if tc.failSave > 0 {
				fs.prefix = checkpoint.Prefix("r", tc.failSave)
				fs.failures.Store(2)
			}
			j := tinyJob(d, fs, &rec)
			j.ResumeAt, j.ResumeLatest = tc.resumeAt, tc.resumeLatest
			m, _, res, err := RunJob(ctx, j)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Drop()
			if !slices.Equal(rec.saved, tc.wantSaved) {
				t.Errorf("Saved reported %v, want %v", rec.saved, tc.wantSaved)
			}
			if tc.failSave > 0 && !slices.Equal(rec.saveFailed, []int{tc.failSave, tc.failSave}) {
				t.Errorf("SaveFailed reported %v, want [%d %d]", rec.saveFailed, tc.failSave, tc.failSave)
			}
			notice := fmt.Sprintf("resume: run r from step %d ", tc.wantFrom)
			if tc.wantFrom == 0 {
				notice = "resume: run r has no checkpoint at or before step 1"
			}
			skipped := 0
			found := false
			for _, w := range rec.warnings {
				skipped += strings.Count(w, "skipping checkpoint")
				found = found || strings.HasPrefix(w, notice)
			}
			if !found || skipped != tc.wantSkipped {
				t.Errorf("warnings %q: want one starting %q and %d skipped checkpoints", rec.warnings, notice, tc.wantSkipped)
			}
			retried := 0
			for _, w := range rec.warnings {
				retried += strings.Count(w, "(retrying in ")
			}
			if int64(retried) != tc.listFailures {
				t.Errorf("warnings %q: %d retries of a failed read, want %d", rec.warnings, retried, tc.listFailures)
			}
			if wantFirst := tc.wantFrom + 1; tc.wantFrom < 7 && rec.firstStep != wantFirst {
				t.Errorf("first trained step %d, want %d", rec.firstStep, wantFirst)
			}
			if !slices.Equal(res.Losses, wantLosses) {
				t.Errorf("losses %v, want the uninterrupted run's %v", res.Losses, wantLosses)
			}
			got := paramBits(t, m)
			if len(got) != len(want) {
				t.Fatalf("%d trainable tensors, want %d", len(got), len(want))
			}
			for n, w := range want {
				if !slices.Equal(got[n], w) {
					t.Errorf("tensor %s differs from the uninterrupted run's", n)
				}
			}
		})
	}
}

// TestRunJobResumeChecksData refuses to resume a run on data tokenized
// differently from what its checkpoint recorded, and rejects contradictory jobs.
func TestRunJobResumeChecksData(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := demoData(t, "../experiments/data/demo.csv", 16)
	var rec jobRecord
	j := tinyJob(d, store, &rec)
	j.Hyper.Calibrate, j.CheckpointEvery = false, 0
	// A checkpoint at step 0 written by hand stands in for a run that started.
	st := &State{DatasetSHA256: d.DS.SHA256, Manifest: Manifest{Base: j.Base, LoRA: j.LoRA, Hyper: j.Hyper,
		Tokenizer: Tokenizer{VocabSHA256: "other-vocab", MaxLen: 16}, SplitID: d.Split.Spec.ID()}}
	files, err := st.Files(j.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Save(ctx, store, "r", 0, files, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	j.ResumeLatest = true
	if _, _, _, err := RunJob(ctx, j); err == nil || !strings.Contains(err.Error(), "resume: run r was trained with vocab other-vocab") {
		t.Fatalf("RunJob on other vocab: %v", err)
	}
	j.ResumeAt = 3
	if _, _, _, err := RunJob(ctx, j); !errors.Is(err, ErrJob) {
		t.Fatalf("RunJob with ResumeLatest and ResumeAt: %v, want ErrJob", err)
	}
	j.ResumeLatest, j.Store = false, nil
	if _, _, _, err := RunJob(ctx, j); !errors.Is(err, ErrJob) {
		t.Fatalf("RunJob resuming without a store: %v, want ErrJob", err)
	}
}

// TestRunJobRecordsGeneration: checkpoints record the assignment's
// generation and world size, and a job of an older generation does not
// resume from a checkpoint a newer one wrote.
func TestRunJobRecordsGeneration(t *testing.T) {
	d := demoData(t, "../experiments/data/demo.csv", 16)
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var rec jobRecord
	j := tinyJob(d, store, &rec)
	j.Generation = 3
	m, _, _, err := RunJob(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	m.Drop()
	_, files, err := checkpoint.LoadLatest(context.Background(), store, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := StateFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != 3 || st.WorldSize != 1 {
		t.Fatalf("state.json generation %d world %d, want 3 and 1", st.Generation, st.WorldSize)
	}
	old := tinyJob(d, store, &jobRecord{})
	old.Generation, old.ResumeLatest = 2, true
	if m, _, _, err := RunJob(context.Background(), old); !errors.Is(err, ErrStaleGeneration) {
		if m != nil {
			m.Drop()
		}
		t.Fatalf("a generation-2 job resuming a generation-3 checkpoint: %v, want ErrStaleGeneration", err)
	}
}

// TestRunJobResumeGivesUpOnTheStore: a job that must resume while the
// store stays down waits for it, then stops with ErrStoreUnreachable once
// StoreOutage has passed (the agent then gives the trial back to the
// queue) instead of failing the trial or starting over at step 0.
func TestRunJobResumeGivesUpOnTheStore(t *testing.T) {
	d := demoData(t, "../experiments/data/demo.csv", 16)
	dir, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs := &failingStore{Store: dir}
	fs.listFailures.Store(1 << 40)
	var rec jobRecord
	j := tinyJob(d, fs, &rec)
	j.ResumeAt, j.StoreOutage = 4, 2*time.Second
	m, _, _, err := RunJob(context.Background(), j)
	if err == nil {
		m.Drop()
		t.Fatal("the job ran without reading its checkpoint")
	}
	if !errors.Is(err, ErrStoreUnreachable) || !strings.Contains(err.Error(), "resuming run r") {
		t.Fatalf("error %v, want ErrStoreUnreachable while resuming run r", err)
	}
	if rec.firstStep != -1 {
		t.Fatalf("trained from step %d without its checkpoint", rec.firstStep)
	}
}
