// Package model is BERT for sequence classification in gotch, with HF's
// parameter names: embeddings, N encoder layers whose Linear weights are
// frozen (NF4 or dense) and optionally carry LoRA adapters, a tanh pooler, and
// a trainable classifier head. It loads HF model.safetensors files or builds
// a seeded random-init model from a config. It knows nothing of gRPC or raft.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Config holds the fields of HF's BERT config.json that shape the model.
type Config struct {
	VocabSize        int     `json:"vocab_size"`
	HiddenSize       int     `json:"hidden_size"`
	NumLayers        int     `json:"num_hidden_layers"`
	NumHeads         int     `json:"num_attention_heads"`
	IntermediateSize int     `json:"intermediate_size"`
	MaxPositions     int     `json:"max_position_embeddings"`
	TypeVocabSize    int     `json:"type_vocab_size"`
	LayerNormEps     float64 `json:"layer_norm_eps"`
	HiddenDropout    float64 `json:"hidden_dropout_prob"`
	AttentionDropout float64 `json:"attention_probs_dropout_prob"`
	HiddenAct        string  `json:"hidden_act"`
	InitializerRange float64 `json:"initializer_range"`
	PadTokenID       int     `json:"pad_token_id"`
	NumLabels        int     `json:"num_labels,omitempty"`
	// ClassifierDropout is the dropout before the head; nil (JSON null) means hidden_dropout_prob.
	ClassifierDropout *float64 `json:"classifier_dropout"`
	// NameOrPath is the config.json's _name_or_path: the Hub id or path
	// transformers saved the model from (empty for Tiny and Base). It names
	// the base of an exported adapter; it does not shape the model.
	NameOrPath string `json:"_name_or_path,omitempty"`
	// ModelType is config.json's model_type; only "bert" (or unset) is built.
	ModelType string `json:"model_type,omitempty"`
	// PositionEmbeddingType is config.json's position_embedding_type; only
	// "absolute" (or unset) is built.
	PositionEmbeddingType string `json:"position_embedding_type,omitempty"`
}

// Base is bert-base-uncased's configuration.
func Base() Config {
	return Config{VocabSize: 30522, HiddenSize: 768, NumLayers: 12, NumHeads: 12, IntermediateSize: 3072,
		MaxPositions: 512, TypeVocabSize: 2, LayerNormEps: 1e-12, HiddenDropout: 0.1, AttentionDropout: 0.1,
		HiddenAct: "gelu", InitializerRange: 0.02}
}

// Tiny is google/bert_uncased_L-2_H-128_A-2 (bert-tiny): same vocabulary,
// 2 layers of width 128. Tests and demos train it from random init.
func Tiny() Config {
	c := Base()
	c.HiddenSize, c.NumLayers, c.NumHeads, c.IntermediateSize = 128, 2, 2, 512
	return c
}

// ErrConfig reports an unusable model configuration.
var ErrConfig = errors.New("invalid model config")

// Config names LoadConfig knows besides the path of a config.json.
const (
	// ConfigTiny is Tiny (bert-tiny).
	ConfigTiny = "tiny"
	// ConfigBase is Base (bert-base-uncased, also accepted by that name).
	ConfigBase = "base"
)

// DefaultConfigName is the config of a run that names none: ConfigBase when
// pretrained weights are given (loraft's weights are bert-base-uncased's),
// else ConfigTiny, a random-init base small enough for a demo on a CPU.
func DefaultConfigName(withWeights bool) string {
	if withWeights {
		return ConfigBase
	}
	return ConfigTiny
}

// ResolveConfig is how every run resolves its base model config — `loraft
// train` and `loraft trainer` flags (--config, --weights) and a sweep's
// train.config and train.weights on the trainer: an empty name becomes
// DefaultConfigName(withWeights), then LoadConfig reads it. It returns the
// name used, as manifests record it.
func ResolveConfig(name string, withWeights bool) (string, Config, error) {
	if name == "" {
		name = DefaultConfigName(withWeights)
	}
	c, err := LoadConfig(name)
	return name, c, err
}

// LoadConfig resolves "tiny", "base" or the path of an HF config.json.
func LoadConfig(spec string) (Config, error) {
	switch spec {
	case ConfigTiny:
		return Tiny(), nil
	case ConfigBase, "bert-base-uncased":
		return Base(), nil
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return Config{}, fmt.Errorf("model config %q (want tiny, base or a config.json): %w", spec, err)
	}
	c := Base() // fields a config.json leaves out keep BERT's defaults
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", spec, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", spec, err)
	}
	return c, nil
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	switch {
	case c.VocabSize < 1 || c.HiddenSize < 1 || c.NumLayers < 1 || c.NumHeads < 1 || c.IntermediateSize < 1 || c.MaxPositions < 1 || c.TypeVocabSize < 1:
		return fmt.Errorf("%w: sizes must be positive: %+v", ErrConfig, c)
	case c.HiddenSize%c.NumHeads != 0:
		return fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d", ErrConfig, c.HiddenSize, c.NumHeads)
	case c.ModelType != "" && c.ModelType != "bert":
		return fmt.Errorf("%w: model_type %q, only bert is implemented", ErrConfig, c.ModelType)
	case c.PositionEmbeddingType != "" && c.PositionEmbeddingType != "absolute":
		return fmt.Errorf("%w: position_embedding_type %q, only absolute is implemented", ErrConfig, c.PositionEmbeddingType)
	case c.HiddenAct != "gelu":
		return fmt.Errorf("%w: hidden_act %q, only gelu (erf) is implemented", ErrConfig, c.HiddenAct)
	case c.LayerNormEps <= 0 || c.LayerNormEps > 0.1:
		return fmt.Errorf("%w: layer_norm_eps %g, want a small positive number", ErrConfig, c.LayerNormEps)
	case c.ClassifierDropout != nil && (*c.ClassifierDropout < 0 || *c.ClassifierDropout >= 1):
		return fmt.Errorf("%w: classifier_dropout %g, want [0, 1)", ErrConfig, *c.ClassifierDropout)
	case c.HiddenDropout < 0 || c.HiddenDropout >= 1 || c.AttentionDropout < 0 || c.AttentionDropout >= 1:
		return fmt.Errorf("%w: dropout probabilities must be in [0, 1)", ErrConfig)
	}
	return nil
}

// classifierDropout is the dropout before the head (HF: classifier_dropout,
// or hidden_dropout_prob when it is null).
func (c Config) classifierDropout() float64 {
	if c.ClassifierDropout == nil {
		return c.HiddenDropout
	}
	return *c.ClassifierDropout
}
