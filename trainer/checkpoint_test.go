package trainer

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// killingStore is the real S3 store with a hook: it kills the MinIO server
// after the n-th Put of the run, so the kill lands in the middle of a save.
type killingStore struct {
	checkpoint.Store
	puts   atomic.Int64
	killAt int64
	kill   func()
}

func (k *killingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if k.puts.Add(1) == k.killAt {
		k.kill()
	}
	return k.Store.Put(ctx, key, r, size)
}

// TestMinIODiesDuringSave kills the MinIO server in the middle of a
// checkpoint save: that save fails with an error naming the object, training
// goes on, the next save after MinIO restarts succeeds, and no partial
// checkpoint is ever listed.
func TestMinIODiesDuringSave(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	s3, err := checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: "ckpt", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Each save writes 4 objects then the manifest: Put 7 is the 2nd object of the 2nd save.
	store := &killingStore{Store: s3, killAt: 7, kill: func() {
		if err := srv.Kill(); err != nil {
			t.Error(err)
		}
	}}
	d := demoData(t, "../experiments/data/demo.csv", 24)
	c := model.Tiny()
	m, err := model.New(c, model.RandomWeights(c, 0), nil, nil, model.Options{Quant: model.NF4, Compute: gotch.Float,
		Device: gotch.CPU, LoRA: testLoRA, Labels: shard.NumLabels, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Drop()
	h := DefaultHyper()
	h.Epochs, h.BatchSize = 1, 32 // 7 steps
	vocab := wordpiece.BertBaseUncasedVocab()
	var saved []int
	var failures []error
	opts := Options{CheckpointEvery: 2, Manifest: Manifest{Hyper: h},
		Save: func(ctx context.Context, st *State) error {
			if st.Step == 6 { // the save after the failed one: bring MinIO back first
				if err := srv.Restart(); err != nil {
					t.Fatalf("restart minio: %v", err)
				}
			}
			files, err := st.Files(vocab)
			if err != nil {
				return err
			}
			if _, err := checkpoint.Save(ctx, store, "run1", st.Step, files, nil, time.Now()); err != nil {
				return err
			}
			// A listing at any point shows only complete checkpoints.
			if srv.PID() != 0 {
				cks, err := checkpoint.List(ctx, s3, "run1", nil)
				if err != nil {
					return err
				}
				for _, ck := range cks {
					if _, err := checkpoint.Load(ctx, s3, ck); err != nil {
						t.Errorf("listed checkpoint step %d does not load: %v", ck.Step, err)
					}
				}
			}
			saved = append(saved, st.Step)
			return nil
		},
		SaveFailed: func(step int, err error) { failures = append(failures, err) },
	}
	res, err := Train(ctx, m, d, h, opts)
	if err != nil {
		t.Fatalf("training stopped: %v", err)
	}
	if res.Steps != 7 || len(res.Losses) != 7 {
		t.Fatalf("training did not finish: %d of %d steps", len(res.Losses), res.Steps)
	}
	if len(failures) != 1 || !strings.Contains(failures[0].Error(), "saving checkpoint run1 step 4") || !strings.Contains(failures[0].Error(), srv.Endpoint) {
		t.Fatalf("save failures %v, want one for step 4 naming the object store endpoint", failures)
	}
	if strings.Contains(failures[0].Error(), srv.SecretKey) {
		t.Fatal("the error shows the secret key")
	}
	if want := []int{2, 6, 7}; len(saved) != 3 || saved[0] != want[0] || saved[1] != want[1] || saved[2] != want[2] {
		t.Fatalf("saved steps %v, want %v", saved, want)
	}
	cks, err := checkpoint.List(ctx, s3, "run1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, ck := range cks {
		steps = append(steps, ck.Step)
	}
	if len(steps) != 3 || steps[0] != 2 || steps[1] != 6 || steps[2] != 7 {
		t.Fatalf("listed checkpoints %v, want 2, 6, 7 (never the interrupted step 4)", steps)
	}
	if ck, _, err := checkpoint.LoadLatest(ctx, s3, "run1", nil); err != nil || ck.Step != 7 {
		t.Fatalf("LoadLatest = %v, %v; want step 7", ck, err)
	}
}
