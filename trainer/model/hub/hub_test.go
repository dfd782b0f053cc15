package hub

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/model/hub/hubtest"
)

// torchDir is an HF model directory whose weights real PyTorch wrote
// (../testdata/gen_torch.py).
const torchDir = "../testdata/torchbert"

// rev is the revision the fake cache's refs/main names.
const rev = "86b5e0934494bd15c9632b12f734a8a67f723594"

var allFiles = []string{"config.json", "vocab.txt", "tokenizer_config.json", "pytorch_model.bin"}

func TestResolveHubID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		folder  string // cached repository folder
		spec    string
		env     string // HF_HUB_CACHE or HF_HOME
		wantErr string
	}{
		{"org id", "models--google-bert--bert-base-uncased", "google-bert/bert-base-uncased", "HF_HUB_CACHE", ""},
		{"bare id, cached under the org", "models--google-bert--bert-base-uncased", "bert-base-uncased", "HF_HUB_CACHE", ""},
		{"org id, cached bare", "models--bert-base-uncased", "google-bert/bert-base-uncased", "HF_HUB_CACHE", ""},
		{"bare id, cached bare", "models--bert-base-uncased", "bert-base-uncased", "HF_HOME", ""},
		{"another model", "models--google-bert--bert-base-uncased", "google-bert/bert-base-cased", "HF_HUB_CACHE", "google-bert/bert-base-cased is not in the Hugging Face cache"},
		{"another org", "models--google-bert--bert-base-uncased", "someone/bert-base-uncased", "HF_HUB_CACHE", "models--someone--bert-base-uncased"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cache := root
			if tc.env == "HF_HOME" {
				cache = filepath.Join(root, "hub")
				t.Setenv("HF_HUB_CACHE", "")
			}
			t.Setenv(tc.env, root)
			snap := hubtest.WriteRepo(t, cache, tc.folder, rev, hubtest.Files(torchDir, allFiles...))
			b, err := Resolve(tc.spec)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tc.wantErr) ||
					!strings.Contains(err.Error(), "huggingface-cli download "+tc.spec) || !strings.Contains(err.Error(), cache) {
					t.Fatalf("error %v; want ErrNotFound naming %q, the cache and how to download", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != tc.spec || b.HubID != tc.spec || b.Revision != rev || b.Dir != snap {
				t.Errorf("Resolve = name %q, hub id %q, revision %q, dir %s", b.Name, b.HubID, b.Revision, b.Dir)
			}
			if got := slices.Sorted(maps.Keys(b.Files)); !slices.Equal(got, slices.Sorted(slices.Values(allFiles))) {
				t.Errorf("files %v", got)
			}
			if b.Weights != filepath.Join(snap, "pytorch_model.bin") || b.Config != filepath.Join(snap, "config.json") {
				t.Errorf("weights %s, config %s", b.Weights, b.Config)
			}
			// The cached base loads as the directory does.
			c, err := b.ModelConfig()
			if err != nil {
				t.Fatal(err)
			}
			w, _, _, err := b.LoadWeights(c, 3)
			if err != nil {
				t.Fatal(err)
			}
			ref, _, _, err := model.LoadWeights(filepath.Join(torchDir, "pytorch_model.bin"), c, 3)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range ref {
				if !slices.Equal(w[k].Data, v.Data) {
					t.Fatalf("%s differs", k)
				}
			}
		})
	}
}

