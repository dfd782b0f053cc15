package trainer

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/loraft/loraft/checkpoint/peft"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// Files loraft adds to an adapter directory beside PEFT's own
// (checkpoint/peft): loraft.json holds what loraft needs to rebuild the exact
// model (base, tokenizer, labels, temperature), metrics.json the evaluation,
// and vocab.txt makes the directory's tokenizer self-contained.
const (
	ManifestFile = "loraft.json"
	MetricsFile  = "metrics.json"
	VocabFile    = "vocab.txt"
)

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
// model (Base.NameOrPath) and loraft predict/eval use: PEFT's
// adapter_config.json, adapter_model.safetensors and README.md model card
// (peft.Write), plus loraft.json, metrics.json and vocab.txt. params are the
// model's trainable tensors by Param name (model.ParamValues, State.Params);
// run and step name the checkpoint in the card (run "": dir's name). Every
// file is written to a temporary name and renamed, so an interrupted write
// never leaves a half-written file under a final name.
func WriteAdapter(dir string, params map[string]*model.Tensor, man Manifest, r Reports, vocab []byte, run string, step int) error {
	tensors := make(map[string]*peft.Tensor, len(params))
	names := make([]string, 0, len(params))
	for n, t := range params {
		tensors[n] = (*peft.Tensor)(t)
		names = append(names, n)
	}
	pc := peft.SeqClsConfig(man.Base.NameOrPath(), man.LoRA.Rank, man.LoRA.Alpha, man.LoRA.Dropout,
		peftTargets(man.LoRA.Targets, peft.AdaptedModules(names)), man.LoRA.RSLoRA)
	man.Format, man.Disclaimer, man.Labels = 1, Disclaimer, shard.LabelNames()
	files := map[string][]byte{VocabFile: vocab}
	for name, v := range map[string]any{ManifestFile: man,
		MetricsFile: metricsFile{Val: r.Val, Test: r.Test, History: r.History, Losses: r.Losses, Temperature: man.Temperature}} {
		buf, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		files[name] = append(buf, '\n')
	}
	if run == "" {
		run = filepath.Base(dir)
	}
	if err := peft.Write(dir, peft.Adapter{Config: pc, Tensors: tensors, Card: cardFor(man, r, run, step), Files: files}); err != nil {
		return fmt.Errorf("adapter %s: %w", dir, err)
	}
	return nil
}

// peftTargets is adapter_config.json's target_modules for LoRA targets and
// the modules the model adapted: the names as given, or, when they include
// all-linear, the adapted modules by path. lora.Config.Matches reads a list
// with all-linear as every Linear but the classifier, whatever names come
// with it (lora.ParseTargets keeps the list as written), while PEFT expands
// "all-linear" only as the whole value, never inside a list: written
// literally it would adapt the named modules alone and drop the rest.
func peftTargets(targets, adapted []string) []string {
	if slices.Contains(targets, lora.AllLinear) {
		return adapted
	}
	return targets
}

// cardFor fills a model card from an adapter's manifest and reports.
func cardFor(man Manifest, r Reports, run string, step int) peft.Card {
	rep := r.Test
	if rep.N == 0 {
		rep = r.Val
	}
	targets := strings.Join(man.LoRA.Targets, "+")
	if slices.Contains(man.LoRA.Targets, lora.AllLinear) {
		targets = lora.AllLinear
	}
	h := man.Hyper
	return peft.Card{
		BaseModel: man.Base.NameOrPath(), Labels: shard.LabelNames(), Run: run, Step: step,
		Dataset:     fmt.Sprintf("dataset sha256 %.16s…", man.Split.DatasetSHA256),
		SplitDesc:   fmt.Sprintf("stratified split %s with seed %d (id %s); test rows %d", man.Split.Ratios, man.Split.Seed, man.SplitID, r.Test.N),
		RandomBase:  man.Base.Weights == "",
		Temperature: man.Temperature,
		LoRA: map[string]string{"r": fmt.Sprint(man.LoRA.Rank), "alpha": fmt.Sprint(man.LoRA.Alpha), "dropout": fmt.Sprint(man.LoRA.Dropout),
			"targets": targets, "rslora": fmt.Sprint(man.LoRA.RSLoRA), "base storage": string(man.Base.Quant), "compute": man.Base.Compute},
		Hyper: map[string]string{"epochs": fmt.Sprint(h.Epochs), "batch": fmt.Sprint(h.BatchSize), "grad_accum": fmt.Sprint(h.GradAccum),
			"lr": fmt.Sprint(h.LR), "warmup_ratio": fmt.Sprint(h.WarmupRatio), "weight_decay": fmt.Sprint(h.WeightDecay),
			"max_grad_norm": fmt.Sprint(h.MaxGradNorm), "class_weights": fmt.Sprint(h.ClassWeights), "seed": fmt.Sprint(h.Seed),
			"max_len": fmt.Sprint(man.Tokenizer.MaxLen)},
		Metrics:    rep.Scores(),
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

// LoadAdapterParams reads dir's adapter_model.safetensors into Param names.
func LoadAdapterParams(dir string) (map[string]*model.Tensor, error) {
	ts, err := peft.ReadTensors(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	out := make(map[string]*model.Tensor, len(ts))
	for n, t := range ts {
		out[n] = (*model.Tensor)(t)
	}
	return out, nil
}

// OpenAdapter rebuilds the model an adapter directory was trained as: the
// same base (weightsPath overrides the recorded weights file), the adapter's
// LoRA tensors and classifier.
func OpenAdapter(dir, weightsPath string, device gotch.Device) (*model.Model, Manifest, error) {
	man, err := LoadManifest(dir)
	if err != nil {
		return nil, man, err
	}
	compute, err := ParseCompute(man.Base.Compute)
	if err != nil {
		return nil, man, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	params, err := LoadAdapterParams(dir)
	if err != nil {
		return nil, man, err
	}
	w, _, _, err := BaseWeights(man.Base, weightsPath)
	if err != nil {
		return nil, man, err
	}
	m, err := model.New(man.Base.Config, w, nil, nil, model.Options{Quant: man.Base.Quant, Compute: compute,
		Device: device, LoRA: man.LoRA, Labels: len(man.Labels), Seed: man.Hyper.Seed, ReleaseHost: true})
	if err != nil {
		return nil, man, err
	}
	if err := m.SetParams(params); err != nil {
		m.Drop()
		return nil, man, fmt.Errorf("%w: %s: %v", ErrAdapter, dir, err)
	}
	return m, man, nil
}

// WriteAdapterFromCheckpoint writes a stored checkpoint (its loaded files,
// of run at step) as a PEFT adapter directory with a model card: what
// `loraft adapter pull` and `loraft serve --sweep` hand out.
func WriteAdapterFromCheckpoint(files map[string][]byte, run string, step int, out string) error {
	st, vocab, err := StateFromFiles(files)
	if err != nil {
		return fmt.Errorf("checkpoint %s step %d: %w", run, step, err)
	}
	rep := Reports{Val: st.Val, Test: st.Test, History: st.History, Losses: st.Losses}
	if rep.Val.N == 0 && len(st.History) > 0 {
		rep.Val = st.History[len(st.History)-1].Report
	}
	return WriteAdapter(out, st.Params, st.Manifest, rep, vocab, run, step)
}
