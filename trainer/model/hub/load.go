package hub

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/loraft/loraft/trainer/model"
)

// MaxJSONBytes bounds config.json and tokenizer_config.json.
const MaxJSONBytes = 4 << 20

// ModelConfig reads the base's config.json (model.LoadConfig: BERT only,
// gelu only, sizes checked against each other).
func (b Base) ModelConfig() (model.Config, error) {
	if b.Config == "" {
		return model.Config{}, fmt.Errorf("base %s has no %s (pass --config)", b.Spec, ConfigFile)
	}
	if err := checkSize(b.Config); err != nil {
		return model.Config{}, err
	}
	return model.LoadConfig(b.Config)
}

// LowerCase is tokenizer_config.json's do_lower_case: false for cased BERTs.
// Without the file, or without the field, it is true (BertTokenizer's
// default).
func (b Base) LowerCase() (bool, error) {
	if b.TokenizerConfig == "" {
		return true, nil
	}
	if err := checkSize(b.TokenizerConfig); err != nil {
		return false, err
	}
	data, err := os.ReadFile(b.TokenizerConfig)
	if err != nil {
		return false, fmt.Errorf("reading tokenizer config: %w", err)
	}
	var tc struct {
		DoLowerCase  *bool `json:"do_lower_case"`
		StripAccents *bool `json:"strip_accents"`
	}
	if err := json.Unmarshal(data, &tc); err != nil {
		return false, fmt.Errorf("tokenizer config %s: %w", b.TokenizerConfig, err)
	}
	lower := tc.DoLowerCase == nil || *tc.DoLowerCase
	if tc.StripAccents != nil && *tc.StripAccents != lower {
		// BertTokenizer strips accents exactly when it lowercases unless
		// strip_accents says otherwise; loraft implements those two pairings.
		return false, fmt.Errorf("tokenizer config %s: strip_accents %v with do_lower_case %v is not supported", b.TokenizerConfig, *tc.StripAccents, lower)
	}
	return lower, nil
}

// VocabBytes reads the base's vocab.txt.
func (b Base) VocabBytes() ([]byte, error) {
	if b.Vocab == "" {
		return nil, fmt.Errorf("base %s has no %s (pass --vocab)", b.Spec, VocabFile)
	}
	data, err := os.ReadFile(b.Vocab)
	if err != nil {
		return nil, fmt.Errorf("reading vocabulary: %w", err)
	}
	return data, nil
}

// LoadWeights reads the base's weights for c (model.LoadWeights: every
// missing, unexpected or mis-shaped key in one error).
func (b Base) LoadWeights(c model.Config, labels int) (model.Weights, *model.Tensor, *model.Tensor, error) {
	return model.LoadWeights(b.Weights, c, labels)
}

func checkSize(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	if st.Size() > MaxJSONBytes {
		return fmt.Errorf("%s is %d bytes, over the %d limit", p, st.Size(), MaxJSONBytes)
	}
	return nil
}
