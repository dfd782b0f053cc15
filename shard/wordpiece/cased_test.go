package wordpiece

import (
	"slices"
	"strings"
	"testing"
)

// TestCased: with do_lower_case=False (cased BERTs) case and accents are
// kept, words are composed in NFC as BasicTokenizer does, and punctuation
// and WordPiece splitting are unchanged. The uncased tokenizer on the same
// vocabulary still lowercases and strips accents.
func TestCased(t *testing.T) {
	vocab := "[PAD]\n[UNK]\n[CLS]\n[SEP]\nHello\nhello\nWorld\nworld\nCafé\ncafe\n##s\n!\nÉcole\necole\n"
	uncased, err := New(strings.NewReader(vocab), "cased.txt")
	if err != nil {
		t.Fatal(err)
	}
	cased := uncased.WithLowerCase(false)
	if !uncased.LowerCase() || cased.LowerCase() {
		t.Fatalf("LowerCase: uncased %v, cased %v", uncased.LowerCase(), cased.LowerCase())
	}
	for _, tc := range []struct {
		text          string
		cased, uncase []string
	}{
		{"Hello World!", []string{"Hello", "World", "!"}, []string{"hello", "world", "!"}},
		{"hello Worlds", []string{"hello", "World", "##s"}, []string{"hello", "world", "##s"}},
		{"HELLO", []string{"[UNK]"}, []string{"hello"}},
		{"Café", []string{"Café"}, []string{"cafe"}},
		{"Cafe\u0301", []string{"Café"}, []string{"cafe"}}, // decomposed input composes to the vocab's NFC entry
		{"École ecole", []string{"École", "ecole"}, []string{"ecole", "ecole"}},
	} {
		if got := cased.Tokenize(tc.text); !slices.Equal(got, tc.cased) {
			t.Errorf("cased Tokenize(%q) = %q, want %q", tc.text, got, tc.cased)
		}
		if got := uncased.Tokenize(tc.text); !slices.Equal(got, tc.uncase) {
			t.Errorf("uncased Tokenize(%q) = %q, want %q", tc.text, got, tc.uncase)
		}
	}
}
