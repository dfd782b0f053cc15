package model

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// torchDir holds a tiny random BertForSequenceClassification written by
// real PyTorch (testdata/gen_torch.py, python3-torch 1.13): its state dict
// as pytorch_model.bin (zip format), legacy.bin (pre-1.6 format), half.bin
// (float16) and sharded/ (two shards and an index), an HF config.json, and
// the logits of a forward pass written with plain torch ops.
const torchDir = "testdata/torchbert"

type torchLogits struct {
	Torch  string      `json:"torch"`
	IDs    [][]int64   `json:"ids"`
	Mask   [][]int64   `json:"mask"`
	Logits [][]float64 `json:"logits"`
}

func readTorchLogits(t *testing.T) torchLogits {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(torchDir, "logits.json"))
	if err != nil {
		t.Fatal(err)
	}
	var l torchLogits
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// forwardIDs runs m in eval mode on rows of ids and mask.
func forwardIDs(t *testing.T, m *Model, ids, mask [][]int64) []float64 {
	t.Helper()
	g := graph.New()
	defer g.Drop()
	B, L := int64(len(ids)), int64(len(ids[0]))
	tid := g.Own(ts.MustOfSlice(slices.Concat(ids...)).MustView([]int64{B, L}, true))
	tmask := g.Own(ts.MustOfSlice(slices.Concat(mask...)).MustView([]int64{B, L}, true))
	out := m.Forward(g, tid, tmask, false)
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	return out.Float64Values()
}

// safetensorsFromTorch writes the tensors loaded from pytorch_model.bin as
// a model.safetensors (python3 safetensors is not in Debian 12).
func safetensorsFromTorch(t *testing.T, w Weights, cw, cb *Tensor) string {
	t.Helper()
	sw := &safetensors.Writer{}
	for name, tensor := range w {
		if err := sw.AddFloat32(name, tensor.Shape, tensor.Data); err != nil {
			t.Fatal(err)
		}
	}
	for name, tensor := range map[string]*Tensor{"classifier.weight": cw, "classifier.bias": cb} {
		if err := sw.AddFloat32(name, tensor.Shape, tensor.Data); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "model.safetensors")
	if err := sw.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTorchFilesLogits loads the state dict PyTorch saved, in each format,
// and checks loraft's forward pass against torch's logits. Bound: 1e-4 for
// float32 weights (measured ~1e-6: the same float32 math in another op
// order); float16 weights carry 2^-11 relative rounding of every weight, so
// that file's bound is 0.02 (a misread half gives O(1) errors).
func TestTorchFilesLogits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	want := readTorchLogits(t)
	c, err := LoadConfig(filepath.Join(torchDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.NameOrPath != "loraft/torch-bert-micro" || c.HiddenSize != 32 || c.IntermediateSize != 37 || c.MaxPositions != 40 {
		t.Fatalf("config.json read as %+v", c)
	}
	const labels = 3
	ref, refCW, refCB, err := LoadWeights(filepath.Join(torchDir, "pytorch_model.bin"), c, labels)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		tol  float64
		same bool // the tensors must equal pytorch_model.bin's bit for bit
	}{
		{"pytorch_model.bin", filepath.Join(torchDir, "pytorch_model.bin"), 1e-4, true},
		{"model.safetensors made from it", safetensorsFromTorch(t, ref, refCW, refCB), 1e-4, true},
		{"legacy format", filepath.Join(torchDir, "legacy.bin"), 1e-4, true},
		{"sharded", filepath.Join(torchDir, "sharded", "pytorch_model.bin.index.json"), 1e-4, true},
		{"float16", filepath.Join(torchDir, "half.bin"), 0.02, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, cw, cb, err := LoadWeights(tc.path, c, labels)
			if err != nil {
				t.Fatal(err)
			}
			if cw == nil || cb == nil {
				t.Fatal("the classifier in the file was not returned")
			}
			if tc.same {
				for name, r := range ref {
					if !slices.Equal(w[name].Data, r.Data) || !slices.Equal(w[name].Shape, r.Shape) {
						t.Fatalf("%s differs from pytorch_model.bin's", name)
					}
				}
				if !slices.Equal(cw.Data, refCW.Data) || !slices.Equal(cb.Data, refCB.Data) {
					t.Fatal("classifier differs from pytorch_model.bin's")
				}
			}
			m, err := New(c, w, cw, cb, Options{Quant: Dense, Compute: gotch.Float, Device: gotch.CPU, LoRA: lora.DefaultConfig(), Labels: labels, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Drop()
			got := forwardIDs(t, m, want.IDs, want.Mask)
			worst := 0.0
			for i, row := range want.Logits {
				for j, v := range row {
					worst = math.Max(worst, math.Abs(got[i*labels+j]-v))
				}
			}
			t.Logf("max |logit(loraft) − logit(torch %s)| = %.2g", want.Torch, worst)
			if worst > tc.tol {
				t.Fatalf("logits differ from torch's by %v, bound %v", worst, tc.tol)
			}
		})
	}
}

// TestSafetensorsShards loads a model.safetensors.index.json whose two shards
// hold the tensors of pytorch_model.bin, and checks the index's refusals.
func TestSafetensorsShards(t *testing.T) {
	c, err := LoadConfig(filepath.Join(torchDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ref, cw, cb, err := LoadWeights(filepath.Join(torchDir, "pytorch_model.bin"), c, 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	all := map[string]*Tensor{"classifier.weight": cw, "classifier.bias": cb}
	maps.Copy(all, ref)
	shards := [2]*safetensors.Writer{{}, {}}
	weightMap := map[string]string{}
	for i, name := range slices.Sorted(maps.Keys(all)) {
		file := fmt.Sprintf("model-%05d-of-00002.safetensors", i%2+1)
		if err := shards[i%2].AddFloat32(name, all[name].Shape, all[name].Data); err != nil {
			t.Fatal(err)
		}
		weightMap[name] = file
	}
	for i, sw := range shards {
		if err := sw.WriteFile(filepath.Join(dir, fmt.Sprintf("model-%05d-of-00002.safetensors", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex := func(name string, m map[string]string) string {
		b, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 1}, "weight_map": m})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w, gotCW, gotCB, err := LoadWeights(writeIndex("model.safetensors.index.json", weightMap), c, 3)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range ref {
		if !slices.Equal(w[name].Data, r.Data) {
			t.Fatalf("%s differs from pytorch_model.bin's", name)
		}
	}
	if !slices.Equal(gotCW.Data, cw.Data) || !slices.Equal(gotCB.Data, cb.Data) {
		t.Fatal("classifier differs")
	}
	for _, tc := range []struct {
		name string
		m    map[string]string
		want string
	}{
		{"escape.index.json", map[string]string{"a": "../model-00001-of-00002.safetensors"}, `names shard "../model-00001-of-00002.safetensors"`},
		{"empty.index.json", map[string]string{}, "empty or missing weight_map"},
		{"gone.index.json", map[string]string{"a": "gone.safetensors"}, "gone.safetensors"},
	} {
		if _, _, _, err := LoadWeights(writeIndex(tc.name, tc.m), c, 3); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// The same tensor in two shards is an error naming both.
	dup := filepath.Join(dir, "dup.safetensors")
	if err := shards[0].WriteFile(dup); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadWeightFiles([]string{filepath.Join(dir, "model-00001-of-00002.safetensors"), dup}, c, 3); err == nil || !strings.Contains(err.Error(), "is in both") {
		t.Errorf("duplicate tensors across shards: %v", err)
	}
}
