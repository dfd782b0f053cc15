package shard

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRead feeds arbitrary bytes to the reader: it must never panic, every
// error must be one of the documented kinds, and whatever it keeps must obey
// the policy (valid UTF-8, non-empty, unique statements; counts add up).
func FuzzRead(f *testing.F) {
	seeds := []string{
		"\ufeff,statement,status\r\n0,\"a, \"\"quoted\"\"\r\nline\",Normal\r\n",
		"Unnamed: 0,statement,status\n1,x,Personality-disorder\n2,x,Stress\n",
		",statement,status\n0,,Normal\n1,\"never closed,Normal\n",
		",statement,status\n0,caf\xe9,Anxiety\n1,a \"bare\" quote,Bipolar\n",
		"statement,status\nonly,Suicidal\n",
		",statement\n0,a\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, dropBad bool) {
		ds, err := Read(bytes.NewReader(data), "fuzz.csv", Options{DropBad: dropBad})
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("error is not a *RowError: %v", err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownLabel) && !errors.Is(err, ErrMissingColumn) && !errors.Is(err, ErrEmptyFile) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if dropBad && (errors.Is(err, ErrUnknownLabel)) {
				t.Fatalf("DropBad still failed on a label: %v", err)
			}
			return
		}
		dropped := 0
		for _, n := range ds.Report.Dropped {
			dropped += n
		}
		if ds.Report.Kept != len(ds.Rows) || ds.Report.Kept+dropped != ds.Report.Records {
			t.Fatalf("counts do not add up: kept %d rows %d dropped %d records %d", ds.Report.Kept, len(ds.Rows), dropped, ds.Report.Records)
		}
		seen := map[string]bool{}
		for _, r := range ds.Rows {
			if !utf8.ValidString(r.Statement) {
				t.Fatalf("kept invalid UTF-8 at line %d", r.Line)
			}
			key := strings.TrimSpace(r.Statement)
			if key == "" || seen[key] {
				t.Fatalf("kept an empty or duplicate statement at line %d: %q", r.Line, r.Statement)
			}
			seen[key] = true
			if r.Label >= NumLabels {
				t.Fatalf("label %d out of range", r.Label)
			}
		}
	})
}
