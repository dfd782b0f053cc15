package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// micro is a 2-layer, 32-wide BERT with a 200-token vocabulary: small enough
// for exhaustive checks, with every part of the real architecture.
func micro() Config {
	c := Tiny()
	c.VocabSize, c.HiddenSize, c.NumHeads, c.IntermediateSize, c.MaxPositions = 200, 32, 2, 64, 64
	return c
}

func newModel(t *testing.T, c Config, w Weights, q Quant) *Model {
	t.Helper()
	m, err := New(c, w, nil, nil, Options{Quant: q, Compute: gotch.Float, Device: gotch.CPU, LoRA: lora.DefaultConfig(), Labels: 7, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Drop)
	return m
}

// logits runs the model in eval mode on a fixed batch with padding.
func logits(t *testing.T, m *Model) []float64 {
	t.Helper()
	g := graph.New()
	defer g.Drop()
	ids := g.Own(ts.MustOfSlice([]int64{101, 7, 8, 9, 102, 101, 17, 102, 0, 0}).MustView([]int64{2, 5}, true))
	mask := g.Own(ts.MustOfSlice([]int64{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}).MustView([]int64{2, 5}, true))
	out := m.Forward(g, ids, mask, false)
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	return out.Float64Values()
}

// TestNF4CloseToDense compares a model whose frozen Linear weights are NF4
// with the same model kept in float32. Bound: every logit within 0.05 of the
// float32 one. NF4 moves each weight by at most ~0.14 × its block's absmax
// (half the widest codebook gap), i.e. ≲ 0.01 for N(0, 0.02) weights; through
// two layers and the pooler that measured ≲ 0.01 on the logits here, so 0.05
// leaves room without hiding a broken dequantization (which gives O(1) errors).
func TestNF4CloseToDense(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	w := RandomWeights(c, 3)
	dense, q := logits(t, newModel(t, c, w, Dense)), logits(t, newModel(t, c, w, NF4))
	worst := 0.0
	for i := range dense {
		worst = math.Max(worst, math.Abs(dense[i]-q[i]))
	}
	t.Logf("max |logit(nf4) − logit(fp32)| = %.5f", worst)
	if worst > 0.05 || worst == 0 {
		t.Fatalf("NF4 logits differ from float32 by %v, want (0, 0.05]", worst)
	}
}

func TestPaddingDoesNotChangeLogits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m := newModel(t, micro(), RandomWeights(micro(), 3), NF4)
	g := graph.New()
	defer g.Drop()
	ids := g.Own(ts.MustOfSlice([]int64{101, 17, 102}).MustView([]int64{1, 3}, true))
	mask := g.Own(ts.MustOnes([]int64{1, 3}, gotch.Int64, gotch.CPU))
	alone := m.Forward(g, ids, mask, false).Float64Values()
	padded := logits(t, m)[7:] // row 2 of the padded batch is the same statement
	for i := range alone {
		if math.Abs(alone[i]-padded[i]) > 1e-5 {
			t.Fatalf("padding changed logit %d: %v vs %v", i, alone[i], padded[i])
		}
	}
}

