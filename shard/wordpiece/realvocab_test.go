package wordpiece

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const bertSHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"

// sharedVocabPath is bert-base-uncased's vocab.txt in ../shared/data (beside
// the repository, present on development and CI machines, never in a user's
// clone).
var sharedVocabPath = filepath.Join("..", "..", "..", "shared", "data", "bert-base-uncased-vocab.txt")

// realVocab returns bert-base-uncased's tokenizer: from ../shared/data when
// the file is there, else from the copy embedded in the package (the same
// bytes; TestEmbeddedVocab checks the hash).
func realVocab(t testing.TB) *Tokenizer {
	t.Helper()
	var tok *Tokenizer
	var err error
	if fileExists(sharedVocabPath) {
		tok, err = Load(sharedVocabPath)
	} else {
		t.Logf("real vocabulary %s is absent; using the embedded copy", sharedVocabPath)
		tok, err = BertBaseUncased()
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.VocabSHA256(); got != bertSHA256 {
		t.Fatalf("%s: VocabSHA256 = %s, want %s (the data README's)", tok.Name(), got, bertSHA256)
	}
	return tok
}

// TestEmbeddedVocab checks the embedded vocabulary against the data README's
// hash and, when present, against ../shared/data's file.
func TestEmbeddedVocab(t *testing.T) {
	emb, err := BertBaseUncased()
	if err != nil {
		t.Fatal(err)
	}
	if emb.VocabSHA256() != bertSHA256 || emb.VocabSize() != 30522 {
		t.Fatalf("embedded vocabulary: sha256 %s, %d tokens; want %s, 30522", emb.VocabSHA256(), emb.VocabSize(), bertSHA256)
	}
	if !fileExists(sharedVocabPath) {
		t.Skipf("real vocabulary %s is absent (it lives in ../shared/data beside the repository on development and CI machines); the embedded copy's hash was checked", sharedVocabPath)
	}
	shared, err := Load(sharedVocabPath)
	if err != nil {
		t.Fatal(err)
	}
	if shared.VocabSHA256() != emb.VocabSHA256() {
		t.Errorf("shared %s and embedded vocabularies differ", sharedVocabPath)
	}
}

// TestRealVocab checks ids worked out by hand from bert-base-uncased's
// vocab.txt (id = line number - 1, found with grep -nx).
func TestRealVocab(t *testing.T) {
	tok := realVocab(t)
	if tok.VocabSize() != 30522 || tok.PadID() != 0 || tok.UNKID() != 100 || tok.CLSID() != 101 || tok.SEPID() != 102 {
		t.Fatalf("size %d, specials %d %d %d %d; want 30522, 0 100 101 102", tok.VocabSize(), tok.PadID(), tok.UNKID(), tok.CLSID(), tok.SEPID())
	}
	tests := []struct {
		in   string
		want []int32
	}{
		// i 1045, can 2064, ' 1005, t 1056, stop 2644, worrying 15366,
		// about 2055, everything 2673, ! 999
		{"I can't stop worrying about everything!!", []int32{101, 1045, 2064, 1005, 1056, 2644, 15366, 2055, 2673, 999, 999, 102}},
		// cafe 7668, naive 15743, resume 13746
		{"café naïve résumé", []int32{101, 7668, 15743, 13746, 102}},
		{"CAFE\u0301 NAI\u0308VE", []int32{101, 7668, 15743, 102}},
		// ## splits, greedy from the left: the vocabulary prefixes of
		// "unaffable" are u, un, una 14477; of "##ffable" ##f, ##ff, ##ffa
		// 20961; then ##ble 3468 (HF's own docstring example, un ##aff
		// ##able, assumes a different vocabulary).
		{"unaffable", []int32{101, 14477, 20961, 3468, 102}},
		// token 19204 ##ization 3989 (prefixes: t, to, token; ##i, ##iz,
		// ##iza, ##ization)
		{"tokenization", []int32{101, 19204, 3989, 102}},
		// so 2061, tired 5458; the emoji is not in the vocabulary
		{"so tired 😭", []int32{101, 2061, 5458, 100, 102}},
		// 中 1746, 国 1799, 人 1756
		{"中国人", []int32{101, 1746, 1799, 1756, 102}},
		// literal specials: [SEP] 102 [MASK] 103 in the middle
		{"i [SEP] am [MASK]", []int32{101, 1045, 102, 2572, 103, 102}},
		// [ 1031, sep 19802, ] 1033
		{"[sep]", []int32{101, 1031, 19802, 1033, 102}},
		// “ 1523, ” 1524, — 1517, ¿ 1094, … 1529, $ 1002, ^ 1034, ` 1036, ~ 1066
		{"“hi”—¿…$^`~", []int32{101, 1523, 7632, 1524, 1517, 1094, 1529, 1002, 1034, 1036, 1066, 102}},
		// accents stripped before WordPiece: resume 13746 ##s 2015
		// (prefixes of "resumes": r, re, res, resume)
		{"Résumés", []int32{101, 13746, 2015, 102}},
		// NBSP splits, U+200B is dropped, tab and CRLF split: i 1045, am
		// 2572, ok 7929
		{"i\u00a0am\u200b\tok\r\n", []int32{101, 1045, 2572, 7929, 102}},
	}
	for _, tc := range tests {
		ids, full := tok.Encode(tc.in, 512)
		if !reflect.DeepEqual(ids, tc.want) || full != len(tc.want) {
			t.Errorf("Encode(%+q) = %v (full %d)\n                          want %v", tc.in, ids, full, tc.want)
		}
	}
}

// TestReferenceFile compares Encode with the ids testdata/hf_reference.py
// (a Python port of HF's algorithm) produced for testdata/golden.json, or
// for the file named by $WORDPIECE_REFERENCE (same format) when set.
func TestReferenceFile(t *testing.T) {
	tok := realVocab(t)
	path := filepath.Join("testdata", "golden.json")
	if p := os.Getenv("WORDPIECE_REFERENCE"); p != "" {
		path = p
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s holds no cases", path)
	}
	bad := 0
	for i, c := range cases {
		got, _ := tok.Encode(c.Text, 0)
		if !reflect.DeepEqual(got, c.IDs) {
			bad++
			if bad <= 20 {
				t.Errorf("%s case %d: Encode(%+q)\n got %v\nwant %v", path, i, c.Text, got, c.IDs)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d cases differ", bad, len(cases))
	}
	t.Logf("%d cases from %s", len(cases), path)
}
