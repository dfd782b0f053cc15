package peft

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModelCard(t *testing.T) {
	card := ModelCard(Card{BaseModel: "bert-base-uncased", Labels: []string{"Normal", "Stress"}, Run: "r8", Step: 100,
		Metrics: map[string]float64{"macro_f1": 0.78}, EvalTables: "| class | f1 |\n", Temperature: 1.3})
	for _, want := range []string{"---\nbase_model: bert-base-uncased\nlibrary_name: peft\n", "- lora\n", "not a diagnostic tool",
		"screening and research aid", "## Intended use", "## Out-of-scope use", "## Bias, risks and limitations", "| macro_f1 | 0.7800 |",
		"PeftModel.from_pretrained", "softmax(logits / 1.3000)"} {
		if !strings.Contains(strings.ToLower(card), strings.ToLower(want)) {
			t.Errorf("model card lacks %q", want)
		}
	}
}

// TestModelCardQuotesBase: a base that is not a Hub-id-like word (a path
// with spaces, a description) is quoted in the YAML front matter.
func TestModelCardQuotesBase(t *testing.T) {
	card := ModelCard(Card{BaseModel: "random-init bert-tiny (loraft test config)", RandomBase: true})
	if !strings.Contains(card, "\nbase_model: \"random-init bert-tiny (loraft test config)\"\n") {
		t.Fatalf("front matter of a described base:\n%s", card[:strings.Index(card, "\n---\n")+5])
	}
	if !strings.Contains(card, "not a published model") {
		t.Error("the card of a random-init base does not say PEFT cannot fetch it")
	}
}

func tensor(n int) *Tensor { return &Tensor{Shape: []int64{int64(n)}, Data: make([]float32, n)} }

// adapter is a two-layer adapter on query and key plus the classifier.
func adapter(targets []string) Adapter {
	ts := map[string]*Tensor{"classifier.weight": tensor(2)}
	for _, l := range []string{"0", "1"} {
		for _, m := range []string{"query", "key"} {
			mod := "bert.encoder.layer." + l + ".attention.self." + m
			ts[mod+".lora_A.weight"], ts[mod+".lora_B.weight"] = tensor(4), tensor(4)
		}
	}
	return Adapter{Config: SeqClsConfig("bert-base-uncased", 8, 16, 0.05, targets, false), Tensors: ts,
		Card: Card{Run: "r", Labels: []string{"a", "b"}}, Files: map[string][]byte{"loraft.json": []byte("{}\n")}}
}

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	a := adapter([]string{"query", "key"})
	if err := Write(dir, a); err != nil {
		t.Fatal(err)
	}
	c, err := ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseModel != "bert-base-uncased" || c.TaskType != "SEQ_CLS" || !slices.Equal(c.TargetModules, []string{"query", "key"}) ||
		!slices.Equal(c.ModulesToSave, []string{"classifier"}) {
		t.Fatalf("config read back: %+v", c)
	}
	got, err := ReadTensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(a.Tensors) || got["classifier.weight"] == nil {
		t.Fatalf("read back %d tensors, wrote %d", len(got), len(a.Tensors))
	}
	card, err := os.ReadFile(filepath.Join(dir, CardFile))
	if err != nil || !strings.Contains(string(card), "base_model: bert-base-uncased\n") {
		t.Fatalf("card: %v\n%s", err, card)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "loraft.json")); err != nil || string(b) != "{}\n" {
		t.Fatalf("extra file: %q, %v", b, err)
	}
}

// TestWriteRefusesWhatPEFTMisreads: an adapter whose target_modules would
// make PEFT drop LoRA tensors is refused before anything is written.
func TestWriteRefusesWhatPEFTMisreads(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Adapter)
		want string
	}{
		{"all-linear with names", func(a *Adapter) { a.Config.TargetModules = []string{"query", AllLinear} }, `"all-linear" in a list`},
		{"all-linear alone", func(a *Adapter) { a.Config.TargetModules = []string{AllLinear} }, `"all-linear" in a list`},
		{"a module left out", func(a *Adapter) { a.Config.TargetModules = []string{"query"} }, "do not match bert.encoder.layer.0.attention.self.key"},
		{"no base", func(a *Adapter) { a.Config.BaseModel = "" }, "no base_model_name_or_path"},
		{"card disagrees", func(a *Adapter) { a.Card.BaseModel = "other" }, `names base "other"`},
		{"file name with a path", func(a *Adapter) { a.Files["../x"] = nil }, `file name "../x"`},
		{"file name of PEFT's", func(a *Adapter) { a.Files[ConfigFile] = nil }, `file name "adapter_config.json"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			a := adapter([]string{"query", "key"})
			tc.edit(&a)
			err := Write(dir, a)
			if !errors.Is(err, ErrAdapter) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write = %v, want ErrAdapter mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("a refused adapter left %s behind (%v)", dir, err)
			}
		})
	}
}

func TestMatchesAndAdaptedModules(t *testing.T) {
	names := []string{"classifier.weight", "a.query.lora_A.weight", "a.query.lora_B.weight", "b.value.lora_B.weight"}
	if got := AdaptedModules(names); !slices.Equal(got, []string{"a.query", "b.value"}) {
		t.Fatalf("AdaptedModules = %q", got)
	}
	for _, tc := range []struct {
		targets []string
		module  string
		want    bool
	}{
		{[]string{"query"}, "a.query", true}, {[]string{"a.query"}, "a.query", true}, {[]string{"uery"}, "a.query", false},
		{[]string{"self.query"}, "x.self.query", true}, {[]string{AllLinear}, "a.query", false},
	} {
		if got := Matches(tc.targets, tc.module); got != tc.want {
			t.Errorf("Matches(%q, %s) = %v, want %v", tc.targets, tc.module, got, tc.want)
		}
	}
}
