// Package peft writes and reads adapter directories in Hugging Face PEFT's
// format, the form in which loraft hands a trained adapter to its user:
//
//	adapter_config.json        PEFT's LoraConfig (LoraConfig here)
//	adapter_model.safetensors  the LoRA A/B tensors and the saved classifier, under PEFT's key names
//	README.md                  the model card (Card), with the YAML front matter the Hub reads
//
// plus whatever other files the caller adds (loraft adds its manifest,
// metrics and vocabulary). PeftModel.from_pretrained loads such a directory
// on top of the base model that adapter_config.json names.
//
// The package works on host float32 tensors and plain values: it knows
// nothing of gotch, of the model that produced the tensors, of checkpoints'
// storage or of raft. Package trainer fills an Adapter from a trained model
// or a checkpoint's state (trainer.WriteAdapter); the dependency runs
// cmd → trainer → checkpoint/peft, never back.
//
// Write refuses an adapter PEFT would load wrongly without a word: a LoRA
// tensor whose module target_modules does not match (PEFT would skip it), or
// "all-linear" inside the target_modules list (PEFT reads "all-linear" only
// as the whole value, never as a list element).
package peft

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/internal/atomicfile"
)

// Files of a PEFT adapter directory.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
	CardFile    = "README.md"
)

// KeyPrefix is how PEFT prefixes the keys of a saved adapter: the model's
// own parameter names sit under the PeftModel's base_model.model.
const KeyPrefix = "base_model.model."

// AllLinear is PEFT's target_modules shorthand for every Linear layer but
// the output head. PEFT expands it only when it is the whole value (a
// string), so an adapter directory lists module names instead.
const AllLinear = "all-linear"

// Suffixes of a LoRA layer's tensors in PEFT's saved key names.
const (
	loraA = ".lora_A.weight"
	loraB = ".lora_B.weight"
)

// ErrAdapter reports an adapter that PEFT would not load as written.
var ErrAdapter = errors.New("invalid PEFT adapter")

// Tensor is a float32 host tensor in C order.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// LoraConfig is PEFT's LoraConfig as adapter_config.json stores it.
type LoraConfig struct {
	PeftType string `json:"peft_type"`
	TaskType string `json:"task_type"`
	// BaseModel is the base model's Hub id or local path: what
	// AutoPeftModel loads the adapter on, and the card's base_model.
	BaseModel         string   `json:"base_model_name_or_path"`
	R                 int      `json:"r"`
	LoraAlpha         float64  `json:"lora_alpha"`
	LoraDropout       float64  `json:"lora_dropout"`
	TargetModules     []string `json:"target_modules"`
	ModulesToSave     []string `json:"modules_to_save"`
	Bias              string   `json:"bias"`
	UseRSLoRA         bool     `json:"use_rslora"`
	FanInFanOut       bool     `json:"fan_in_fan_out"`
	InitLoraWeights   bool     `json:"init_lora_weights"`
	InferenceMode     bool     `json:"inference_mode"`
	Revision          *string  `json:"revision"`
	LayersToTransform *int     `json:"layers_to_transform"`
}

// SeqClsConfig is the LoraConfig of a sequence-classification adapter as
// loraft trains it: LoRA on targets, a fully trained classifier head saved
// with the adapter, no bias training, ready for inference.
func SeqClsConfig(base string, r int, alpha, dropout float64, targets []string, rslora bool) LoraConfig {
	return LoraConfig{PeftType: "LORA", TaskType: "SEQ_CLS", BaseModel: base, R: r,
		LoraAlpha: alpha, LoraDropout: dropout, TargetModules: slices.Clone(targets),
		ModulesToSave: []string{"classifier"}, Bias: "none", UseRSLoRA: rslora,
		InitLoraWeights: true, InferenceMode: true}
}

// Matches reports whether PEFT adapts module (a dotted path such as
// "bert.encoder.layer.0.attention.self.query") for a target_modules list: a
// target matches when it equals the path or is its last dotted components.
func Matches(targets []string, module string) bool {
	for _, t := range targets {
		if module == t || strings.HasSuffix(module, "."+t) {
			return true
		}
	}
	return false
}

