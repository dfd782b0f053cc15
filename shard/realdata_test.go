package shard

import (
	"os"
	"path/filepath"
	"testing"
)

// sharedData returns the path of a file in ../shared/data (beside the
// repository, present on development and CI machines, never in a user's
// clone). When it is absent the test says so and stops: the fixture tests
// cover every behaviour without it.
func sharedData(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", "data", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("real data file %s is absent (it lives in ../shared/data beside the repository on development and CI machines); the fixture tests cover the reader without it", p)
	}
	return p
}

// TestRealFiles checks the reader against the class counts the data README states.
func TestRealFiles(t *testing.T) {
	tests := []struct {
		file   string
		counts map[Label]int
	}{
		{"combined-sample.csv", map[Label]int{Stress: 31, PersonalityDisorder: 26, Suicidal: 16, Depression: 14, Bipolar: 13, Normal: 11, Anxiety: 10}},
		{"combined-val.csv", map[Label]int{Normal: 1603, Depression: 1508, Suicidal: 1063, Anxiety: 361, Bipolar: 250, Stress: 229, PersonalityDisorder: 89}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			ds, err := ReadFile(sharedData(t, tc.file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			counts := ds.ClassCounts()
			for l, want := range tc.counts {
				total += want
				if counts[l] != want {
					t.Errorf("%s: %d rows, want %d", l, counts[l], want)
				}
			}
			if ds.Report.Records != total || ds.Report.Kept != total {
				t.Errorf("records %d, kept %d, want %d (report %+v)", ds.Report.Records, ds.Report.Kept, total, ds.Report.Dropped)
			}
		})
	}
}
