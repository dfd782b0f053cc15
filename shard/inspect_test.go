package shard

import (
	"context"
	"strings"
	"testing"
)

func TestPercentiles(t *testing.T) {
	v := make([]int, 100)
	for i := range v {
		v[i] = 100 - i // 100..1, unsorted
	}
	got := percentiles(v)
	want := Percentiles{P50: 50, P90: 90, P95: 95, P99: 99, Max: 100}
	if got != want {
		t.Fatalf("percentiles = %+v, want %+v", got, want)
	}
	if (percentiles(nil) != Percentiles{}) {
		t.Fatal("percentiles of nothing is not zero")
	}
	if got := percentiles([]int{7}); got != (Percentiles{7, 7, 7, 7, 7}) {
		t.Fatalf("percentiles of one value = %+v", got)
	}
}

func TestSummarize(t *testing.T) {
	ds, err := Read(strings.NewReader(",statement,status\n0,a bb,Normal\n1,,Normal\n2,a bb,Normal\n3,x y z w v u t s r q,Stress\n4,héllo,Anxiety\n"), "s.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := NewSplit(ds, 1, DefaultRatios)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Tokenize(context.Background(), ds, &spaceEncoder{}, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(ds, sp, tok)
	if s.RowsRead != 5 || s.Kept != 3 || s.Duplicates != 1 || s.Dropped[ReasonEmpty] != 1 {
		t.Fatalf("summary counts %+v", s)
	}
	if s.Truncated != 1 || s.TruncatedShare != 1.0/3 {
		t.Fatalf("truncated %d (%v), want 1 of 3", s.Truncated, s.TruncatedShare)
	}
	if s.Chars.Max != 19 || s.Tokens.Max != 12 || s.Chars.P50 != 5 {
		t.Fatalf("lengths chars %+v tokens %+v", s.Chars, s.Tokens)
	}
	total := 0
	for _, p := range s.Parts {
		total += p.Rows
		if len(p.Counts) != NumLabels {
			t.Fatalf("part %s lists %d classes, want all %d", p.Name, len(p.Counts), NumLabels)
		}
	}
	if total != 3 {
		t.Fatalf("parts hold %d rows, want 3", total)
	}
}
