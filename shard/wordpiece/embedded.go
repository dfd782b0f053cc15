package wordpiece

import (
	"bytes"
	_ "embed"
)

// bertBaseUncasedVocab is bert-base-uncased's vocab.txt (30,522 tokens,
// Apache-2.0, sha256 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3),
// embedded so the one binary tokenizes like HF's bert-base-uncased with
// nothing to download.
//
//go:embed vocab/bert-base-uncased.txt
var bertBaseUncasedVocab []byte

// BertBaseUncased returns the tokenizer of bert-base-uncased from the
// embedded vocabulary.
func BertBaseUncased() (*Tokenizer, error) {
	return New(bytes.NewReader(bertBaseUncasedVocab), "bert-base-uncased vocab.txt (embedded)")
}

// BertBaseUncasedVocab returns a copy of the embedded vocab.txt bytes.
func BertBaseUncasedVocab() []byte { return bytes.Clone(bertBaseUncasedVocab) }
