package hub

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/loraft/loraft/checkpoint/peft"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// hfGoldenBase is where the tiny BertForSequenceClassification that
// deploy/hf-golden.py saves with transformers' save_pretrained lands once a
// GPU-machine run has made it (testdata/README.md).
const hfGoldenBase = "testdata/hf-golden/tiny-bert"

// hfGoldenPEFT is deploy/hf-golden.py's peft/ beside it: a loraft adapter
// trained on that base (adapter/) and PEFT's logits with it (logits.json).
const hfGoldenPEFT = "testdata/hf-golden/peft"

// torchPEFTDir is the stand-in for hfGoldenPEFT on the torch fixture: a PEFT
// adapter for torchDir and the logits PEFT's LoRA semantics give with it,
// written out in torch by ../testdata/gen_peft.py.
const torchPEFTDir = "../testdata/torchbert-peft"

// hfLogits is the layout of logits.json, written by deploy/hf-golden.py
// (tiny-bert/ and peft/) and by ../testdata/gen_torch.py alike.
type hfLogits struct {
	Torch        string      `json:"torch"`
	Transformers string      `json:"transformers,omitempty"`
	Texts        []string    `json:"texts,omitempty"`
	IDs          [][]int64   `json:"ids"`
	Mask         [][]int64   `json:"mask"`
	Logits       [][]float64 `json:"logits"`
}

func readHFLogits(path string) (hfLogits, error) {
	var l hfLogits
	b, err := os.ReadFile(path)
	if err != nil {
		return l, fmt.Errorf("reading reference logits: %w", err)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("reference logits %s: %w", path, err)
	}
	if len(l.IDs) == 0 || len(l.IDs) != len(l.Mask) || len(l.IDs) != len(l.Logits) || len(l.Logits[0]) == 0 {
		return l, fmt.Errorf("reference logits %s: %d rows of ids, %d of mask, %d of logits", path, len(l.IDs), len(l.Mask), len(l.Logits))
	}
	for i := range l.IDs {
		if len(l.IDs[i]) != len(l.IDs[0]) || len(l.Mask[i]) != len(l.IDs[0]) || len(l.Logits[i]) != len(l.Logits[0]) {
			return l, fmt.Errorf("reference logits %s: row %d is ragged", path, i)
		}
	}
	return l, nil
}

// baseLogits loads the model directory dir the way --base does (Resolve,
// config.json, the weights transformers prefers, the classifier in the file)
// and returns loraft's eval-mode float32 logits, row by row, for the ids and
// mask of ref.
func baseLogits(t *testing.T, dir string, ref hfLogits) [][]float64 {
	t.Helper()
	return adaptedLogits(t, dir, "", ref)
}

// adaptedLogits is baseLogits with the PEFT adapter directory adapter (when
// not "") applied as `loraft predict` applies an adapter: the LoRA layers
// that its adapter_config.json describes, then its tensors (the LoRA A/B
// and the saved classifier) set by their PEFT names.
func adaptedLogits(t *testing.T, dir, adapter string, ref hfLogits) [][]float64 {
	t.Helper()
	b, err := Resolve(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.ModelConfig()
	if err != nil {
		t.Fatal(err)
	}
	labels := len(ref.Logits[0])
	w, cw, cb, err := b.LoadWeights(c, labels)
	if err != nil {
		t.Fatal(err)
	}
	if cw == nil || cb == nil {
		t.Fatalf("%s: the classifier in %s was not returned", dir, b.Weights)
	}
	loraCfg := lora.DefaultConfig()
	var params map[string]*model.Tensor
	if adapter != "" {
		pc, err := peft.ReadConfig(adapter)
		if err != nil {
			t.Fatal(err)
		}
		loraCfg = lora.Config{Rank: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, Targets: pc.TargetModules, RSLoRA: pc.UseRSLoRA}
		tensors, err := peft.ReadTensors(adapter)
		if err != nil {
			t.Fatal(err)
		}
		params = map[string]*model.Tensor{}
		for name, v := range tensors {
			params[name] = (*model.Tensor)(v)
		}
	}
	// Dense fp32: the reference is an unquantized float32 forward pass.
	m, err := model.New(c, w, cw, cb, model.Options{Quant: model.Dense, Compute: gotch.Float, Device: gotch.CPU,
		LoRA: loraCfg, Labels: labels, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Drop()
	if params != nil {
		if err := m.SetParams(params); err != nil {
			t.Fatalf("adapter %s: %v", adapter, err)
		}
	}
	g := graph.New()
	defer g.Drop()
	B, L := int64(len(ref.IDs)), int64(len(ref.IDs[0]))
	ids := g.Own(ts.MustOfSlice(slices.Concat(ref.IDs...)).MustView([]int64{B, L}, true))
	mask := g.Own(ts.MustOfSlice(slices.Concat(ref.Mask...)).MustView([]int64{B, L}, true))
	out := m.Forward(g, ids, mask, false)
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	flat := out.Float64Values()
	rows := make([][]float64, B)
	for i := range rows {
		rows[i] = flat[i*labels : (i+1)*labels]
	}
	return rows
}

// maxAbsDiff is the largest |got − want| over all logits.
func maxAbsDiff(got, want [][]float64) float64 {
	worst := 0.0
	for i, row := range want {
		for j, v := range row {
			worst = math.Max(worst, math.Abs(got[i][j]-v))
		}
	}
	return worst
}

// TestHFGoldenLogits loads a model directory through --base's loader and
// compares loraft's logits with the reference logits.json beside it. The
// fixture is ../testdata/torchbert (real PyTorch, pytorch_model.bin, the same
// logits.json layout); the HF golden base (transformers' save_pretrained,
// model.safetensors) is checked too once it is in testdata/hf-golden. Bound
// 1e-4: float32 math in another op order (measured ~1e-6 on the fixture).
func TestHFGoldenLogits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const tol = 1e-4
	dirs := []string{torchDir}
	if _, err := os.Stat(hfGoldenBase); err == nil {
		dirs = append(dirs, hfGoldenBase)
	} else {
		t.Logf("%s is not in the repository yet (make gpu-check writes it; testdata/README.md): only the fixture is compared", hfGoldenBase)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ref, err := readHFLogits(filepath.Join(dir, "logits.json"))
			if err != nil {
				t.Fatal(err)
			}
			got := baseLogits(t, dir, ref)
			worst := maxAbsDiff(got, ref.Logits)
			t.Logf("max |logit(loraft) − logit(torch %s, transformers %q)| = %.2g over %d×%d logits", ref.Torch, ref.Transformers, worst, len(got), len(got[0]))
			if worst > tol {
				t.Fatalf("logits differ from the reference by %v, bound %v", worst, tol)
			}
			// The comparison must be able to fail: the same logits against
			// the rows in another order differ by far more than the bound.
			rotated := append(slices.Clone(ref.Logits[1:]), ref.Logits[0])
			if d := maxAbsDiff(got, rotated); d <= tol {
				t.Fatalf("rows in another order differ by only %v: the reference cannot tell rows apart", d)
			}
		})
	}
}

