package trainer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
)

// validManifest is an adapter manifest as WriteAdapter completes one.
func validManifest() Manifest {
	return Manifest{Format: 1, Base: Base{ConfigName: "tiny", Config: model.Tiny(), Quant: model.NF4, Compute: "fp32"},
		LoRA: lora.DefaultConfig(), Labels: shard.LabelNames(), Tokenizer: Tokenizer{MaxLen: 64, LowerCase: true},
		Hyper: DefaultHyper(), Temperature: 1.2, Steps: 10, Disclaimer: Disclaimer}
}

// TestHostileManifestAndState: manifests and states that name impossible
// or hostile values are refused with ErrBadState naming the field, before
// anything is built from them.
func TestHostileManifestAndState(t *testing.T) {
	manifests := []struct {
		name  string
		edit  func(m *Manifest)
		field string
	}{
		{"format 0", func(m *Manifest) { m.Format = 0 }, "format"},
		{"a billion layers", func(m *Manifest) { m.Base.Config.NumLayers = 1 << 30 }, "num_hidden_layers"},
		{"huge vocabulary", func(m *Manifest) { m.Base.Config.VocabSize = 1 << 40 }, "vocab_size"},
		{"zero heads", func(m *Manifest) { m.Base.Config.NumHeads = 0 }, "base.config"},
		{"rank 0", func(m *Manifest) { m.LoRA.Rank = 0 }, "lora"},
		{"three labels", func(m *Manifest) { m.Labels = m.Labels[:3] }, "labels"},
		{"max length past the positions", func(m *Manifest) { m.Tokenizer.MaxLen = 1 << 20 }, "tokenizer.max_len"},
		{"zero epochs", func(m *Manifest) { m.Hyper.Epochs = 0 }, "hyperparameters"},
		{"negative temperature", func(m *Manifest) { m.Temperature = -1 }, "temperature"},
		{"short weights hash", func(m *Manifest) { m.Base.WeightsSHA256 = "abc" }, "weights_sha256"},
		{"negative steps", func(m *Manifest) { m.Steps = -5 }, "steps"},
	}
	for _, tc := range manifests {
		t.Run("manifest/"+tc.name, func(t *testing.T) {
			m := validManifest()
			tc.edit(&m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = LoadManifest(dir)
			if !errors.Is(err, ErrAdapter) || !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("LoadManifest = %v; want ErrAdapter and ErrBadState naming %q", err, tc.field)
			}
		})
	}
	states := []struct {
		name  string
		edit  func(s *State)
		field string
	}{
		{"negative step", func(s *State) { s.Step = -1 }, "step"},
		{"step past the run", func(s *State) { s.Step = 11 }, "step"},
		{"negative batch", func(s *State) { s.Batch = -3 }, "batch"},
		{"negative learning rate", func(s *State) { s.LR = -0.1 }, "lr"},
		{"bad dataset hash", func(s *State) { s.DatasetSHA256 = "../../etc/passwd" }, "dataset_sha256"},
		{"a base too large to build", func(s *State) { s.Manifest.Base.Config.HiddenSize = 1 << 20 }, "hidden_size"},
	}
	for _, tc := range states {
		t.Run("state/"+tc.name, func(t *testing.T) {
			s := State{Step: 4, OptStep: 4, LR: 1e-4, WorldSize: 1, DatasetSHA256: strings.Repeat("a", 64), Manifest: validManifest()}
			s.Manifest.Format, s.Manifest.Labels = 0, nil // as a checkpoint's state.json holds it
			if _, err := ParseState(mustJSON(t, s)); err != nil {
				t.Fatalf("the unedited state is refused: %v", err)
			}
			tc.edit(&s)
			_, _, err := StateFromFiles(map[string][]byte{stateFile: mustJSON(t, s)})
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("StateFromFiles = %v; want ErrBadState naming %q", err, tc.field)
			}
		})
	}
	if _, err := ParseState([]byte(`{"step":1} {"step":2}`)); !errors.Is(err, ErrBadState) {
		t.Fatalf("two JSON values: %v, want ErrBadState", err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseManifest: any bytes as loraft.json never panic; a refusal wraps
// ErrBadState; an accepted manifest passes Validate and survives a JSON
// round trip.
func FuzzParseManifest(f *testing.F) {
	good := mustJSON(f, validManifest())
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"format":1`, `"format":2`, 1)))
	f.Add([]byte(`{"format":1,"base":{"config":{"num_hidden_layers":1000000000}}}`))
	f.Add([]byte(`{"format":1,"temperature":1e999}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b, "loraft.json")
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("refusal does not wrap ErrBadState: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a manifest Validate refuses: %v", err)
		}
		if _, err := ParseManifest(mustJSON(t, m), "again"); err != nil {
			t.Fatalf("round trip of an accepted manifest: %v", err)
		}
	})
}

// FuzzParseState: any bytes as state.json never panic; a refusal wraps
// ErrBadState; an accepted state has no negative counters and a model
// within the ceilings, and survives a JSON round trip.
func FuzzParseState(f *testing.F) {
	s := State{Step: 4, OptStep: 4, LR: 1e-4, WorldSize: 2, Generation: 3, DatasetSHA256: strings.Repeat("b", 64),
		Losses: []float64{2.1, 1.9}, History: []EvalPoint{{Step: 2}}, Manifest: validManifest()}
	f.Add(mustJSON(f, s))
	s.Step = -1
	f.Add(mustJSON(f, s))
	f.Add([]byte(`{"step":1,"manifest":{"base":{"config":{"hidden_size":1048576}}}}`))
	f.Add([]byte(`{"lr":"NaN"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("refusal does not wrap ErrBadState: %v", err)
			}
			return
		}
		c := st.Manifest.Base.Config
		if st.Step < 0 || st.Epoch < 0 || st.Batch < 0 || st.OptStep < 0 || st.LR < 0 ||
			c.NumLayers > maxLayers || c.HiddenSize > maxHidden || c.VocabSize > maxVocab {
			t.Fatalf("accepted %+v", st)
		}
		if _, err := ParseState(mustJSON(t, st)); err != nil {
			t.Fatalf("round trip of an accepted state: %v", err)
		}
	})
}
