package shard

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// ErrBadShard reports an impossible sharding request (rank outside the
// world, a global batch smaller than the world, …).
var ErrBadShard = errors.New("bad shard request")

// EpochOrder is the seeded permutation of n training rows for one epoch: a
// Fisher–Yates shuffle driven by SplitMix64, written out here so the order
// never changes with the Go release. It depends on (n, seed, epoch) only, not
// on the world size, so a run gives each global batch the same rows whether
// it trains on one rank or four.
func EpochOrder(n int, seed uint64, epoch int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	rng := splitMix64{state: seed ^ (uint64(epoch)+1)*0x9E3779B97F4A7C15}
	for i := n - 1; i > 0; i-- {
		j := int(rng.below(uint64(i + 1)))
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// StepsPerEpoch is the number of optimizer steps (global batches) in an epoch
// of n rows: the last batch may be short.
func StepsPerEpoch(n, globalBatch int) int {
	if globalBatch <= 0 {
		return 0
	}
	return (n + globalBatch - 1) / globalBatch
}

// RankBatches returns, for each step of the epoch, the positions in order
// that rank owns: global batch k is order[k·B : (k+1)·B], and rank r takes
// its elements r, r+w, r+2w, … Every rank gets the same number of steps (so
// ranks stay in lockstep for the all-reduce), the ranks' rows are disjoint
// and together cover the epoch. A rank's batch in the last, short step can be
// empty when that step has fewer rows than ranks; the trainer then contributes
// a zero gradient. Gradients must be summed over rows and divided by the
// global batch's size (GlobalBatchSize) to equal single-rank training.
func RankBatches(order []int, globalBatch, rank, world int) ([][]int, error) {
	if world < 1 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("rank %d of world %d: %w", rank, world, ErrBadShard)
	}
	if globalBatch < world {
		return nil, fmt.Errorf("global batch %d smaller than world %d: %w", globalBatch, world, ErrBadShard)
	}
	steps := StepsPerEpoch(len(order), globalBatch)
	out := make([][]int, steps)
	for k := range out {
		lo, hi := k*globalBatch, min((k+1)*globalBatch, len(order))
		b := make([]int, 0, (hi-lo+world-1)/world)
		for p := lo + rank; p < hi; p += world {
			b = append(b, order[p])
		}
		out[k] = b
	}
	return out, nil
}

// GlobalBatchSize is the number of rows in step k of an epoch of n rows.
func GlobalBatchSize(n, globalBatch, step int) int {
	return max(0, min(globalBatch, n-step*globalBatch))
}

// splitMix64 is Steele, Lea and Flood's SplitMix64 generator.
type splitMix64 struct{ state uint64 }

func (s *splitMix64) next() uint64 {
	s.state += 0x9E3779B97F4A7C15
	z := s.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// below returns a uniform value in [0, n) by rejection (no modulo bias).
func (s *splitMix64) below(n uint64) uint64 {
	limit := -n % n // 2^64 mod n
	for {
		if v := s.next(); v >= limit {
			return v % n
		}
	}
}

// BucketPool is how many global batches BucketByLength sorts together: as
// in HF's group_by_length (50 "mega-batches"), enough for each batch to
// hold rows of similar length, few enough that an epoch stays well mixed.
const BucketPool = 50

// BucketByLength reorders an epoch's order so that each global batch holds
// rows of similar length (length(row) gives a row's token count), cutting
// the padding that Tokens.Batch adds up to each batch's longest row. It
// sorts pools of BucketPool global batches by length (longest first, ties
// in order), cuts the result into global batches, and shuffles the full
// batches with a generator seeded by (seed, epoch); a short last batch
// stays last, so StepsPerEpoch and GlobalBatchSize still hold. Like
// EpochOrder it depends on the global batch only, never on the world size:
// RankBatches then gives every world size the same global batches.
func BucketByLength(order []int, length func(row int) int, globalBatch int, seed uint64, epoch int) []int {
	if globalBatch < 1 || len(order) <= globalBatch {
		return order
	}
	sorted := make([]int, len(order))
	copy(sorted, order)
	pool := BucketPool * globalBatch
	for lo := 0; lo < len(sorted); lo += pool {
		p := sorted[lo:min(lo+pool, len(sorted))]
		lens := make(map[int]int, len(p))
		for _, r := range p {
			lens[r] = length(r)
		}
		slices.SortStableFunc(p, func(a, b int) int { return cmp.Compare(lens[b], lens[a]) })
	}
	full := len(sorted) / globalBatch
	perm := make([]int, full)
	for i := range perm {
		perm[i] = i
	}
	// Not EpochOrder's stream: bucketing must not correlate with the shuffle.
	rng := splitMix64{state: seed ^ (uint64(epoch)+1)*0xD1B54A32D192ED03}
	for i := full - 1; i > 0; i-- {
		j := int(rng.below(uint64(i + 1)))
		perm[i], perm[j] = perm[j], perm[i]
	}
	out := make([]int, 0, len(sorted))
	for _, k := range perm {
		out = append(out, sorted[k*globalBatch:(k+1)*globalBatch]...)
	}
	return append(out, sorted[full*globalBatch:]...)
}
