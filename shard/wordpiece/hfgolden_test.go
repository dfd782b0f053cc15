package wordpiece

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// hfTokenizerFile is the layout of tokenizer.json as deploy/hf-golden.py
// writes it: HF BertTokenizer ids ([CLS] … [SEP], no truncation) for the same
// strings with do_lower_case=True and False on bert-base-uncased's vocab.txt.
type hfTokenizerFile struct {
	Transformers string   `json:"transformers"`
	Tokenizer    string   `json:"tokenizer"`
	VocabSHA256  string   `json:"vocab_sha256"`
	Uncased      []hfCase `json:"uncased"`
	Cased        []hfCase `json:"cased"`
}

type hfCase struct {
	Text string  `json:"text"`
	IDs  []int32 `json:"ids"`
}

// Where the files are: the real one once a GPU-machine run has made it
// (testdata/README.md), and a fixture in the same layout built from
// golden.json (uncased) and hand-worked ids (cased).
var (
	hfGoldenTokenizer  = filepath.Join("testdata", "hf-golden", "tokenizer.json")
	hfFixtureTokenizer = filepath.Join("testdata", "hf-golden-fixture", "tokenizer.json")
)

func readHFTokenizerFile(path string) (hfTokenizerFile, error) {
	var f hfTokenizerFile
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("reading tokenizer golden file: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("tokenizer golden file %s: %w", path, err)
	}
	if len(f.Uncased) == 0 || len(f.Cased) == 0 {
		return f, fmt.Errorf("tokenizer golden file %s: %d uncased and %d cased cases, want some of each", path, len(f.Uncased), len(f.Cased))
	}
	return f, nil
}

// diffHF returns one line per case whose Encode ids differ from the file's.
func diffHF(tok *Tokenizer, cases []hfCase) []string {
	var bad []string
	for i, c := range cases {
		if got, _ := tok.Encode(c.Text, 0); !slices.Equal(got, c.IDs) {
			bad = append(bad, fmt.Sprintf("case %d: Encode(%+q)\n got %v\nwant %v", i, c.Text, got, c.IDs))
		}
	}
	return bad
}

// checkHFTokenizerFile compares the real vocabulary's tokenizer, uncased and
// cased, with every case of a tokenizer.json.
func checkHFTokenizerFile(t *testing.T, path string) {
	t.Helper()
	f, err := readHFTokenizerFile(path)
	if err != nil {
		t.Fatal(err)
	}
	uncased := realVocab(t)
	if f.VocabSHA256 != uncased.VocabSHA256() {
		t.Fatalf("%s was made with vocabulary %s, not bert-base-uncased's %s", path, f.VocabSHA256, uncased.VocabSHA256())
	}
	for _, mode := range []struct {
		name  string
		tok   *Tokenizer
		cases []hfCase
	}{
		{"uncased", uncased, f.Uncased},
		{"cased", uncased.WithLowerCase(false), f.Cased},
	} {
		bad := diffHF(mode.tok, mode.cases)
		for i, line := range bad {
			if i == 20 {
				break
			}
			t.Errorf("%s %s %s", path, mode.name, line)
		}
		if len(bad) > 0 {
			t.Errorf("%s %s: %d of %d cases differ", path, mode.name, len(bad), len(mode.cases))
		}
		t.Logf("%s %s: %d cases (%s, transformers %s)", path, mode.name, len(mode.cases), f.Tokenizer, f.Transformers)
	}
}

// TestHFTokenizerGolden compares Encode with HF BertTokenizer's ids in
// tokenizer.json: always the fixture, and the real file from
// deploy/hf-golden.py once it is in the repository.
func TestHFTokenizerGolden(t *testing.T) {
	paths := []string{hfFixtureTokenizer}
	if fileExists(hfGoldenTokenizer) {
		paths = append(paths, hfGoldenTokenizer)
	} else {
		t.Logf("%s is not in the repository yet (make gpu-check writes it; testdata/README.md): only the fixture is compared", hfGoldenTokenizer)
	}
	for _, p := range paths {
		t.Run(filepath.Base(filepath.Dir(p)), func(t *testing.T) { checkHFTokenizerFile(t, p) })
	}
}

// TestHFTokenizerDiff shows the comparison can fail: the fixture with one id
// changed, or the cased cases read as uncased, are reported.
func TestHFTokenizerDiff(t *testing.T) {
	f, err := readHFTokenizerFile(hfFixtureTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	tok := realVocab(t)
	if bad := diffHF(tok, f.Uncased); len(bad) != 0 {
		t.Fatalf("the fixture itself differs: %v", bad)
	}
	changed := slices.Clone(f.Uncased)
	changed[0].IDs = slices.Clone(changed[0].IDs)
	changed[0].IDs[1]++
	if bad := diffHF(tok, changed); len(bad) != 1 {
		t.Errorf("one changed id: %d cases reported, want 1", len(bad))
	}
	if bad := diffHF(tok, f.Cased); len(bad) == 0 {
		t.Error("the cased cases read by the uncased tokenizer: no difference reported")
	}
}
