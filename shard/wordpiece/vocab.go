package wordpiece

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"unicode/utf8"
)

// Errors that Load and New wrap; test for them with errors.Is.
var (
	// ErrEmptyVocab: the vocabulary file holds no tokens.
	ErrEmptyVocab = errors.New("empty vocabulary")
	// ErrDuplicateToken: a token appears on two lines.
	ErrDuplicateToken = errors.New("duplicate token")
	// ErrEmptyToken: an empty line before the last token.
	ErrEmptyToken = errors.New("empty token")
	// ErrInvalidUTF8: a line is not valid UTF-8 (Python would refuse to read it).
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
	// ErrMissingSpecial: one of [PAD], [UNK], [CLS], [SEP] is not in the vocabulary.
	ErrMissingSpecial = errors.New("missing special token")
	// ErrTooLarge: more tokens than an int32 id can number.
	ErrTooLarge = errors.New("vocabulary too large")
)

// The special tokens. [MASK] is optional in the vocabulary; when it is absent
// a literal "[MASK]" in the text still stays one token, with the [UNK] id, as
// in HF.
const (
	// PadToken pads a batch; required in the vocabulary.
	PadToken = "[PAD]"
	// UNKToken stands for a word WordPiece cannot piece together; required.
	UNKToken = "[UNK]"
	// CLSToken starts every encoded sequence; required.
	CLSToken = "[CLS]"
	// SEPToken ends every encoded sequence; required.
	SEPToken = "[SEP]"
	// MaskToken is the masked-language-model token; optional.
	MaskToken = "[MASK]"
)

// maxWordChars is HF's max_input_chars_per_word: longer tokens become [UNK].
const maxWordChars = 100

// Tokenizer turns text into the ids of a WordPiece vocabulary exactly as HF's
// slow BertTokenizer(do_lower_case=True) does, or, after WithLowerCase(false),
// as BertTokenizer(do_lower_case=False) does for cased BERTs. It is immutable
// after Load or New and safe for concurrent use.
type Tokenizer struct {
	name string
	// cased: keep case and accents (do_lower_case=False, strip_accents
	// unset), and compose words in NFC as BasicTokenizer does first.
	cased  bool
	vocab  map[string]int32
	tokens []string // id -> token
	sha    string

	pad, unk, cls, sep int32
	mask               int32 // -1 when [MASK] is not in the vocabulary

	// punctID[c] is the id of ASCII punctuation c as a token of its own
	// (its vocabulary entry, else [UNK]).
	punctID [128]int32

	// Longest vocabulary entry in bytes, for the first piece of a word and
	// for "##" pieces (without the "##"); no candidate can be longer.
	maxHead, maxCont int
}

// Load reads a vocab.txt (one token per line, id = line index) from path; see
// New for the format.
func Load(path string) (*Tokenizer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wordpiece: %w", err)
	}
	defer f.Close()
	return New(f, path)
}

// New reads a vocab.txt from r; name (usually the path) labels errors. Lines
// end in "\n", "\r\n" or a lone "\r" (Python's universal newlines, as HF reads
// the file); the token is the line without its ending, id = line index. The
// file may end with a line ending and empty lines. An empty line before the
// last token, a duplicate token, invalid UTF-8, an empty file or a missing
// [PAD], [UNK], [CLS] or [SEP] is an error naming the file and line.
func New(r io.Reader, name string) (*Tokenizer, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("wordpiece: reading %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	t := &Tokenizer{name: name, sha: hex.EncodeToString(sum[:]), mask: -1}

	var lines []string
	for len(data) > 0 {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			lines = append(lines, string(data))
			break
		}
		lines = append(lines, string(data[:i]))
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("wordpiece: %s: %w", name, ErrEmptyVocab)
	}
	if len(lines) > math.MaxInt32 {
		return nil, fmt.Errorf("wordpiece: %s: %d lines: %w", name, len(lines), ErrTooLarge)
	}

	t.vocab = make(map[string]int32, len(lines))
	t.tokens = lines
	for i, tok := range lines {
		line := i + 1
		if tok == "" {
			return nil, fmt.Errorf("wordpiece: %s line %d: %w", name, line, ErrEmptyToken)
		}
		if !utf8.ValidString(tok) {
			return nil, fmt.Errorf("wordpiece: %s line %d: %w", name, line, ErrInvalidUTF8)
		}
		if prev, dup := t.vocab[tok]; dup {
			return nil, fmt.Errorf("wordpiece: %s line %d: %w %q (first on line %d)", name, line, ErrDuplicateToken, tok, prev+1)
		}
		t.vocab[tok] = int32(i)
		t.maxHead = max(t.maxHead, len(tok))
		if rest, cont := cutContinuation(tok); cont {
			t.maxCont = max(t.maxCont, len(rest))
		}
	}
	for _, s := range []struct {
		tok string
		id  *int32
	}{{PadToken, &t.pad}, {UNKToken, &t.unk}, {CLSToken, &t.cls}, {SEPToken, &t.sep}} {
		id, ok := t.vocab[s.tok]
		if !ok {
			return nil, fmt.Errorf("wordpiece: %s: %w %s", name, ErrMissingSpecial, s.tok)
		}
		*s.id = id
	}
	if id, ok := t.vocab[MaskToken]; ok {
		t.mask = id
	}
	for c := range t.punctID {
		t.punctID[c] = t.unk
		if id, ok := t.vocab[string(rune(c))]; ok && isASCIIPunct(rune(c)) {
			t.punctID[c] = id
		}
	}
	return t, nil
}

// cutContinuation reports whether tok is a "##" continuation piece and
// returns it without the prefix.
func cutContinuation(tok string) (string, bool) {
	if len(tok) > 2 && tok[0] == '#' && tok[1] == '#' {
		return tok[2:], true
	}
	return tok, false
}

// WithLowerCase returns the tokenizer for tokenizer_config.json's
// do_lower_case: true lowercases and strips accents (uncased BERTs, the
// default of Load and New); false keeps both (cased BERTs).
func (t *Tokenizer) WithLowerCase(lower bool) *Tokenizer {
	c := *t
	c.cased = !lower
	return &c
}

// LowerCase reports whether the tokenizer lowercases (do_lower_case).
func (t *Tokenizer) LowerCase() bool { return !t.cased }

// Name returns the name the vocabulary was loaded under (the path for Load).
func (t *Tokenizer) Name() string { return t.name }

// VocabSize returns the number of tokens in the vocabulary (its line count).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// VocabSHA256 returns the hex SHA-256 of the vocabulary file's bytes, a cache
// key for anything derived from the ids.
func (t *Tokenizer) VocabSHA256() string { return t.sha }

// ID returns the id of a vocabulary token and whether it is in the vocabulary.
func (t *Tokenizer) ID(token string) (int32, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// Token returns the vocabulary token with the given id, or "" when id is out
// of range.
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// PadID returns the id of [PAD].
func (t *Tokenizer) PadID() int32 { return t.pad }

// UNKID returns the id of [UNK].
func (t *Tokenizer) UNKID() int32 { return t.unk }

// CLSID returns the id of [CLS].
func (t *Tokenizer) CLSID() int32 { return t.cls }

// SEPID returns the id of [SEP].
func (t *Tokenizer) SEPID() int32 { return t.sep }
