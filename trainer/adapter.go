package trainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
)

// Files of an adapter directory. adapter_config.json and
// adapter_model.safetensors are what HF PEFT loads; loraft.json holds what
// loraft needs to rebuild the exact model (base, tokenizer, labels,
// temperature); vocab.txt makes the directory's tokenizer self-contained.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
	ManifestFile       = "loraft.json"
	MetricsFile        = "metrics.json"
	VocabFile          = "vocab.txt"
)

// pefPrefix is how PEFT prefixes the keys of a saved adapter.
const peftPrefix = "base_model.model."

// Base identifies the frozen base weights an adapter was trained on.
type Base struct {
	// ConfigName is "tiny", "base" or a config.json path as given.
	ConfigName string       `json:"config_name"`
	Config     model.Config `json:"config"`
	// Weights is the model.safetensors used and its sha256; empty for a
	// random-init base, which InitSeed rebuilds bit for bit.
	Weights       string      `json:"weights,omitempty"`
	WeightsSHA256 string      `json:"weights_sha256,omitempty"`
	InitSeed      uint64      `json:"init_seed"`
	Quant         model.Quant `json:"quant"`
	Compute       string      `json:"compute_dtype"`
}

// Tokenizer records how statements become ids.
type Tokenizer struct {
	VocabSHA256 string `json:"vocab_sha256"`
	MaxLen      int    `json:"max_len"`
	LowerCase   bool   `json:"do_lower_case"`
}

// Manifest is loraft.json.
type Manifest struct {
	Format      int             `json:"format"`
	Base        Base            `json:"base"`
	LoRA        lora.Config     `json:"lora"`
	Labels      []string        `json:"labels"`
	Tokenizer   Tokenizer       `json:"tokenizer"`
	Hyper       Hyper           `json:"hyperparameters"`
	Temperature float64         `json:"temperature"`
	Split       shard.SplitSpec `json:"split"`
	SplitID     string          `json:"split_id"`
	Steps       int             `json:"steps"`
	Disclaimer  string          `json:"disclaimer"`
}

// Disclaimer travels with every adapter.
const Disclaimer = "Screening and research aid only; not a diagnostic tool. Do not use it to make decisions about a person's care."

// peftConfig is PEFT's LoraConfig as adapter_config.json stores it.
type peftConfig struct {
	PeftType          string   `json:"peft_type"`
	TaskType          string   `json:"task_type"`
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

// SaveAdapter writes the adapter directory dir for a trained model; see WriteAdapter.
func SaveAdapter(dir string, m *model.Model, man Manifest, res *Result, vocab []byte) error {
	vals, err := m.ParamValues()
	if err != nil {
		return err
	}
	r := Reports{}
	if res != nil {
		r = Reports{Val: res.Val, Test: res.Test, History: res.History, Losses: res.Losses}
	}
	return WriteAdapter(dir, vals, man, r, vocab, "", man.Steps)
}

// Reports are the evaluation results an adapter directory records.
type Reports struct {
	Val, Test metrics.Report
	History   []EvalPoint
	Losses    []float64
}

// WriteAdapter writes an adapter directory that HF PEFT loads on the base
// model and loraft predict/eval use: adapter_config.json,
// adapter_model.safetensors (PEFT key names), loraft.json, metrics.json,
// vocab.txt and a README.md model card. Every file is written to a temporary
// name and renamed, so an interrupted write never leaves a half-written file
// under a final name.
func WriteAdapter(dir string, params map[string]*model.Tensor, man Manifest, r Reports, vocab []byte, run string, step int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adapter directory: %w", err)
	}
	w := &safetensors.Writer{}
	w.SetMetadata("format", "pt")
	var adapted []string
	for _, name := range sortedNames(params) {
		t := params[name]
		if err := w.AddFloat32(peftPrefix+name, t.Shape, t.Data); err != nil {
			return fmt.Errorf("adapter tensor %s: %w", name, err)
		}
		if mod, ok := strings.CutSuffix(name, ".lora_A.weight"); ok {
			adapted = append(adapted, mod)
		}
	}
	if err := w.WriteFile(filepath.Join(dir, AdapterWeightsFile)); err != nil {
		return err
	}
	base := baseModelName(man.Base)
	targets := man.LoRA.Targets
	if len(targets) == 1 && targets[0] == lora.AllLinear {
		targets = adapted
	}
	pc := peftConfig{PeftType: "LORA", TaskType: "SEQ_CLS", BaseModel: base, R: man.LoRA.Rank,
		LoraAlpha: man.LoRA.Alpha, LoraDropout: man.LoRA.Dropout, TargetModules: targets,
		ModulesToSave: []string{"classifier"}, Bias: "none", UseRSLoRA: man.LoRA.RSLoRA,
		InitLoraWeights: true, InferenceMode: true}
	man.Format, man.Disclaimer, man.Labels = 1, Disclaimer, shard.LabelNames()
	files := []struct {
		name string
		v    any
	}{{AdapterConfigFile, pc}, {ManifestFile, man},
		{MetricsFile, metricsFile{Val: r.Val, Test: r.Test, History: r.History, Losses: r.Losses, Temperature: man.Temperature}}}
	for _, f := range files {
		buf, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return err
		}
		if err := writeAtomic(filepath.Join(dir, f.name), append(buf, '\n')); err != nil {
			return err
		}
	}
	if run == "" {
		run = filepath.Base(dir)
	}
	card := checkpoint.ModelCard(cardFor(man, r, run, step))
	if err := writeAtomic(filepath.Join(dir, "README.md"), []byte(card)); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, VocabFile), vocab)
}

