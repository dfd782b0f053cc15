package wordpiece

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzEncode: Encode never panics, always wraps the ids in [CLS] ... [SEP],
// respects maxLen, reports fullLen consistently, yields only ids in the
// vocabulary and agrees with Tokenize, which is deterministic. It runs on the
// fixture vocabulary and, when present, the real one.
func FuzzEncode(f *testing.F) {
	seeds := []string{
		"I can't stop worrying about everything!!",
		"café naïve résumé", "CAFE\u0301 Ångström \u212Bngstr\u00f6m", "ΣΑΣ İ \u212A",
		"“hi”—there¿ a$b`c~d^e «x» a\u1FEFb a\u037Eb <\u0338",
		"ca\x00fe ca\u200bfe \ufeffcafe ca\ufffdfe ca\xff\xfefe ca\x0bfe ca\x7ffe \ue000\U000F0000\u0378",
		"cafe\tnaive\nresume\r\nthe\u00a0a\u3000b\u2028c\u2029d",
		"the中国the \uF900 \U00020000 한국어 🙂👨‍👩‍👧",
		"unaffable unaffablex 2024 a##b",
		"the[SEP]cafe [CLS] [PAD][UNK] [MASK] [sep] [Sep] [SE\u200bP] [[SEP]] caf[SEP]e [SEP",
		"", "   ", "\u0301", "e\u0301\u0301\u0327",
		strings.Repeat("a", 100), strings.Repeat("a", 101), strings.Repeat("é", 101), strings.Repeat("a\u0301", 60),
	}
	for _, s := range seeds {
		for _, m := range []int{0, 1, 2, 3, 5, 512} {
			f.Add(s, m)
		}
	}
	toks := []*Tokenizer{fixture(f), realVocab(f)}
	f.Fuzz(func(t *testing.T, text string, maxLen int) {
		maxLen %= 1024
		for _, tok := range toks {
			ids, full := tok.Encode(text, maxLen)
			if len(ids) < 2 || ids[0] != tok.CLSID() || ids[len(ids)-1] != tok.SEPID() {
				t.Fatalf("Encode(%+q, %d) = %v: not [CLS] ... [SEP]", text, maxLen, ids)
			}
			if maxLen > 0 && len(ids) > max(maxLen, 2) {
				t.Fatalf("Encode(%+q, %d): %d ids", text, maxLen, len(ids))
			}
			if full < len(ids) || (full != len(ids) && (maxLen <= 0 || len(ids) != max(maxLen, 2))) {
				t.Fatalf("Encode(%+q, %d): %d ids, fullLen %d", text, maxLen, len(ids), full)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("Encode(%+q): id %d outside the vocabulary (%d)", text, id, tok.VocabSize())
				}
			}
			pieces := tok.Tokenize(text)
			if again := tok.Tokenize(text); !reflect.DeepEqual(pieces, again) {
				t.Fatalf("Tokenize(%+q) not deterministic: %q then %q", text, pieces, again)
			}
			if len(pieces)+2 != full {
				t.Fatalf("Tokenize(%+q): %d pieces, Encode fullLen %d", text, len(pieces), full)
			}
			for i, id := range ids[1 : len(ids)-1] {
				if got := tok.Token(id); got != pieces[i] {
					t.Fatalf("Encode(%+q) id %d = %q, Tokenize has %q", text, i, got, pieces[i])
				}
			}
		}
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
