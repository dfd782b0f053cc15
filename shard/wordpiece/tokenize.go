package wordpiece

import (
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Tokenize returns the word pieces of text as vocabulary strings, without
// [CLS] and [SEP]: the tokens HF's tokenizer.tokenize(text) returns. Words
// that cannot be pieced together are "[UNK]".
func (t *Tokenizer) Tokenize(text string) []string {
	s := getState()
	defer putState(s)
	t.appendIDs(s, text)
	out := make([]string, len(s.ids))
	for i, id := range s.ids {
		if id < 0 {
			out[i] = MaskToken // literal [MASK] with no [MASK] in the vocabulary
		} else {
			out[i] = t.tokens[id]
		}
	}
	return out
}

// Encode returns [CLS], the ids of text's word pieces and [SEP], keeping only
// the first maxLen-2 pieces so that len(ids) <= maxLen, as HF's
// tokenizer(text, truncation=True, max_length=maxLen) does (no padding).
// fullLen is the length before truncation, [CLS] and [SEP] included, so
// callers can report how much was cut. maxLen <= 0 means no limit; a maxLen
// of 1 is taken as 2 because [CLS] and [SEP] are always present.
func (t *Tokenizer) Encode(text string, maxLen int) (ids []int32, fullLen int) {
	s := getState()
	defer putState(s)
	t.appendIDs(s, text)
	n := len(s.ids)
	keep := n
	if maxLen > 0 {
		keep = min(n, max(maxLen, 2)-2)
	}
	ids = make([]int32, keep+2)
	ids[0] = t.cls
	copy(ids[1:], s.ids[:keep])
	ids[keep+1] = t.sep
	if t.mask < 0 {
		for i, id := range ids {
			if id < 0 {
				ids[i] = t.unk // HF converts a token missing from the vocabulary to [UNK]
			}
		}
	}
	return ids, n + 2
}

// state is the scratch space of one call; pooled so that steady-state calls
// allocate only their result.
type state struct {
	ids   []int32
	word  []byte // the current word, lowercased, before NFD
	nfd   []byte // the word in NFD
	piece []byte // the current punctuation-free piece of the word
	key   []byte // "##" + a continuation candidate
	iter  norm.Iter
}

var statePool = sync.Pool{New: func() any { return &state{key: []byte("##")} }}

func getState() *state {
	s := statePool.Get().(*state)
	s.ids = s.ids[:0]
	return s
}

func putState(s *state) {
	const keep = 1 << 16 // don't let one huge text pin memory in the pool
	if cap(s.ids) > keep || cap(s.word) > keep || cap(s.nfd) > keep || cap(s.piece) > keep {
		return
	}
	statePool.Put(s)
}

// appendIDs appends the ids of text's tokens to s.ids. Literal special
// tokens are split out first and the text between them tokenized on its own,
// as HF's PreTrainedTokenizer.tokenize does. A literal [MASK] with no [MASK]
// in the vocabulary is appended as -1.
func (t *Tokenizer) appendIDs(s *state, text string) {
	for {
		pos, n, id := t.nextSpecial(text)
		if pos < 0 {
			t.basic(s, text)
			return
		}
		t.basic(s, text[:pos])
		s.ids = append(s.ids, id)
		text = text[pos+n:]
	}
}

// nextSpecial finds the first literal special token in text and returns its
// byte offset, length and id, or pos -1. No special token is a prefix of
// another or can overlap one, so the first '[' that starts one is HF's
// (trie) match.
func (t *Tokenizer) nextSpecial(text string) (pos, n int, id int32) {
	for off := 0; ; {
		i := strings.IndexByte(text[off:], '[')
		if i < 0 {
			return -1, 0, 0
		}
		i += off
		rest := text[i:]
		switch {
		case strings.HasPrefix(rest, SEPToken):
			return i, len(SEPToken), t.sep
		case strings.HasPrefix(rest, CLSToken):
			return i, len(CLSToken), t.cls
		case strings.HasPrefix(rest, PadToken):
			return i, len(PadToken), t.pad
		case strings.HasPrefix(rest, UNKToken):
			return i, len(UNKToken), t.unk
		case strings.HasPrefix(rest, MaskToken):
			return i, len(MaskToken), t.mask
		}
		off = i + 1
	}
}

// ASCII byte kinds for the fast path of basic.
const (
	asciiWord  = iota // a-z, 0-9: part of a word as is
	asciiUpper        // A-Z: lowercased
	asciiSpace        // space, \t, \n, \r: ends a word
	asciiPunct        // a token of its own
	asciiDrop         // other C0 controls and DEL: removed
)

var asciiKind = func() (k [utf8.RuneSelf]uint8) {
	for c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			k[c] = asciiWord
		case c >= 'A' && c <= 'Z':
			k[c] = asciiUpper
		case c == ' ', c == '\t', c == '\n', c == '\r':
			k[c] = asciiSpace
		case isASCIIPunct(rune(c)):
			k[c] = asciiPunct
		default:
			k[c] = asciiDrop
		}
	}
	return k
}()

