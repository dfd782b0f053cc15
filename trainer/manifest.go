package trainer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
)

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

// NameOrPath is the base an exported adapter names (adapter_config.json's
// base_model_name_or_path and the model card's base_model), which PEFT
// loads the adapter on:
//   - pretrained weights whose config.json records _name_or_path: that name;
//   - other pretrained weights in bert-base-uncased's shape (--config base,
//     or a config.json of that shape): "bert-base-uncased";
//   - any other pretrained weights: the weights file, as recorded;
//   - a random-init base: a description such as "random-init bert-tiny
//     (loraft test config, init seed 0)", since no published model holds
//     its weights (only loraft, from the config and seed, rebuilds them).
func (b Base) NameOrPath() string {
	c := b.Config
	if b.Weights == "" {
		what, from := fmt.Sprintf("BERT L-%d H-%d A-%d", c.NumLayers, c.HiddenSize, c.NumHeads), "loraft"
		switch {
		case sameShape(c, model.Tiny()):
			what, from = "bert-tiny", "loraft test config"
		case sameShape(c, model.Base()):
			what = "bert-base-uncased shape"
		case c.NameOrPath != "":
			what = c.NameOrPath + " shape"
		}
		return fmt.Sprintf("random-init %s (%s, init seed %d)", what, from, b.InitSeed)
	}
	switch {
	case c.NameOrPath != "":
		return c.NameOrPath
	case sameShape(c, model.Base()):
		return "bert-base-uncased"
	}
	return b.Weights
}

// sameShape reports whether two configs build models of the same architecture.
func sameShape(a, b model.Config) bool {
	return a.VocabSize == b.VocabSize && a.HiddenSize == b.HiddenSize && a.NumLayers == b.NumLayers && a.NumHeads == b.NumHeads &&
		a.IntermediateSize == b.IntermediateSize && a.MaxPositions == b.MaxPositions && a.TypeVocabSize == b.TypeVocabSize
}

// Tokenizer records how statements become ids.
type Tokenizer struct {
	VocabSHA256 string `json:"vocab_sha256"`
	MaxLen      int    `json:"max_len"`
	LowerCase   bool   `json:"do_lower_case"`
}

// Manifest is what a run trains with, everything needed to rebuild its
// model exactly: stored in every checkpoint (State.Manifest) and, as
// loraft.json, in every adapter directory.
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

// ErrAdapter reports an adapter directory loraft cannot use.
var ErrAdapter = errors.New("unusable adapter directory")

// LoadManifest reads dir's loraft.json.
func LoadManifest(dir string) (Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrAdapter, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSONBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: reading %s: %v", ErrAdapter, path, err)
	}
	man, err := ParseManifest(data, path)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrAdapter, err)
	}
	return man, nil
}
