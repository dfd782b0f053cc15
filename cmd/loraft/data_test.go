package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the loraft app with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"loraft"}, args...))
	return out.String(), err
}

func writeCSV(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "Combined Data.csv")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const inspectFixture = "\ufeff,statement,status\r\n" +
	"0,I can't stop worrying about everything!!,Anxiety\r\n" +
	"1,\"Café plans, then a long walk\",Normal\r\n" +
	"2,,Normal\r\n" +
	"3,I can't stop worrying about everything!!,Anxiety\r\n" +
	"4,\"my mood swings\nare wild lately\",Bipolar\r\n"

func TestDataInspect(t *testing.T) {
	path := writeCSV(t, inspectFixture)
	cache := t.TempDir()
	out, err := run(t, "data", "inspect", "--data", path, "--cache-dir", cache)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	for _, want := range []string{"rows read       5", "kept            3", "duplicate_statement 1, empty_statement 1", "Anxiety", "truncated at 128 tokens: 0 rows (0.0%)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The token cache was written, and --json reports the same numbers.
	if entries, _ := os.ReadDir(cache); len(entries) != 1 {
		t.Fatalf("token cache holds %d files, want 1", len(entries))
	}
	out, err = run(t, "data", "inspect", "--data", path, "--cache-dir", cache, "--json", "--events", "--max-len", "8")
	if err != nil {
		t.Fatalf("inspect --json: %v", err)
	}
	var got struct {
		RowsRead  int            `json:"rows_read"`
		Kept      int            `json:"kept"`
		Dropped   map[string]int `json:"dropped"`
		Truncated int            `json:"truncated"`
		Tokens    struct{ Max int }
		Events    []struct {
			Line   int    `json:"line"`
			Reason string `json:"reason"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	// "i can ' t stop worrying about everything ! !" is 12 tokens with [CLS]/[SEP]
	// and "cafe plans , then a long walk" 9: both exceed 8.
	if got.RowsRead != 5 || got.Kept != 3 || got.Truncated != 2 || got.Tokens.Max != 12 {
		t.Fatalf("json summary %+v", got)
	}
	if len(got.Events) != 2 || got.Events[0].Line != 4 || got.Events[0].Reason != "empty_statement" || got.Events[1].Line != 5 {
		t.Fatalf("events %+v, want the empty row at line 4 and the duplicate at line 5", got.Events)
	}
}

func TestDataInspectBadInput(t *testing.T) {
	tests := []struct {
		name    string
		content string
		args    []string
		want    string
	}{
		{"unknown label", ",statement,status\n0,fine,Normal\n1,hmm,Happy\n", nil, `Combined Data.csv:3 (record 2) field "status": unknown label: "Happy"`},
		{"missing column", ",text,status\n0,a,Normal\n", nil, `field "statement": missing column`},
		{"bad split flag", ",statement,status\n0,a,Normal\n", []string{"--split", "80/30/10"}, "flag --split"},
		{"bad max-len flag", ",statement,status\n0,a,Normal\n", []string{"--max-len", "1"}, "flag --max-len"},
		{"missing vocab", ",statement,status\n0,a,Normal\n", []string{"--vocab", "/nonexistent/vocab.txt"}, "flag --vocab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeCSV(t, tc.content)
			args := append([]string{"data", "inspect", "--data", path, "--no-cache"}, tc.args...)
			out, err := run(t, args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	if _, err := run(t, "data", "inspect"); err == nil || !strings.Contains(err.Error(), "data") {
		t.Fatalf("missing --data: %v", err)
	}
}
