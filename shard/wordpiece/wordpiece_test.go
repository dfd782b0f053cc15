package wordpiece

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// fixtureTokens is the vocabulary the fixture tests write themselves: ids are
// indexes, so fixture ids below are easy to read off.
var fixtureTokens = []string{
	"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", // 0-4
	"the", "cafe", "naive", "resume", "angstrom", // 5-9
	"un", "##aff", "##able", "hello", "world", // 10-14
	"a", "##a", "b", "c", "d", // 15-19
	"e", "i", "k", "sep", "20", // 20-24
	"##24", "!", "$", "`", "~", // 25-29
	"^", "“", "”", "—", "¿", // 30-34
	"[", "]", ";", "#", "中", // 35-39
	"国", "豈", "σ", "##α", "##σ", // 40-44
	"##ς", "hi", "there", ".", ",", // 45-49
}

// writeVocab writes tokens, one a line, to a file in a fresh temporary
// directory and returns its path.
func writeVocab(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vocab.txt")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fixture(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := Load(writeVocab(t, strings.Join(fixtureTokens, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenizeFixture(t *testing.T) {
	tok := fixture(t)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"lowercase", "Hello WORLD", []string{"hello", "world"}},
		{"accents precomposed", "café naïve résumé", []string{"cafe", "naive", "resume"}},
		{"accents uppercase", "CAFÉ NAÏVE RÉSUMÉ", []string{"cafe", "naive", "resume"}},
		{"accents decomposed", "cafe\u0301 nai\u0308ve", []string{"cafe", "naive"}},
		{"angstrom", "Ångström", []string{"angstrom"}},
		{"angstrom sign U+212B", "\u212Bngstr\u00f6m", []string{"angstrom"}},
		{"kelvin sign lowercases to k", "\u212A", []string{"k"}},
		{"dotted capital I", "\u0130", []string{"i"}},
		{"sigma lowered one char at a time, never final", "ΣΑΣ", []string{"σ", "##α", "##σ"}},
		{"ascii punctuation", "hello, world!", []string{"hello", ",", "world", "!"}},
		{"ascii symbols HF counts as punctuation", "a$b`c~d^e", []string{"a", "$", "b", "`", "c", "~", "d", "^", "e"}},
		{"unicode punctuation", "“hi”—there¿", []string{"“", "hi", "”", "—", "there", "¿"}},
		{"punctuation missing from vocab", "hi«there", []string{"hi", "[UNK]", "there"}},
		{"accented word then ascii punctuation", "cafe\u0301!", []string{"cafe", "!"}},
		{"accented word then unicode punctuation", "é“e", []string{"e", "“", "e"}},
		{"hash is punctuation", "a##b", []string{"a", "#", "#", "b"}},
		{"NFD turns U+1FEF into a backtick", "a\u1FEFb", []string{"a", "`", "b"}},
		{"NFD turns U+037E into a semicolon", "a\u037Eb", []string{"a", ";", "b"}},
		{"NUL dropped", "ca\x00fe", []string{"cafe"}},
		{"U+200B (Cf) dropped", "ca\u200bfe", []string{"cafe"}},
		{"U+FEFF (Cf) dropped", "\ufeffcafe", []string{"cafe"}},
		{"U+FFFD dropped", "ca\ufffdfe", []string{"cafe"}},
		{"invalid UTF-8 dropped", "ca\xff\xfefe", []string{"cafe"}},
		{"vertical tab is a control, not a space", "ca\x0bfe", []string{"cafe"}},
		{"DEL dropped", "ca\x7ffe", []string{"cafe"}},
		{"C1 control U+0085 dropped", "ca\u0085fe", []string{"cafe"}},
		{"private use dropped", "ca\ue000f\U000F0000e", []string{"cafe"}},
		{"unassigned dropped", "ca\u0378fe", []string{"cafe"}},
		{"tab newline CR", "cafe\tnaive\nresume\r\nthe", []string{"cafe", "naive", "resume", "the"}},
		{"NBSP is Zs", "cafe\u00a0naive", []string{"cafe", "naive"}},
		{"ideographic space", "cafe\u3000naive", []string{"cafe", "naive"}},
		{"line separator U+2028 splits", "cafe\u2028naive", []string{"cafe", "naive"}},
		{"paragraph separator U+2029 splits", "cafe\u2029naive", []string{"cafe", "naive"}},
		{"CJK spaced", "the中国the", []string{"the", "中", "国", "the"}},
		{"CJK compatibility ideograph NFD", "\uF900", []string{"豈"}},
		{"astral CJK not in vocab", "the\U00020000the", []string{"the", "[UNK]", "the"}},
		{"emoji", "hi 🙂", []string{"hi", "[UNK]"}},
		{"continuation pieces", "unaffable", []string{"un", "##aff", "##able"}},
		{"unmatchable piece makes whole word UNK", "unaffablex the", []string{"[UNK]", "the"}},
		{"digits", "2024", []string{"20", "##24"}},
		{"100 characters", strings.Repeat("a", 100), append([]string{"a"}, repeat("##a", 99)...)},
		{"101 characters", strings.Repeat("a", 101) + " the", []string{"[UNK]", "the"}},
		{"101 characters across accents", strings.Repeat("é", 101), []string{"[UNK]"}},
		{"stripped marks do not count", strings.Repeat("a\u0301", 60), append([]string{"a"}, repeat("##a", 59)...)},
		{"literal SEP", "the[SEP]cafe", []string{"the", "[SEP]", "cafe"}},
		{"literal specials", "[CLS] [PAD][UNK] [MASK]", []string{"[CLS]", "[PAD]", "[UNK]", "[MASK]"}},
		{"lowercase sep is not special", "[sep]", []string{"[", "sep", "]"}},
		{"mixed case sep is not special", "[Sep]", []string{"[", "sep", "]"}},
		{"broken special", "[SE\u200bP]", []string{"[", "sep", "]"}},
		{"bracket before special", "[[SEP]]", []string{"[", "[SEP]", "]"}},
		{"special splits a word", "caf[SEP]e", []string{"[UNK]", "[SEP]", "e"}}, // caf: c, then no ##a...
		{"combining mark alone", " \u0301 ", []string{}},
		{"empty", "", []string{}},
		{"whitespace only", " \t\n\u00a0\u2028 ", []string{}},
		{"controls only", "\x00\u200b\ufffd", []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tok.Tokenize(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Tokenize(%+q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			// Encode must agree with Tokenize.
			ids, full := tok.Encode(tc.in, 0)
			if full != len(tc.want)+2 || len(ids) != full {
				t.Fatalf("Encode(%+q): %d ids, fullLen %d, want %d", tc.in, len(ids), full, len(tc.want)+2)
			}
			for i, w := range tc.want {
				if got := tok.Token(ids[i+1]); got != w {
					t.Errorf("Encode(%+q): id %d is %q, want %q", tc.in, i+1, got, w)
				}
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestEncodeFixture(t *testing.T) {
	tok := fixture(t)
	const text = "café naïve résumé" // 6 7 8
	tests := []struct {
		maxLen   int
		want     []int32
		wantFull int
	}{
		{0, []int32{2, 6, 7, 8, 3}, 5},
		{-1, []int32{2, 6, 7, 8, 3}, 5},
		{512, []int32{2, 6, 7, 8, 3}, 5},
		{5, []int32{2, 6, 7, 8, 3}, 5},
		{4, []int32{2, 6, 7, 3}, 5},
		{3, []int32{2, 6, 3}, 5},
		{2, []int32{2, 3}, 5},
		{1, []int32{2, 3}, 5},
	}
	for _, tc := range tests {
		ids, full := tok.Encode(text, tc.maxLen)
		if !reflect.DeepEqual(ids, tc.want) || full != tc.wantFull {
			t.Errorf("Encode(%q, %d) = %v, %d; want %v, %d", text, tc.maxLen, ids, full, tc.want, tc.wantFull)
		}
	}
	for _, in := range []string{"", "   ", "\x00\u200b", "\u0301"} {
		ids, full := tok.Encode(in, 512)
		if !reflect.DeepEqual(ids, []int32{2, 3}) || full != 2 {
			t.Errorf("Encode(%+q) = %v, %d; want [2 3], 2", in, ids, full)
		}
	}
	// A literal [SEP] is a token like any other for truncation.
	ids, full := tok.Encode("the [SEP] the", 3)
	if !reflect.DeepEqual(ids, []int32{2, 5, 3}) || full != 5 {
		t.Errorf("Encode with literal [SEP] = %v, %d; want [2 5 3], 5", ids, full)
	}
}

func TestMaskNotInVocab(t *testing.T) {
	tok, err := New(strings.NewReader("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n"), "nomask.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Tokenize("the [MASK]"), []string{"the", "[MASK]"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Tokenize = %q, want %q", got, want)
	}
	ids, _ := tok.Encode("the [MASK] the", 0)
	if want := []int32{2, 4, 1, 4, 3}; !reflect.DeepEqual(ids, want) {
		t.Errorf("Encode = %v, want %v ([MASK] stays one token with the [UNK] id)", ids, want)
	}
}

func TestAccessors(t *testing.T) {
	content := strings.Join(fixtureTokens, "\n") + "\n"
	tok, err := Load(writeVocab(t, content))
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != len(fixtureTokens) {
		t.Errorf("VocabSize = %d, want %d", tok.VocabSize(), len(fixtureTokens))
	}
	sum := sha256.Sum256([]byte(content))
	if got := tok.VocabSHA256(); got != hex.EncodeToString(sum[:]) {
		t.Errorf("VocabSHA256 = %s, want %x", got, sum)
	}
	if tok.PadID() != 0 || tok.UNKID() != 1 || tok.CLSID() != 2 || tok.SEPID() != 3 {
		t.Errorf("special ids %d %d %d %d, want 0 1 2 3", tok.PadID(), tok.UNKID(), tok.CLSID(), tok.SEPID())
	}
	for i, s := range fixtureTokens {
		if id, ok := tok.ID(s); !ok || id != int32(i) {
			t.Errorf("ID(%q) = %d, %v; want %d, true", s, id, ok, i)
		}
		if got := tok.Token(int32(i)); got != s {
			t.Errorf("Token(%d) = %q, want %q", i, got, s)
		}
	}
	if _, ok := tok.ID("nope"); ok {
		t.Error(`ID("nope") found`)
	}
	for _, id := range []int32{-1, int32(len(fixtureTokens))} {
		if got := tok.Token(id); got != "" {
			t.Errorf("Token(%d) = %q, want \"\"", id, got)
		}
	}
	// A different file gives a different cache key.
	other, err := New(strings.NewReader(content+"extra\n"), "other")
	if err != nil {
		t.Fatal(err)
	}
	if other.VocabSHA256() == tok.VocabSHA256() {
		t.Error("two different vocabularies share a VocabSHA256")
	}
	if tok.Name() == "" || other.Name() != "other" {
		t.Errorf("Name() = %q, %q", tok.Name(), other.Name())
	}
}

func TestLoadFormats(t *testing.T) {
	base := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "x", "##y"}
	tests := []struct {
		name, content string
	}{
		{"LF", strings.Join(base, "\n") + "\n"},
		{"no final newline", strings.Join(base, "\n")},
		{"CRLF", strings.Join(base, "\r\n") + "\r\n"},
		{"trailing empty lines", strings.Join(base, "\n") + "\n\n\r\n"},
		{"lone CR (Python universal newlines)", strings.Join(base, "\r") + "\r"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := New(strings.NewReader(tc.content), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if tok.VocabSize() != len(base) {
				t.Fatalf("VocabSize = %d, want %d", tok.VocabSize(), len(base))
			}
			for i, s := range base {
				if id, ok := tok.ID(s); !ok || id != int32(i) {
					t.Errorf("ID(%q) = %d, %v; want %d", s, id, ok, i)
				}
			}
			if got := tok.Tokenize("xy"); !reflect.DeepEqual(got, []string{"x", "##y"}) {
				t.Errorf("Tokenize(xy) = %q", got)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, content string
		want          error
		mention       string // the error must contain this
	}{
		{"empty file", "", ErrEmptyVocab, "bad.txt"},
		{"only newlines", "\n\r\n\n", ErrEmptyVocab, "bad.txt"},
		{"duplicate", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nx\ny\nx\n", ErrDuplicateToken, "line 7"},
		{"duplicate after CRLF", "[PAD]\r\n[UNK]\r\n[UNK]\r\n", ErrDuplicateToken, "first on line 2"},
		{"missing PAD", "[UNK]\n[CLS]\n[SEP]\n", ErrMissingSpecial, "[PAD]"},
		{"missing UNK", "[PAD]\n[CLS]\n[SEP]\n", ErrMissingSpecial, "[UNK]"},
		{"missing CLS", "[PAD]\n[UNK]\n[SEP]\n", ErrMissingSpecial, "[CLS]"},
		{"missing SEP", "[PAD]\n[UNK]\n[CLS]\n", ErrMissingSpecial, "[SEP]"},
		{"special with trailing space", "[PAD] \n[UNK]\n[CLS]\n[SEP]\n", ErrMissingSpecial, "[PAD]"},
		{"BOM is part of the first token", "\ufeff[PAD]\n[UNK]\n[CLS]\n[SEP]\n", ErrMissingSpecial, "[PAD]"},
		{"empty line in the middle", "[PAD]\n\n[UNK]\n[CLS]\n[SEP]\n", ErrEmptyToken, "line 2"},
		{"invalid UTF-8", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nca\xfe\n", ErrInvalidUTF8, "line 5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(strings.NewReader(tc.content), "bad.txt")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), "bad.txt") {
				t.Errorf("error %q does not name the file and %q", err, tc.mention)
			}
		})
	}
	_, err := Load(filepath.Join(t.TempDir(), "absent.txt"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "absent.txt") {
		t.Errorf("Load(absent) = %v, want a wrapped os.ErrNotExist naming the file", err)
	}
}

// TestClassTable checks the precomputed BMP table against the unicode
// package, code point by code point.
func TestClassTable(t *testing.T) {
	for r := rune(0); r < 0x10000; r++ {
		var want uint8
		cjk := (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0x3400 && r <= 0x4DBF) || (r >= 0xF900 && r <= 0xFAFF)
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			want = classSpace
		case r == 0 || r == 0xFFFD || unicode.Is(unicode.C, r) ||
			!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z):
			want = classDrop
		default:
			if unicode.Is(unicode.Z, r) {
				want |= classSpace
			}
			if unicode.IsPunct(r) || isASCIIPunct(r) {
				want |= classPunct
			}
			if unicode.Is(unicode.Mn, r) {
				want |= classMn
			}
			if cjk {
				want |= classCJK
			}
		}
		if got := classOf(r); got != want {
			t.Fatalf("classOf(%U) = %05b, want %05b", r, got, want)
		}
	}
	for _, tc := range []struct {
		r    rune
		want uint8
	}{
		{0x20000, classCJK}, {0x2A6DF, classCJK}, {0x2A700, classCJK}, {0x2B739, classCJK},
		{0x2F800, classCJK}, {0x2FA1D, classCJK}, {0x2CEA1, classCJK}, {0x2CEB0, 0}, {0x2CEAF, classDrop}, {0x30000, 0},
		{0x1F642, 0}, {0x1D167, classMn}, {0x1E95E, classPunct}, {0xE0001, classDrop},
		{0xF0000, classDrop}, {0x10FFFD, classDrop}, {0x3FFFF, classDrop},
	} {
		if got := classOf(tc.r); got != tc.want {
			t.Errorf("classOf(%U) = %05b, want %05b", tc.r, got, tc.want)
		}
	}
}

// TestConcurrent runs one Tokenizer from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	tok := fixture(t)
	inputs := []string{"café naïve résumé", "unaffable [SEP] the中国", strings.Repeat("hello, world! ", 200), "“hi”—there¿"}
	want := make([][]int32, len(inputs))
	for i, in := range inputs {
		want[i], _ = tok.Encode(in, 0)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 200; n++ {
				i := (g + n) % len(inputs)
				if got, _ := tok.Encode(inputs[i], 0); !reflect.DeepEqual(got, want[i]) {
					t.Errorf("goroutine %d: Encode(%q) = %v, want %v", g, inputs[i], got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}