// TestHFGoldenBaseFiles checks what else --base reads from a model
// directory: tokenizer_config.json's do_lower_case (the fixture is cased,
// hf-golden.py saves an uncased BertTokenizer), vocab.txt and which weights
// file is chosen (save_pretrained's model.safetensors for the HF base).
func TestHFGoldenBaseFiles(t *testing.T) {
	type baseCase struct {
		dir     string
		lower   bool
		weights string
	}
	tests := []baseCase{{torchDir, false, "pytorch_model.bin"}}
	if _, err := os.Stat(hfGoldenBase); err == nil {
		tests = append(tests, baseCase{hfGoldenBase, true, "model.safetensors"})
	} else {
		t.Logf("%s is not in the repository yet: only the fixture is checked", hfGoldenBase)
	}
	for _, tc := range tests {
		b, err := Resolve(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		lower, err := b.LowerCase()
		if err != nil || lower != tc.lower {
			t.Errorf("%s: LowerCase() = %v, %v; want %v", tc.dir, lower, err, tc.lower)
		}
		if v, err := b.VocabBytes(); err != nil || len(v) == 0 {
			t.Errorf("%s: VocabBytes(): %d bytes, %v", tc.dir, len(v), err)
		}
		if filepath.Base(b.Weights) != tc.weights {
			t.Errorf("%s: weights %s, want %s", tc.dir, b.Weights, tc.weights)
		}
	}
}

// TestPEFTGoldenLogits applies a PEFT adapter directory to its base the way
// `loraft predict` does and compares loraft's logits with the reference's:
// the A/B orientation, the scaling (lora_alpha / r), which modules the
// target_modules match (a non-square intermediate.dense among them) and the
// classifier saved under modules_to_save must all agree for the logits to.
// The fixture's reference is PEFT's semantics in plain torch
// (../testdata/gen_peft.py); once a GPU-machine run has made it,
// hfGoldenPEFT's is PeftModel.from_pretrained's own, on a loraft export.
func TestPEFTGoldenLogits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const tol = 1e-4
	type peftCase struct{ name, base, adapter, logits string }
	cases := []peftCase{{"fixture", torchDir, torchPEFTDir, filepath.Join(torchPEFTDir, "logits.json")}}
	if _, err := os.Stat(hfGoldenPEFT); err == nil {
		cases = append(cases, peftCase{"hf-golden", hfGoldenBase, filepath.Join(hfGoldenPEFT, "adapter"), filepath.Join(hfGoldenPEFT, "logits.json")})
	} else {
		t.Logf("%s is not in the repository yet (make gpu-check writes it; testdata/README.md): only the fixture is compared", hfGoldenPEFT)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := readHFLogits(tc.logits)
			if err != nil {
				t.Fatal(err)
			}
			got := adaptedLogits(t, tc.base, tc.adapter, ref)
			worst := maxAbsDiff(got, ref.Logits)
			t.Logf("max |logit(loraft) − logit(reference)| = %.2g over %d×%d logits", worst, len(got), len(got[0]))
			if worst > tol {
				t.Fatalf("logits with adapter %s differ from the reference by %v, bound %v", tc.adapter, worst, tol)
			}
			// The adapter must matter: the base alone is far from the reference.
			if d := maxAbsDiff(baseLogits(t, tc.base, ref), ref.Logits); d <= 10*tol {
				t.Fatalf("the base without the adapter is within %v of the reference: the adapter is not tested", d)
			}
		})
	}
}
