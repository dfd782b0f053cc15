package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/model"
)

// CheckpointConfig tunes the checkpoint benchmark.
type CheckpointConfig struct {
	// Repeat: the median of this many saves and loads counts (at least 1).
	Repeat int
}

// Checkpoint saves and loads a bert-base r=8 checkpoint (adapter and AdamW
// state) to a local directory store and to MinIO on loopback (a server
// process it starts: $LORAFT_MINIO or minio on $PATH).
func (r *Runner) Checkpoint(ctx context.Context, cfg CheckpointConfig) (Report, error) {
	st := bertBaseR8State()
	files, err := st.Files(wordpiece.BertBaseUncasedVocab())
	if err != nil {
		return nil, err
	}
	var total, tensors int64
	for n, b := range files {
		total += int64(len(b))
		if n != "vocab.txt" {
			tensors += int64(len(b))
		}
	}
	tmp, err := os.MkdirTemp("", "loraft-bench-ckpt-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	local, err := checkpoint.NewDirStore(filepath.Join(tmp, "store"))
	if err != nil {
		return nil, err
	}
	srv, err := proc.StartMinIO(filepath.Join(tmp, "minio"))
	if err != nil {
		return nil, fmt.Errorf("starting MinIO for the benchmark (LORAFT_MINIO=$(deploy/minio.sh)): %w", err)
	}
	defer srv.Stop()
	s3, err := checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: "bench",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		return nil, err
	}
	measure := func(s checkpoint.Store) (map[string]any, error) {
		var saves, loads []float64
		for i := range max(1, cfg.Repeat) {
			start := time.Now()
			ck, err := checkpoint.Save(ctx, s, "bench", i, files, nil, time.Now())
			if err != nil {
				return nil, err
			}
			saves = append(saves, ms(time.Since(start)))
			start = time.Now()
			got, err := checkpoint.Load(ctx, s, *ck)
			if err != nil {
				return nil, err
			}
			if _, _, err := trainer.StateFromFiles(got); err != nil {
				return nil, err
			}
			loads = append(loads, ms(time.Since(start)))
		}
		return map[string]any{"save_ms": median(saves), "load_ms": median(loads), "save_ms_all": saves, "load_ms_all": loads}, nil
	}
	localRes, err := measure(local)
	if err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	s3Res, err := measure(s3)
	if err != nil {
		return nil, fmt.Errorf("minio: %w", err)
	}
	return Report{
		"date": time.Now().UTC().Format(time.RFC3339), "loraft": r.Version,
		"what":  "bert-base, LoRA r=8 on query/value + classifier, with AdamW moments, state.json and vocab.txt; load includes verifying every sha256 and decoding the state",
		"bytes": total, "tensor_bytes": tensors, "trainable_params": 300295,
		"local": localRes, "minio": s3Res,
		"note": "median of --repeat; MinIO on loopback shares the 2 cores with the client",
	}, nil
}

// bertBaseR8State is a checkpoint state of the size of bert-base with r=8
// LoRA on query and value plus the classifier, with AdamW moments.
func bertBaseR8State() *trainer.State {
	rng := rand.New(rand.NewPCG(1, 2))
	tensor := func(shape ...int64) *model.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		t := &model.Tensor{Shape: shape, Data: make([]float32, n)}
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64() * 0.02)
		}
		return t
	}
	params, m, v := map[string]*model.Tensor{}, map[string]*model.Tensor{}, map[string]*model.Tensor{}
	add := func(name string, shape ...int64) {
		params[name], m[name], v[name] = tensor(shape...), tensor(shape...), tensor(shape...)
	}
	for l := range 12 {
		for _, mod := range []string{"query", "value"} {
			p := fmt.Sprintf("bert.encoder.layer.%d.attention.self.%s", l, mod)
			add(p+".lora_A.weight", 8, 768)
			add(p+".lora_B.weight", 768, 8)
		}
	}
	add("classifier.weight", 7, 768)
	add("classifier.bias", 7)
	return &trainer.State{Step: 1000, Params: params, M: m, V: v, Manifest: trainer.Manifest{Base: trainer.Base{Config: model.Base()}}}
}