func TestResolvePaths(t *testing.T) {
	both := t.TempDir() // a directory with safetensors and .bin: safetensors wins, as in transformers
	for _, n := range append(slices.Clone(allFiles), "model.safetensors") {
		src := filepath.Join(torchDir, n)
		if n == "model.safetensors" {
			src = filepath.Join(torchDir, "pytorch_model.bin") // content does not matter here
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(both, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noConfig := t.TempDir()
	if err := os.WriteFile(filepath.Join(noConfig, "pytorch_model.bin"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := t.TempDir()
	if err := os.Symlink(filepath.Join(broken, "gone"), filepath.Join(broken, "pytorch_model.bin")); err != nil {
		t.Fatal(err)
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	sharded := filepath.Join(torchDir, "sharded", "pytorch_model.bin.index.json")
	for _, tc := range []struct {
		name, spec string
		weights    string
		baseName   string
		files      []string
		wantErr    string
		lower      bool
	}{
		{"model directory", torchDir, abs(filepath.Join(torchDir, "pytorch_model.bin")), "loraft/torch-bert-micro", allFiles, "", false},
		{"weights file with neighbours", filepath.Join(torchDir, "pytorch_model.bin"), abs(filepath.Join(torchDir, "pytorch_model.bin")), "loraft/torch-bert-micro", allFiles, "", false},
		{"sharded index", sharded, abs(sharded), abs(sharded),
			[]string{"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"}, "", true},
		{"safetensors preferred", both, filepath.Join(both, "model.safetensors"), "loraft/torch-bert-micro", []string{"config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"}, "", false},
		{"directory without config.json", noConfig, "", "", nil, "has no config.json", false},
		{"empty directory", t.TempDir(), "", "", nil, "has none of model.safetensors", false},
		{"broken link", broken, "", "", nil, "has none of", false},
		{"not a path or id", "./no/such/dir", "", "", nil, "not a file, a directory or a hub id", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Resolve(tc.spec)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v; want ErrNotFound containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Weights != tc.weights || b.Name != tc.baseName || b.HubID != "" {
				t.Errorf("weights %s, name %s, hub id %q; want %s, %s", b.Weights, b.Name, b.HubID, tc.weights, tc.baseName)
			}
			if got := slices.Sorted(maps.Keys(b.Files)); !slices.Equal(got, slices.Sorted(slices.Values(tc.files))) {
				t.Errorf("files %v, want %v", got, tc.files)
			}
			lower, err := b.LowerCase()
			if err != nil || lower != tc.lower {
				t.Errorf("LowerCase = %v, %v; want %v", lower, err, tc.lower)
			}
		})
	}
}

func TestLowerCaseAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		tokCfg  string
		lower   bool
		wantErr string
	}{
		{`{"do_lower_case": true}`, true, ""},
		{`{"do_lower_case": false}`, false, ""},
		{`{"model_max_length": 512}`, true, ""},
		{`{"do_lower_case": false, "strip_accents": true}`, false, "strip_accents true with do_lower_case false"},
		{`{"do_lower_case": "yes"}`, false, "tokenizer_config.json"},
	} {
		b := Base{Spec: dir, TokenizerConfig: write("tokenizer_config.json", tc.tokCfg)}
		lower, err := b.LowerCase()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.tokCfg, err, tc.wantErr)
			}
			continue
		}
		if err != nil || lower != tc.lower {
			t.Errorf("%s: LowerCase = %v, %v; want %v", tc.tokCfg, lower, err, tc.lower)
		}
	}
	for _, tc := range []struct{ cfg, wantErr string }{
		{`{"hidden_act": "gelu_new"}`, `hidden_act "gelu_new", only gelu (erf) is implemented`},
		{`{"model_type": "roberta"}`, `model_type "roberta", only bert`},
		{`{"position_embedding_type": "relative_key"}`, `position_embedding_type "relative_key"`},
		{`{"hidden_size": 100, "num_attention_heads": 12}`, "not a multiple"},
		{`{"classifier_dropout": 1.5}`, "classifier_dropout 1.5"},
		{`{"hidden_size": "big"}`, "config.json"},
	} {
		b := Base{Spec: dir, Config: write("config.json", tc.cfg)}
		if _, err := b.ModelConfig(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
	b := Base{Spec: dir, Config: write("config.json", `{"hidden_size": 64, "num_attention_heads": 4, "classifier_dropout": 0.2, "layer_norm_eps": 1e-7, "_name_or_path": "x/y"}`)}
	c, err := b.ModelConfig()
	if err != nil || c.HiddenSize != 64 || c.NumHeads != 4 || *c.ClassifierDropout != 0.2 || c.LayerNormEps != 1e-7 || c.NameOrPath != "x/y" || c.NumLayers != 12 {
		t.Errorf("ModelConfig = %+v, %v", c, err)
	}
}
