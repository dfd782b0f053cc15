package shard

import "testing"

// TestSplitSpellings: every spelling of the default split that flags, sweep
// specs and old sweep records use parses to exactly DefaultRatios, so they
// all give the same split id.
func TestSplitSpellings(t *testing.T) {
	want := SplitSpec{DatasetSHA256: "x", Seed: DefaultSplitSeed, Ratios: DefaultRatios}.ID()
	for _, s := range []string{DefaultRatios.String(), "80/10/10", "0.8,0.1,0.1", "0.8/0.1/0.1", " 80 , 10 , 10 ", "80,10,10"} {
		r, err := ParseRatios(s)
		if err != nil || r != DefaultRatios {
			t.Errorf("ParseRatios(%q) = %v, %v; want exactly %v", s, r, err, DefaultRatios)
			continue
		}
		if id := (SplitSpec{DatasetSHA256: "x", Seed: DefaultSplitSeed, Ratios: r}).ID(); id != want {
			t.Errorf("%q: split id %s, want %s", s, id, want)
		}
	}
	if DefaultRatios.String() != "80/10/10" {
		t.Errorf("DefaultRatios.String() = %q", DefaultRatios.String())
	}
}

func TestCheckMaxLen(t *testing.T) {
	for n, ok := range map[int]bool{1: false, 2: true, DefaultMaxLen: true, MaxSeqLen: true, MaxSeqLen + 1: false} {
		if err := CheckMaxLen(n); (err == nil) != ok {
			t.Errorf("CheckMaxLen(%d) = %v", n, err)
		}
	}
}
