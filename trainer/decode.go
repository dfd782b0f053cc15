package trainer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"

	"github.com/loraft/loraft/shard"
)

// A run's manifest and state.json come back from the store or an adapter
// directory, which others can write: they are decoded with a size limit and
// checked field by field before anything is allocated from them (a manifest
// naming a model of a billion layers must be an error, not an
// out-of-memory kill).

// ErrBadState reports a state.json or manifest whose content loraft refuses.
var ErrBadState = errors.New("invalid run state")

// maxJSONBytes bounds a state.json or loraft.json: a real one, with a
// loss per step and an evaluation history, is well under a megabyte even
// for long runs.
const maxJSONBytes = 16 << 20

// Ceilings of a base model a manifest may describe: well above
// bert-large-uncased (1024 hidden, 24 layers, 16 heads, 4096 intermediate,
// 512 positions), far below what would not fit in memory.
const (
	maxVocab        = 1 << 20
	maxHidden       = 8192
	maxLayers       = 128
	maxIntermediate = 32768
	maxPositions    = 1 << 16
	maxTypeVocab    = 64
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// decodeJSON decodes exactly one JSON value of at most maxJSONBytes into v.
func decodeJSON(data []byte, v any) error {
	if len(data) > maxJSONBytes {
		return fmt.Errorf("%d bytes, more than the %d allowed", len(data), maxJSONBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// ParseManifest decodes and validates a manifest (loraft.json, or the one
// in a state.json); name says where it came from, for errors.
func ParseManifest(data []byte, name string) (Manifest, error) {
	var m Manifest
	if err := decodeJSON(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %s: %w", ErrBadState, name, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// badField is a validation error naming the field.
func badField(field, format string, args ...any) error {
	return fmt.Errorf("%w: field %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
}

// Validate checks an adapter's manifest (loraft.json), which WriteAdapter
// completes: format 1, the seven labels, a usable max length, and what
// validateModel checks. The error wraps ErrBadState and names the field.
func (m *Manifest) Validate() error {
	switch {
	case m.Format != 1:
		return badField("format", "%d, this loraft reads 1", m.Format)
	case len(m.Labels) != shard.NumLabels:
		return badField("labels", "%d labels, want %d", len(m.Labels), shard.NumLabels)
	case m.Tokenizer.MaxLen < 2:
		return badField("tokenizer.max_len", "%d, want at least 2", m.Tokenizer.MaxLen)
	}
	return m.validateModel()
}

// validateModel checks the fields a run rebuilds its model and schedule
// from, which a checkpoint's state.json carries (its manifest has no
// format or labels yet): the base model's shape within the ceilings above,
// LoRA, hyperparameters, max length, temperature and steps.
func (m *Manifest) validateModel() error {
	bad := badField
	c := m.Base.Config
	switch {
	case c.VocabSize > maxVocab:
		return bad("base.config.vocab_size", "%d, more than %d", c.VocabSize, maxVocab)
	case c.HiddenSize > maxHidden:
		return bad("base.config.hidden_size", "%d, more than %d", c.HiddenSize, maxHidden)
	case c.NumLayers > maxLayers:
		return bad("base.config.num_hidden_layers", "%d, more than %d", c.NumLayers, maxLayers)
	case c.IntermediateSize > maxIntermediate:
		return bad("base.config.intermediate_size", "%d, more than %d", c.IntermediateSize, maxIntermediate)
	case c.MaxPositions > maxPositions:
		return bad("base.config.max_position_embeddings", "%d, more than %d", c.MaxPositions, maxPositions)
	case c.TypeVocabSize > maxTypeVocab:
		return bad("base.config.type_vocab_size", "%d, more than %d", c.TypeVocabSize, maxTypeVocab)
	}
	if err := c.Validate(); err != nil {
		return bad("base.config", "%v", err)
	}
	if m.Base.WeightsSHA256 != "" && !hexSHA256.MatchString(m.Base.WeightsSHA256) {
		return bad("base.weights_sha256", "%q is not 64 lowercase hex digits", m.Base.WeightsSHA256)
	}
	if err := m.LoRA.Validate(); err != nil {
		return bad("lora", "%v", err)
	}
	if m.Tokenizer.MaxLen < 0 || m.Tokenizer.MaxLen > c.MaxPositions {
		return bad("tokenizer.max_len", "%d, want at most the model's %d positions", m.Tokenizer.MaxLen, c.MaxPositions)
	}
	if err := m.Hyper.Validate(); err != nil {
		return bad("hyperparameters", "%v", err)
	}
	if math.IsNaN(m.Temperature) || math.IsInf(m.Temperature, 0) || m.Temperature < 0 {
		return bad("temperature", "%v, want a finite number ≥ 0", m.Temperature)
	}
	if m.Steps < 0 {
		return bad("steps", "%d is negative", m.Steps)
	}
	return nil
}

// ParseState decodes and validates a checkpoint's state.json (without its
// tensors, which StateFromFiles reads from the safetensors objects).
func ParseState(data []byte) (*State, error) {
	s := &State{}
	if err := decodeJSON(data, s); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadState, stateFile, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	return s, nil
}

// validate checks a decoded state's fields; the error wraps ErrBadState
// and names the field.
func (s *State) validate() error {
	bad := badField
	switch {
	case s.Step < 0:
		return bad("step", "%d is negative", s.Step)
	case s.Epoch < 0:
		return bad("epoch", "%d is negative", s.Epoch)
	case s.Batch < 0:
		return bad("batch", "%d is negative", s.Batch)
	case s.OptStep < 0:
		return bad("opt_step", "%d is negative", s.OptStep)
	case s.WorldSize < 0:
		return bad("world_size", "%d is negative", s.WorldSize)
	case math.IsNaN(s.LR) || math.IsInf(s.LR, 0) || s.LR < 0:
		return bad("lr", "%v, want a finite number ≥ 0", s.LR)
	case s.DatasetSHA256 != "" && !hexSHA256.MatchString(s.DatasetSHA256):
		return bad("dataset_sha256", "%q is not 64 lowercase hex digits", s.DatasetSHA256)
	case s.Manifest.Steps > 0 && s.Step > s.Manifest.Steps:
		return bad("step", "%d, past the run's %d steps", s.Step, s.Manifest.Steps)
	}
	if err := s.Manifest.validateModel(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}
