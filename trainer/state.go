package trainer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/optim"
)

// State is everything a run needs to continue exactly where it stopped:
// trainable tensors, AdamW moments and step, the step counter (which fixes
// the epoch, the position in the epoch's order, the learning rate and the
// per-step RNG seed), the loss and evaluation history, and the manifest that
// rebuilds the model.
type State struct {
	// Step is the number of optimizer steps done.
	Step int `json:"step"`
	// Epoch and Batch are the data cursor: the next step reads batch Batch of epoch Epoch.
	Epoch int `json:"epoch"`
	Batch int `json:"batch"`
	// OptStep is AdamW's update count (equal to Step for single-node runs).
	OptStep int64 `json:"opt_step"`
	// LR is the learning rate of the last update (the schedule is a function of Step).
	LR float64 `json:"lr"`
	// WorldSize and Generation identify the assignment that wrote the state.
	WorldSize  int    `json:"world_size"`
	Generation uint64 `json:"generation"`
	// DatasetSHA256 guards against resuming on other data.
	DatasetSHA256 string      `json:"dataset_sha256"`
	Losses        []float64   `json:"losses"`
	History       []EvalPoint `json:"history"`
	// Val and Test are the final (calibrated) reports; zero before the end.
	Val      metrics.Report `json:"validation"`
	Test     metrics.Report `json:"test"`
	Manifest Manifest       `json:"manifest"`

	Params map[string]*model.Tensor `json:"-"`
	M, V   map[string]*model.Tensor `json:"-"`
}

// Object names of a training checkpoint.
const (
	stateFile     = "state.json"
	paramsFile    = "adapter.safetensors"
	optimizerFile = "optimizer.safetensors"
	ckptVocabFile = "vocab.txt"
)

// Files serialises the state into checkpoint objects; vocab is the tokenizer's vocab.txt.
func (s *State) Files(vocab []byte) (map[string][]byte, error) {
	sj, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	pw, ow := &safetensors.Writer{}, &safetensors.Writer{}
	for n, t := range s.Params {
		if err := pw.AddFloat32(n, t.Shape, t.Data); err != nil {
			return nil, err
		}
	}
	for n, t := range s.M {
		if err := ow.AddFloat32("exp_avg."+n, t.Shape, t.Data); err != nil {
			return nil, err
		}
	}
	for n, t := range s.V {
		if err := ow.AddFloat32("exp_avg_sq."+n, t.Shape, t.Data); err != nil {
			return nil, err
		}
	}
	pb, err := pw.Bytes()
	if err != nil {
		return nil, err
	}
	ob, err := ow.Bytes()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{stateFile: sj, paramsFile: pb, optimizerFile: ob, ckptVocabFile: vocab}, nil
}

// StateFromFiles reads a state back from checkpoint objects; it also returns the vocab.
func StateFromFiles(files map[string][]byte) (*State, []byte, error) {
	sj, ok := files[stateFile]
	if !ok {
		return nil, nil, fmt.Errorf("checkpoint has no %s", stateFile)
	}
	s, err := ParseState(sj)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	read := func(name string) (map[string]*model.Tensor, error) {
		f, err := safetensors.Parse(files[name], name)
		if err != nil {
			return nil, err
		}
		out := map[string]*model.Tensor{}
		for _, n := range f.Names() {
			data, shape, err := f.Float32(n)
			if err != nil {
				return nil, err
			}
			out[n] = &model.Tensor{Shape: shape, Data: data}
		}
		return out, nil
	}
	if s.Params, err = read(paramsFile); err != nil {
		return nil, nil, err
	}
	opt, err := read(optimizerFile)
	if err != nil {
		return nil, nil, err
	}
	s.M, s.V = map[string]*model.Tensor{}, map[string]*model.Tensor{}
	for n, t := range opt {
		switch {
		case strings.HasPrefix(n, "exp_avg_sq."):
			s.V[strings.TrimPrefix(n, "exp_avg_sq.")] = t
		case strings.HasPrefix(n, "exp_avg."):
			s.M[strings.TrimPrefix(n, "exp_avg.")] = t
		default:
			return nil, nil, fmt.Errorf("checkpoint %s: unexpected tensor %s", optimizerFile, n)
		}
	}
	return s, files[ckptVocabFile], nil
}

// snapshot copies the run's state to the host for a checkpoint.
func snapshot(m *model.Model, opt *optim.AdamW, d *Data, step, stepsPerEpoch int, lr float64, res *Result, man Manifest) (*State, error) {
	params, err := m.ParamValues()
	if err != nil {
		return nil, err
	}
	mm, vv, err := opt.Moments()
	if err != nil {
		return nil, err
	}
	man.Temperature = res.Temperature
	return &State{Step: step, Epoch: step / stepsPerEpoch, Batch: step % stepsPerEpoch, OptStep: opt.Step, LR: lr,
		WorldSize: 1, DatasetSHA256: d.DS.SHA256, Losses: slices.Clone(res.Losses), History: slices.Clone(res.History),
		Val: res.Val, Test: res.Test, Manifest: man, Params: params, M: mm, V: vv}, nil
}