func baseModelName(b Base) string {
	if b.ConfigName == "base" || b.ConfigName == "bert-base-uncased" || b.Weights != "" {
		return "bert-base-uncased"
	}
	if b.ConfigName == "tiny" {
		return "google/bert_uncased_L-2_H-128_A-2"
	}
	return b.ConfigName
}

// cardFor fills a model card from an adapter's manifest and reports.
func cardFor(man Manifest, r Reports, run string, step int) checkpoint.Card {
	rep := r.Test
	if rep.N == 0 {
		rep = r.Val
	}
	h := man.Hyper
	return checkpoint.Card{
		BaseModel: baseModelName(man.Base), Labels: shard.LabelNames(), Run: run, Step: step,
		Dataset:     fmt.Sprintf("dataset sha256 %.16s…", man.Split.DatasetSHA256),
		SplitDesc:   fmt.Sprintf("stratified split %s with seed %d (id %s); test rows %d", man.Split.Ratios, man.Split.Seed, man.SplitID, r.Test.N),
		RandomBase:  man.Base.Weights == "",
		Temperature: man.Temperature,
		LoRA: map[string]string{"r": fmt.Sprint(man.LoRA.Rank), "alpha": fmt.Sprint(man.LoRA.Alpha), "dropout": fmt.Sprint(man.LoRA.Dropout),
			"targets": strings.Join(man.LoRA.Targets, "+"), "rslora": fmt.Sprint(man.LoRA.RSLoRA), "base storage": string(man.Base.Quant), "compute": man.Base.Compute},
		Hyper: map[string]string{"epochs": fmt.Sprint(h.Epochs), "batch": fmt.Sprint(h.BatchSize), "grad_accum": fmt.Sprint(h.GradAccum),
			"lr": fmt.Sprint(h.LR), "warmup_ratio": fmt.Sprint(h.WarmupRatio), "weight_decay": fmt.Sprint(h.WeightDecay),
			"max_grad_norm": fmt.Sprint(h.MaxGradNorm), "class_weights": fmt.Sprint(h.ClassWeights), "seed": fmt.Sprint(h.Seed),
			"max_len": fmt.Sprint(man.Tokenizer.MaxLen)},
		Metrics:    map[string]float64{"accuracy": rep.Accuracy, "macro_f1": rep.MacroF1, "weighted_f1": rep.WeightedF1, "ece": rep.ECE, "nll": rep.NLL},
		EvalTables: rep.MarkdownTable(),
	}
}

type metricsFile struct {
	Val         metrics.Report `json:"validation"`
	Test        metrics.Report `json:"test"`
	Temperature float64        `json:"temperature"`
	History     []EvalPoint    `json:"history"`
	Losses      []float64      `json:"train_loss"`
}

// ErrAdapter reports an adapter directory loraft cannot use.
var ErrAdapter = errors.New("unusable adapter directory")

// LoadManifest reads dir's loraft.json.
func LoadManifest(dir string) (Manifest, error) {
	var man Manifest
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return man, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		return man, fmt.Errorf("%w: %s: %v", ErrAdapter, filepath.Join(dir, ManifestFile), err)
	}
	if man.Format != 1 {
		return man, fmt.Errorf("%w: %s has format %d, this loraft reads 1", ErrAdapter, filepath.Join(dir, ManifestFile), man.Format)
	}
	return man, nil
}

// LoadAdapterParams reads dir's adapter_model.safetensors into Param names.
func LoadAdapterParams(dir string) (map[string]*model.Tensor, error) {
	f, err := safetensors.Open(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	out := map[string]*model.Tensor{}
	for _, k := range f.Names() {
		data, shape, err := f.Float32(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrAdapter, err)
		}
		out[strings.TrimPrefix(k, peftPrefix)] = &model.Tensor{Shape: shape, Data: data}
	}
	return out, nil
}

// FileSHA256 hashes a file (the weights' identity in a manifest).
func FileSHA256(path string) (string, error) { return checkpoint.FileSHA256(path) }

func writeAtomic(path string, data []byte) error { return atomicfile.WriteFile(path, data, 0o644) }
