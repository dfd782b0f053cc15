package shard

import "fmt"

// Defaults and limits of the data settings every run shares — `loraft train`,
// `loraft trainer` and `loraft data` flags, sweep specs and the trainer
// agent all read them here (DefaultRatios and ParseRatios are in split.go,
// DefaultMaxLen in tokens.go).
const (
	// DefaultSplitSeed is the split seed of a run that names none.
	DefaultSplitSeed = 42
	// MaxSeqLen is the longest maximum sequence length: BERT's position
	// table has 512 entries.
	MaxSeqLen = 512
)

// CheckMaxLen validates a maximum sequence length in tokens, [CLS] and
// [SEP] included: 2..MaxSeqLen.
func CheckMaxLen(n int) error {
	if n < 2 || n > MaxSeqLen {
		return fmt.Errorf("%d is outside 2..%d (BERT's position table has %d entries)", n, MaxSeqLen, MaxSeqLen)
	}
	return nil
}