// writeHF writes w as an HF checkpoint: BertForPreTraining layout with the
// "bert." prefix and an unused "cls." head (F16 when half), or BertModel
// layout without the prefix.
func writeHF(t *testing.T, w Weights, prefix bool, half bool, edit func(*safetensors.Writer)) string {
	t.Helper()
	sw := &safetensors.Writer{}
	for name, tensor := range w {
		if !prefix {
			name = strings.TrimPrefix(name, "bert.")
		}
		var err error
		if half {
			err = sw.AddBF16FromFloat32(name, tensor.Shape, tensor.Data)
		} else {
			err = sw.AddFloat32(name, tensor.Shape, tensor.Data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if prefix {
		if err := sw.AddFloat32("cls.predictions.bias", []int64{3}, []float32{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(sw)
	}
	p := filepath.Join(t.TempDir(), "model.safetensors")
	if err := sw.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadWeightsRoundTrip(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	w := RandomWeights(c, 9)
	want := logits(t, newModel(t, c, w, Dense))
	for _, tc := range []struct {
		name         string
		prefix, half bool
		tol          float64
	}{{"BertForPreTraining f32", true, false, 0}, {"BertModel f32", false, false, 0}, {"bf16", true, true, 0.05}} {
		t.Run(tc.name, func(t *testing.T) {
			loaded, cw, cb, err := LoadWeights(writeHF(t, w, tc.prefix, tc.half, nil), c, 7)
			if err != nil {
				t.Fatal(err)
			}
			if cw != nil || cb != nil {
				t.Fatal("a checkpoint without a classifier returned one")
			}
			got := logits(t, newModel(t, c, loaded, Dense))
			for i := range want {
				if math.Abs(got[i]-want[i]) > tc.tol {
					t.Fatalf("logit %d: %v after the round trip, %v before", i, got[i], want[i])
				}
			}
		})
	}
}

func TestLoadWeightsErrors(t *testing.T) {
	c := micro()
	w := RandomWeights(c, 9)
	without := func(key string) Weights {
		out := Weights{}
		for k, v := range w {
			if k != key {
				out[k] = v
			}
		}
		return out
	}
	reshaped := Weights{}
	for k, v := range w {
		reshaped[k] = v
	}
	reshaped["bert.pooler.dense.weight"] = &Tensor{Shape: []int64{16, 64}, Data: make([]float32, 1024)}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.safetensors")
	full, _ := os.ReadFile(writeHF(t, w, true, false, nil))
	if err := os.WriteFile(truncated, full[:6], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		path  string
		is    error
		wants []string
	}{
		{"missing key", writeHF(t, without("bert.encoder.layer.1.output.dense.weight"), true, false, nil), ErrWeights,
			[]string{"1 missing", "bert.encoder.layer.1.output.dense.weight"}},
		{"mis-shaped key", writeHF(t, reshaped, true, false, nil), ErrWeights,
			[]string{"1 mis-shaped", "bert.pooler.dense.weight [16 64] (want [32 32])"}},
		{"unexpected key", writeHF(t, w, true, false, func(sw *safetensors.Writer) {
			_ = sw.AddFloat32("bert.encoder.layer.7.output.dense.weight", []int64{1}, []float32{0})
		}), ErrWeights, []string{"1 unexpected", "bert.encoder.layer.7.output.dense.weight"}},
		{"wrong dtype", writeHF(t, w, true, false, func(sw *safetensors.Writer) {
			_ = sw.AddRaw("bert.embeddings.extra", "I8", []int64{1}, []byte{1})
		}), nil, []string{"bert.embeddings.extra"}},
		{"truncated header", truncated, safetensors.ErrHeader, []string{"truncated.safetensors"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := LoadWeights(tc.path, c, 7)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v does not wrap %v", err, tc.is)
			}
			for _, want := range tc.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3, "intermediate_size": 256, "classifier_dropout": null}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil || c.HiddenSize != 64 || c.NumLayers != 3 || c.VocabSize != 30522 || c.ClassifierDropout != nil || c.classifierDropout() != 0.1 {
		t.Fatalf("LoadConfig = %+v, %v", c, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"hidden_size": 100, "num_attention_heads": 12}`), 0o644)
	if _, err := LoadConfig(bad); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "bad.json") {
		t.Fatalf("LoadConfig(bad) = %v, want ErrConfig naming the file", err)
	}
	if _, err := LoadConfig("huge"); err == nil || !strings.Contains(err.Error(), "tiny, base or a config.json") {
		t.Fatalf("LoadConfig(huge) = %v", err)
	}
}

// TestOnlyAdaptersTrain runs backward and an update, and checks that only the
// LoRA matrices and the classifier require grad and change: every frozen
// tensor (dense and NF4) keeps its bytes.
func TestOnlyAdaptersTrain(t *testing.T) {
	for _, q := range []Quant{Dense, NF4} {
		t.Run(string(q), func(t *testing.T) { checkOnlyAdaptersTrain(t, q) })
	}
}

func snapshotFrozen(t *testing.T, m *Model) [][]float64 {
	var out [][]float64
	for _, f := range m.frozen {
		out = append(out, f.Float64Values())
	}
	for _, w := range m.nf4s {
		d, err := w.Dequantize(gotch.Float)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Float64Values())
		d.MustDrop()
	}
	return out
}

func checkOnlyAdaptersTrain(t *testing.T, q Quant) {
	// Each subtest runs on its own goroutine: grad mode is per OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m := newModel(t, micro(), RandomWeights(micro(), 3), q)
	before := snapshotFrozen(t, m)
	paramsBefore, _ := m.ParamValues()
	g := graph.New()
	defer g.Drop()
	ids := g.Own(ts.MustOfSlice([]int64{101, 7, 8, 102}).MustView([]int64{1, 4}, true))
	mask := g.Own(ts.MustOnes([]int64{1, 4}, gotch.Int64, gotch.CPU))
	out := m.Forward(g, ids, mask, true)
	s := g.Own(out.MustSum(gotch.Float, false))
	if err := s.Backward(); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.frozen {
		if f.MustRequiresGrad() {
			t.Fatal("a frozen tensor requires grad")
		}
	}
	names := map[string]bool{}
	for _, p := range m.Params() {
		names[p.Name] = true
		if !p.T.MustRequiresGrad() {
			t.Fatalf("%s does not require grad", p.Name)
		}
	}
	if len(names) != 2*2*2+2 || !names["bert.encoder.layer.1.attention.self.value.lora_B.weight"] || !names["classifier.bias"] {
		t.Fatalf("trainable parameters %v, want LoRA A/B on query and value of 2 layers plus the classifier", names)
	}
	// A plain SGD step on every trainable tensor.
	func() {
		defer libtorch.NoGrad()()
		// Keep the scalar reachable until after the calls: gotch passes its C
		// pointer without runtime.KeepAlive, so an unreachable Scalar's
		// finalizer could free it mid-call.
		half := ts.FloatScalar(0.5)
		defer half.MustDrop()
		for _, p := range m.Params() {
			gr := p.T.MustGrad(false)
			step := gr.MustMulScalar(half, true)
			if err := p.T.Sub_(step); err != nil {
				t.Fatal(err)
			}
			step.MustDrop()
		}
	}()
	after := snapshotFrozen(t, m)
	for i := range before {
		for j := range before[i] {
			if before[i][j] != after[i][j] {
				t.Fatalf("frozen tensor %d changed at %d: %v → %v", i, j, before[i][j], after[i][j])
			}
		}
	}
	paramsAfter, _ := m.ParamValues()
	moved := 0
	for n, b := range paramsBefore {
		for j := range b.Data {
			if b.Data[j] != paramsAfter[n].Data[j] {
				moved++
				break
			}
		}
	}
	// lora_A of each adapted layer gets no gradient while B = 0; B and the classifier move.
	if moved < 2*2+2 {
		t.Fatalf("only %d trainable tensors changed after the update", moved)
	}
}

// TestBF16Compute runs the matrix products in bfloat16 (8 mantissa bits):
// logits stay within 0.05 of float32 compute for the same NF4 model.
func TestBF16Compute(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := micro()
	w := RandomWeights(c, 3)
	f32 := logits(t, newModel(t, c, w, NF4))
	m, err := New(c, w, nil, nil, Options{Quant: NF4, Compute: gotch.BFloat16, Device: gotch.CPU, LoRA: lora.DefaultConfig(), Labels: 7, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Drop()
	bf := logits(t, m)
	worst := 0.0
	for i := range f32 {
		worst = math.Max(worst, math.Abs(f32[i]-bf[i]))
	}
	t.Logf("max |logit(bf16) − logit(fp32)| = %.5f", worst)
	if worst > 0.05 || worst == 0 {
		t.Fatalf("bf16 compute moved logits by %v, want (0, 0.05]", worst)
	}
}

// TestConfigJSONRoundTrip: a config written into a manifest and read back is
// the same model (a lost field would silently change training on resume).
func TestConfigJSONRoundTrip(t *testing.T) {
	half := 0.25
	for _, c := range []Config{Tiny(), Base(), func() Config { c := Tiny(); c.ClassifierDropout = &half; return c }()} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, c) || back.classifierDropout() != c.classifierDropout() {
			t.Fatalf("config %+v came back as %+v", c, back)
		}
	}
}
