package shard

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// syntheticDataset builds a dataset with the given rows per class, like a
// skewed real file (the smallest class has a handful of rows).
func syntheticDataset(t *testing.T, perClass [NumLabels]int) *Dataset {
	t.Helper()
	var b strings.Builder
	b.WriteString(",statement,status\n")
	n := 0
	for l, c := range perClass {
		for i := 0; i < c; i++ {
			fmt.Fprintf(&b, "%d,statement %d of class %d,%s\n", n, i, l, Label(l))
			n++
		}
	}
	ds, err := Read(strings.NewReader(b.String()), "synthetic.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

var skewed = [NumLabels]int{1603, 1508, 1063, 361, 250, 229, 89}

func TestSplitDeterministicAndStratified(t *testing.T) {
	ds := syntheticDataset(t, skewed)
	for _, ratios := range []Ratios{DefaultRatios, {0.7, 0.15, 0.15}, {0.9, 0.1, 0}} {
		t.Run(ratios.String(), func(t *testing.T) {
			a, err := NewSplit(ds, 7, ratios)
			if err != nil {
				t.Fatal(err)
			}
			b, err := NewSplit(ds, 7, ratios)
			if err != nil {
				t.Fatal(err)
			}
			if a.Hash() != b.Hash() || a.Spec.ID() != b.Spec.ID() {
				t.Fatalf("two splits with the same seed differ: %s vs %s", a.Hash(), b.Hash())
			}
			c, _ := NewSplit(ds, 8, ratios)
			if c.Hash() == a.Hash() {
				t.Fatal("seed 8 gives the same split as seed 7")
			}
			// Disjoint and covering.
			seen := make([]int, len(ds.Rows))
			for _, p := range a.Parts() {
				for _, i := range p.Rows {
					seen[i]++
				}
			}
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("row %d is in %d parts", i, n)
				}
			}
			// Each class within one row of its exact share in each part.
			shares := map[string]float64{"train": ratios.Train, "val": ratios.Val, "test": ratios.Test}
			for _, p := range a.Parts() {
				var got [NumLabels]int
				for _, i := range p.Rows {
					got[ds.Rows[i].Label]++
				}
				for l := range NumLabels {
					exact := float64(skewed[l]) * shares[p.Name]
					if math.Abs(float64(got[l])-exact) > 1 {
						t.Errorf("%s/%s: %d rows, exact share %.1f", p.Name, Label(l), got[l], exact)
					}
				}
			}
		})
	}
}

// TestSplitGolden pins the split of a small file so that a change in the
// algorithm (or a platform difference) cannot go unnoticed: every machine
// must put the same rows in the same parts.
func TestSplitGolden(t *testing.T) {
	ds := syntheticDataset(t, [NumLabels]int{10, 10, 10, 10, 10, 10, 10})
	sp, err := NewSplit(ds, 42, DefaultRatios)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sp.Hash(), "3e52411dbc5e80e49ca4d59aed0403cb"; got != want {
		t.Errorf("split hash = %s, want %s", got, want)
	}
	if got, want := sp.Spec.ID(), "aa55228969e20117"; got != want {
		t.Errorf("split id = %s, want %s", got, want)
	}
	if got, want := EpochOrder(10, 42, 3), []int{2, 9, 7, 3, 4, 1, 8, 5, 6, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("EpochOrder(10, 42, 3) = %v, want %v", got, want)
	}
}

func TestParseRatios(t *testing.T) {
	tests := []struct {
		in      string
		want    Ratios
		wantErr bool
	}{
		{"80/10/10", DefaultRatios, false},
		{"0.8,0.1,0.1", DefaultRatios, false},
		{"90/10/0", Ratios{0.9, 0.1, 0}, false},
		{"80/10", Ratios{}, true},
		{"80/20/10", Ratios{}, true},
		{"0/50/50", Ratios{}, true},
		{"-10/60/50", Ratios{}, true},
		{"a/b/c", Ratios{}, true},
		{"NaN/0/0", Ratios{}, true},
	}
	for _, tc := range tests {
		got, err := ParseRatios(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrBadRatios) {
				t.Errorf("ParseRatios(%q) error = %v, want ErrBadRatios", tc.in, err)
			}
			continue
		}
		if err != nil || math.Abs(got.Train-tc.want.Train) > 1e-12 || math.Abs(got.Val-tc.want.Val) > 1e-12 || math.Abs(got.Test-tc.want.Test) > 1e-12 {
			t.Errorf("ParseRatios(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestRankBatches(t *testing.T) {
	for _, n := range []int{0, 1, 7, 64, 1001} {
		for _, gb := range []int{4, 8, 32} {
			for world := 1; world <= 4; world++ {
				t.Run(fmt.Sprintf("n%d/b%d/w%d", n, gb, world), func(t *testing.T) {
					order := EpochOrder(n, 3, 1)
					if !reflect.DeepEqual(order, EpochOrder(n, 3, 1)) {
						t.Fatal("EpochOrder is not deterministic")
					}
					steps := StepsPerEpoch(n, gb)
					seen := make([]int, n)
					for rank := range world {
						batches, err := RankBatches(order, gb, rank, world)
						if err != nil {
							t.Fatal(err)
						}
						if len(batches) != steps {
							t.Fatalf("rank %d has %d batches, want %d like every rank", rank, len(batches), steps)
						}
						for _, b := range batches {
							for _, i := range b {
								seen[i]++
							}
						}
					}
					for i, c := range seen {
						if c != 1 {
							t.Fatalf("row %d is in %d shards, want exactly 1", i, c)
						}
					}
					// The rows of global step k are the same whatever the world size.
					for k := range steps {
						var all []int
						for rank := range world {
							batches, _ := RankBatches(order, gb, rank, world)
							all = append(all, batches[k]...)
						}
						slices.Sort(all)
						want := slices.Clone(order[k*gb : k*gb+GlobalBatchSize(n, gb, k)])
						slices.Sort(want)
						if !reflect.DeepEqual(all, want) {
							t.Fatalf("step %d rows %v, want %v", k, all, want)
						}
					}
				})
			}
		}
	}
}

func TestEpochOrderIsPermutationAndVaries(t *testing.T) {
	a, b := EpochOrder(100, 1, 0), EpochOrder(100, 1, 1)
	if reflect.DeepEqual(a, b) {
		t.Fatal("epochs 0 and 1 have the same order")
	}
	s := slices.Clone(a)
	slices.Sort(s)
	for i, v := range s {
		if v != i {
			t.Fatalf("EpochOrder is not a permutation: %v", a)
		}
	}
}

func TestRankBatchesErrors(t *testing.T) {
	order := EpochOrder(10, 1, 0)
	for _, tc := range []struct{ gb, rank, world int }{{4, 4, 4}, {4, -1, 2}, {2, 0, 3}, {4, 0, 0}} {
		if _, err := RankBatches(order, tc.gb, tc.rank, tc.world); !errors.Is(err, ErrBadShard) {
			t.Errorf("RankBatches(gb=%d, rank=%d, world=%d) error = %v, want ErrBadShard", tc.gb, tc.rank, tc.world, err)
		}
	}
}
