package shard

import (
	"fmt"
	"slices"
	"testing"
)

// padded is the number of token slots Tokens.Batch allocates for an
// epoch's global batches: each batch is as long as its longest row.
func padded(order []int, length func(int) int, gb int) int {
	total := 0
	for lo := 0; lo < len(order); lo += gb {
		b := order[lo:min(lo+gb, len(order))]
		longest := 0
		for _, r := range b {
			longest = max(longest, length(r))
		}
		total += longest * len(b)
	}
	return total
}

func TestBucketByLength(t *testing.T) {
	// A long-tailed length distribution like Combined Data.csv's: mostly
	// short statements, a few at the max length.
	lengthOf := func(n int) func(int) int {
		lens := make([]int, n)
		rng := splitMix64{state: 7}
		for i := range lens {
			lens[i] = 8 + int(rng.below(40))
			if rng.below(10) == 0 {
				lens[i] = 128
			}
		}
		return func(r int) int { return lens[r] }
	}
	for _, tc := range []struct{ n, gb int }{{1000, 16}, {997, 8}, {5000, 32}, {40, 8}, {8, 8}, {5, 8}} {
		t.Run(fmt.Sprintf("n%d/b%d", tc.n, tc.gb), func(t *testing.T) {
			length := lengthOf(tc.n)
			order := EpochOrder(tc.n, 42, 1)
			got := BucketByLength(order, length, tc.gb, 42, 1)

			if len(got) != tc.n {
				t.Fatalf("%d rows, want %d", len(got), tc.n)
			}
			seen := make([]bool, tc.n)
			for _, r := range got {
				if seen[r] {
					t.Fatalf("row %d twice", r)
				}
				seen[r] = true
			}
			if again := BucketByLength(EpochOrder(tc.n, 42, 1), length, tc.gb, 42, 1); !slices.Equal(again, got) {
				t.Fatal("the same epoch bucketed twice differs: resume would not be exact")
			}
			if order[0] != EpochOrder(tc.n, 42, 1)[0] {
				t.Fatal("the input order was modified")
			}
			if tc.n <= tc.gb {
				if !slices.Equal(got, order) {
					t.Fatal("a single batch was reordered")
				}
				return
			}
			// The short last batch stays last and short.
			if r := tc.n % tc.gb; r != 0 && GlobalBatchSize(len(got), tc.gb, StepsPerEpoch(len(got), tc.gb)-1) != r {
				t.Fatalf("last batch has %d rows, want %d", GlobalBatchSize(len(got), tc.gb, StepsPerEpoch(len(got), tc.gb)-1), r)
			}
			before, after := padded(order, length, tc.gb), padded(got, length, tc.gb)
			if tc.n >= 1000 && float64(after) > 0.7*float64(before) {
				t.Fatalf("padded token slots %d → %d: bucketing saved under 30%%", before, after)
			}
			if other := BucketByLength(EpochOrder(tc.n, 42, 2), length, tc.gb, 42, 2); slices.Equal(other, got) {
				t.Fatal("two epochs have the same batches")
			}
			t.Logf("padded token slots %d → %d (%.0f%%)", before, after, 100*float64(after)/float64(before))
		})
	}
}