// AdaptedModules lists, sorted, the modules that tensor names (without
// KeyPrefix) give LoRA tensors.
func AdaptedModules(names []string) []string {
	var out []string
	for _, n := range names {
		if mod, ok := strings.CutSuffix(n, loraA); ok {
			out = append(out, mod)
		} else if mod, ok := strings.CutSuffix(n, loraB); ok {
			out = append(out, mod)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Validate checks the config against the tensor names (without KeyPrefix)
// it is written with: the fields PEFT needs are set, no target is
// "all-linear", and every LoRA tensor's module is a target.
func (c LoraConfig) Validate(names []string) error {
	switch {
	case c.BaseModel == "":
		return fmt.Errorf("%w: %s has no base_model_name_or_path", ErrAdapter, ConfigFile)
	case c.R < 1:
		return fmt.Errorf("%w: %s r = %d, want ≥ 1", ErrAdapter, ConfigFile, c.R)
	case len(c.TargetModules) == 0:
		return fmt.Errorf("%w: %s has no target_modules", ErrAdapter, ConfigFile)
	case slices.Contains(c.TargetModules, AllLinear):
		return fmt.Errorf("%w: %s target_modules %q: PEFT reads %q in a list as a module name that matches nothing; list the adapted modules",
			ErrAdapter, ConfigFile, c.TargetModules, AllLinear)
	}
	for _, mod := range AdaptedModules(names) {
		if !Matches(c.TargetModules, mod) {
			return fmt.Errorf("%w: %s target_modules %q do not match %s, so PEFT would drop its LoRA tensors",
				ErrAdapter, ConfigFile, c.TargetModules, mod)
		}
	}
	return nil
}

// Adapter is the content of one adapter directory.
type Adapter struct {
	Config LoraConfig
	// Tensors are the adapter's tensors by the model's parameter names
	// (Write adds KeyPrefix): "<module>.lora_A.weight" and
	// "<module>.lora_B.weight" for every adapted module, and the tensors of
	// Config.ModulesToSave ("classifier.weight", …).
	Tensors map[string]*Tensor
	// Card is the README.md; its BaseModel is Config.BaseModel (Write fills
	// it in when empty and refuses a different one).
	Card Card
	// Files are further files of the directory, name → content, e.g.
	// loraft's manifest and the tokenizer's vocab.txt.
	Files map[string][]byte
}

// Write writes a into dir (created when missing): the weights, the config,
// the further files in name order, then the model card. Each file is
// written to a temporary name and renamed, so an interrupted write never
// leaves a half-written file under a final name. An adapter PEFT would load
// wrongly (LoraConfig.Validate) is an error wrapping ErrAdapter, and nothing
// is written.
func Write(dir string, a Adapter) error {
	names := make([]string, 0, len(a.Tensors))
	for n := range a.Tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	if err := a.Config.Validate(names); err != nil {
		return err
	}
	switch a.Card.BaseModel {
	case "":
		a.Card.BaseModel = a.Config.BaseModel
	case a.Config.BaseModel:
	default:
		return fmt.Errorf("%w: the model card names base %q, %s names %q", ErrAdapter, a.Card.BaseModel, ConfigFile, a.Config.BaseModel)
	}
	extra := make([]string, 0, len(a.Files))
	for name := range a.Files {
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." || name == ConfigFile || name == WeightsFile || name == CardFile {
			return fmt.Errorf("%w: file name %q (want a plain name other than PEFT's own files)", ErrAdapter, name)
		}
		extra = append(extra, name)
	}
	slices.Sort(extra)

	w := &safetensors.Writer{}
	w.SetMetadata("format", "pt")
	for _, n := range names {
		t := a.Tensors[n]
		if err := w.AddFloat32(KeyPrefix+n, t.Shape, t.Data); err != nil {
			return fmt.Errorf("adapter tensor %s: %w", n, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adapter directory: %w", err)
	}
	if err := w.WriteFile(filepath.Join(dir, WeightsFile)); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(a.Config, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(dir, ConfigFile, append(cfg, '\n')); err != nil {
		return err
	}
	for _, name := range extra {
		if err := writeFile(dir, name, a.Files[name]); err != nil {
			return err
		}
	}
	return writeFile(dir, CardFile, []byte(ModelCard(a.Card)))
}

func writeFile(dir, name string, data []byte) error {
	return atomicfile.WriteFile(filepath.Join(dir, name), data, 0o644)
}

// ReadConfig reads dir's adapter_config.json.
func ReadConfig(dir string) (LoraConfig, error) {
	var c LoraConfig
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ReadTensors reads dir's adapter_model.safetensors, by the model's
// parameter names (KeyPrefix removed).
func ReadTensors(dir string) (map[string]*Tensor, error) {
	f, err := safetensors.Open(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, err
	}
	out := map[string]*Tensor{}
	for _, k := range f.Names() {
		data, shape, err := f.Float32(k)
		if err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(k, KeyPrefix)] = &Tensor{Shape: shape, Data: data}
	}
	return out, nil
}
