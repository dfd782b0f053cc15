package trainer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/loraft/loraft/checkpoint/peft"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// fakeParams are host tensors named like a model's trainable ones: LoRA on
// query and value of one layer, and the classifier.
func fakeParams() map[string]*model.Tensor {
	t := func(n int) *model.Tensor { return &model.Tensor{Shape: []int64{int64(n)}, Data: make([]float32, n)} }
	out := map[string]*model.Tensor{"classifier.weight": t(7), "classifier.bias": t(7)}
	for _, m := range []string{"query", "value"} {
		mod := "bert.encoder.layer.0.attention.self." + m
		out[mod+".lora_A.weight"], out[mod+".lora_B.weight"] = t(4), t(4)
	}
	return out
}

// writeConfig writes an HF config.json into a temporary directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// exported writes an adapter for man and returns its adapter_config.json
// and README.md.
func exported(t *testing.T, params map[string]*model.Tensor, man Manifest) (peft.LoraConfig, string) {
	t.Helper()
	dir := t.TempDir()
	if err := WriteAdapter(dir, params, man, Reports{}, []byte("[PAD]\n"), "r", 1); err != nil {
		t.Fatal(err)
	}
	pc, err := peft.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	card, err := os.ReadFile(filepath.Join(dir, peft.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	return pc, string(card)
}

// TestAdapterNamesItsBase: adapter_config.json's base_model_name_or_path and
// the card's base_model name the base the adapter was trained on. They used
// to say bert-base-uncased whenever --weights was given, whatever --config
// said, so PEFT would load the adapter on the wrong base.
func TestAdapterNamesItsBase(t *testing.T) {
	named := writeConfig(t, `{"_name_or_path": "prajjwal1/bert-mini", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}`)
	baseShaped := writeConfig(t, `{"architectures": ["BertForMaskedLM"], "hidden_size": 768}`)
	tinyShaped := writeConfig(t, `{"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}`)
	const weights = "/models/mine/model.safetensors"
	tests := []struct {
		config, weights string
		seed            uint64
		want            string
	}{
		{"tiny", "", 3, "random-init bert-tiny (loraft test config, init seed 3)"},
		{"tiny", weights, 0, weights},
		{"base", weights, 0, "bert-base-uncased"},
		{"bert-base-uncased", weights, 0, "bert-base-uncased"},
		{"base", "", 5, "random-init bert-base-uncased shape (loraft, init seed 5)"},
		{named, weights, 0, "prajjwal1/bert-mini"},
		{named, "", 0, "random-init prajjwal1/bert-mini shape (loraft, init seed 0)"},
		{baseShaped, weights, 0, "bert-base-uncased"},
		{tinyShaped, weights, 0, weights},
	}
	for _, tc := range tests {
		cfg, err := model.LoadConfig(tc.config)
		if err != nil {
			t.Fatal(err)
		}
		b := Base{ConfigName: tc.config, Config: cfg, Weights: tc.weights, InitSeed: tc.seed, Quant: model.NF4, Compute: "fp32"}
		if got := b.NameOrPath(); got != tc.want {
			t.Errorf("config %s, weights %q: NameOrPath %q, want %q", filepath.Base(tc.config), tc.weights, got, tc.want)
			continue
		}
		pc, card := exported(t, fakeParams(), Manifest{Base: b, LoRA: lora.Config{Rank: 4, Alpha: 8, Targets: []string{"query", "value"}}})
		if pc.BaseModel != tc.want {
			t.Errorf("config %s, weights %q: base_model_name_or_path %q, want %q", filepath.Base(tc.config), tc.weights, pc.BaseModel, tc.want)
		}
		front := card[:strings.Index(card, "\n---\n")]
		if !strings.Contains(front, "\nbase_model: "+tc.want+"\n") && !strings.Contains(front, "\nbase_model: \""+tc.want+"\"\n") {
			t.Errorf("config %s, weights %q: card front matter %q does not name %q", filepath.Base(tc.config), tc.weights, front, tc.want)
		}
	}
}

// TestAdapterTargetModules: a target list mixing all-linear with names
// adapts every Linear but the classifier (lora.Config.Matches); the
// adapter_config.json lists those modules so PEFT loads every LoRA tensor.
// It used to carry the list literally, and PEFT then adapted query alone.
func TestAdapterTargetModules(t *testing.T) {
	c := model.Tiny()
	export := func(targets string) (peft.LoraConfig, []string, string) {
		lc := lora.Config{Rank: 2, Alpha: 4, Targets: lora.ParseTargets(targets)}
		m, err := model.New(c, model.RandomWeights(c, 0), nil, nil, model.Options{Quant: model.NF4, Compute: gotch.Float,
			Device: gotch.CPU, LoRA: lc, Labels: shard.NumLabels, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Drop()
		params, err := m.ParamValues()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for n := range params {
			names = append(names, n)
		}
		pc, card := exported(t, params, Manifest{Base: Base{ConfigName: "tiny", Config: c, Quant: model.NF4, Compute: "fp32"}, LoRA: lc})
		return pc, peft.AdaptedModules(names), card
	}
	allLinear, allModules, _ := export("all-linear")
	mixed, mixedModules, card := export("query, all-linear")
	if !slices.Equal(mixedModules, allModules) || len(allModules) <= 2*c.NumLayers {
		t.Fatalf("query,all-linear adapted %d modules, all-linear %d", len(mixedModules), len(allModules))
	}
	for _, tc := range []struct {
		name    string
		pc      peft.LoraConfig
		adapted []string
	}{{"all-linear", allLinear, allModules}, {"query,all-linear", mixed, mixedModules}} {
		if slices.Contains(tc.pc.TargetModules, lora.AllLinear) {
			t.Errorf("%s: target_modules %q carry all-linear inside a list", tc.name, tc.pc.TargetModules)
		}
		for _, mod := range tc.adapted {
			if !peft.Matches(tc.pc.TargetModules, mod) {
				t.Errorf("%s: target_modules %q leave out %s: PEFT would drop its LoRA tensors", tc.name, tc.pc.TargetModules, mod)
			}
		}
	}
	if !slices.Equal(mixed.TargetModules, allLinear.TargetModules) {
		t.Errorf("query,all-linear wrote target_modules %q, all-linear %q", mixed.TargetModules, allLinear.TargetModules)
	}
	if !strings.Contains(card, "targets=all-linear") {
		t.Errorf("the card does not summarise the targets as all-linear")
	}
	named, _, _ := export("query,value")
	if !slices.Equal(named.TargetModules, []string{"query", "value"}) {
		t.Errorf("query,value wrote target_modules %q", named.TargetModules)
	}
}
