package wordpiece

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// benchTexts returns bert-base-uncased's tokenizer and the statements of
// ../shared/data/combined-val.csv when it is present, else synthetic text.
func benchTexts(b *testing.B) (*Tokenizer, []string, string) {
	b.Helper()
	tok := realVocab(b)
	val := filepath.Join("..", "..", "..", "shared", "data", "combined-val.csv")
	if !fileExists(val) {
		line := "I can't stop worrying about everything!! Café naïve résumé — “hello” world, unaffable the 中国. "
		return tok, []string{strings.Repeat(line, 4), line, strings.Repeat(line, 20)}, "synthetic"
	}
	f, err := os.Open(val)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		b.Fatal(err)
	}
	var texts []string
	for _, row := range rows[1:] {
		texts = append(texts, row[1])
	}
	return tok, texts, "combined-val.csv"
}

// BenchmarkEncode encodes one text per iteration, cycling through the data,
// and reports characters (code points) and tokens per second, all under
// bert-base-uncased. "data" is combined-val.csv's statements (synthetic text
// when absent); "nonascii" is accented, CJK and punctuation-heavy text, the
// slow path.
func BenchmarkEncode(b *testing.B) {
	tok, texts, src := benchTexts(b)
	b.Run("data", func(b *testing.B) {
		b.Logf("data: %s, %d texts", src, len(texts))
		benchEncode(b, tok, texts)
	})
	line := "Crème brûlée at the Café Müller — «naïve» résumé, ΟΔΟΣ Ελληνικά, 中国人 日本語, Tiếng Việt; zażółć gęślą jaźń! "
	b.Run("nonascii", func(b *testing.B) {
		benchEncode(b, tok, []string{strings.Repeat(line, 5)})
	})
}

func benchEncode(b *testing.B, tok *Tokenizer, texts []string) {
	runes := make([]int, len(texts))
	for i, s := range texts {
		runes[i] = utf8.RuneCountInString(s)
	}
	var chars, tokens int
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, full := tok.Encode(texts[i], 512)
		chars += runes[i]
		tokens += full
		if i++; i == len(texts) {
			i = 0
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(chars)/sec, "chars/s")
	b.ReportMetric(float64(tokens)/sec, "tokens/s")
}