// basic runs HF's BasicTokenizer over text (which holds no special token) and
// WordPiece over each of its tokens, appending ids to s.ids.
//
// Words are cut at whitespace, at CJK ideographs and at ASCII punctuation.
// Cutting at ASCII punctuation before NFD is safe: it is a starter (canonical
// combining class 0), so NFD neither reorders nor decomposes across it, and
// HF would split there after NFD anyway. Other punctuation stays in the word
// and is split after NFD, because NFD can turn a character into punctuation
// (U+1FEF into '`') or punctuation into another (U+037E into ';').
func (t *Tokenizer) basic(s *state, text string) {
	word := s.word[:0]
	ascii := true // word holds only ASCII letters and digits
	flush := func() {
		if len(word) > 0 {
			t.word(s, word, ascii)
			word = word[:0]
		}
		ascii = true
	}
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			i++
			switch asciiKind[c] {
			case asciiWord:
				word = append(word, c)
			case asciiUpper:
				if t.cased {
					word = append(word, c)
				} else {
					word = append(word, c+('a'-'A'))
				}
			case asciiSpace:
				flush()
			case asciiPunct:
				flush()
				s.ids = append(s.ids, t.punctID[c])
			}
			continue
		}
		r, n := utf8.DecodeRuneInString(text[i:])
		i += n
		cl := classOf(r) // invalid UTF-8 decodes to U+FFFD: dropped
		switch {
		case cl&classDrop != 0:
		case cl&classSpace != 0:
			flush()
		case cl&classCJK != 0:
			flush()
			word = utf8.AppendRune(word, r)
			ascii = false
			flush()
		default:
			if !t.cased {
				r = unicode.ToLower(r)
			}
			word = utf8.AppendRune(word, r)
			ascii = false
		}
	}
	flush()
	s.word = word
}

// word finishes one whitespace-delimited word: NFD, strip Mn, split on
// punctuation, WordPiece each part. An ASCII word is already all of that.
func (t *Tokenizer) word(s *state, w []byte, ascii bool) {
	if ascii {
		t.wordpiece(s, w)
		return
	}
	// norm.Iter, kept in the pooled state, holds its reorder buffer inline;
	// norm.NFD.Append would allocate one per word.
	nfd := s.nfd[:0]
	form := norm.NFD // uncased: decompose, then drop the accents (Mn)
	if t.cased {
		form = norm.NFC // cased: BasicTokenizer's NFC, accents kept
	}
	s.iter.Init(form, w)
	for !s.iter.Done() {
		nfd = append(nfd, s.iter.Next()...)
	}
	s.nfd = nfd
	piece := s.piece[:0]
	for i := 0; i < len(nfd); {
		var cl uint8
		n := 1
		if c := nfd[i]; c < utf8.RuneSelf {
			cl = bmpClass[c]
		} else {
			var r rune
			r, n = utf8.DecodeRune(nfd[i:])
			cl = classOf(r)
		}
		switch {
		case cl&classMn != 0 && !t.cased:
		case cl&classPunct != 0:
			if len(piece) > 0 {
				t.wordpiece(s, piece)
				piece = piece[:0]
			}
			t.wordpiece(s, nfd[i:i+n])
		default:
			piece = append(piece, nfd[i:i+n]...)
		}
		i += n
	}
	if len(piece) > 0 {
		t.wordpiece(s, piece)
	}
	s.piece = piece
}

// wordpiece appends the ids of w's greedy longest-match-first pieces, or a
// single [UNK] when w has more than 100 characters or some position matches
// no vocabulary entry. w is valid UTF-8; candidates end on rune boundaries,
// like HF's character slices.
func (t *Tokenizer) wordpiece(s *state, w []byte) {
	if len(w) > maxWordChars && utf8.RuneCount(w) > maxWordChars {
		s.ids = append(s.ids, t.unk)
		return
	}
	mark := len(s.ids)
	for start := 0; start < len(w); {
		limit := t.maxCont
		if start == 0 {
			limit = t.maxHead
		}
		end := len(w)
		if end-start > limit { // no vocabulary entry is that long
			end = start + limit
			for end > start && !utf8.RuneStart(w[end]) {
				end--
			}
		}
		id, found := int32(0), false
		for end > start {
			if start == 0 {
				id, found = t.vocab[string(w[:end])]
			} else {
				s.key = append(s.key[:2], w[start:end]...)
				id, found = t.vocab[string(s.key)]
			}
			if found {
				break
			}
			end--
			for end > start && !utf8.RuneStart(w[end]) {
				end--
			}
		}
		if !found {
			s.ids = append(s.ids[:mark], t.unk)
			return
		}
		s.ids = append(s.ids, id)
		start = end
	}
}
