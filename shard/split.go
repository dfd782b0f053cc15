package shard

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ErrBadRatios reports split ratios that are negative, do not sum to 1, or
// leave no training rows.
var ErrBadRatios = errors.New("split ratios must be non-negative, sum to 1 and give train a share")

// Ratios are the train/validation/test shares of a split.
type Ratios struct {
	Train, Val, Test float64
}

// DefaultRatios is the 80/10/10 split of a run that names none; flags and
// sweep specs write it as DefaultRatios.String().
var DefaultRatios = Ratios{0.8, 0.1, 0.1}

// ParseRatios reads split ratios as flags, sweep specs and trainers take
// them: "80/10/10" (percentages) or "0.8/0.1/0.1" (fractions), with '/' or
// ',' between the shares ("0.8,0.1,0.1"). It is the one parser of split
// ratios.
func ParseRatios(s string) (Ratios, error) {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == ',' })
	if len(parts) != 3 {
		return Ratios{}, fmt.Errorf("split %q: want three shares like 80/10/10: %w", s, ErrBadRatios)
	}
	var v [3]float64
	var sum float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return Ratios{}, fmt.Errorf("split %q: %q is not a number: %w", s, p, ErrBadRatios)
		}
		v[i], sum = f, sum+f
	}
	if math.Abs(sum-100) < 1e-6 {
		for i := range v {
			v[i] /= 100
		}
	}
	r := Ratios{v[0], v[1], v[2]}
	if err := r.Validate(); err != nil {
		return Ratios{}, fmt.Errorf("split %q: %w", s, err)
	}
	return r, nil
}

// Validate checks the ratios against ErrBadRatios.
func (r Ratios) Validate() error {
	if r.Train <= 0 || r.Val < 0 || r.Test < 0 || math.Abs(r.Train+r.Val+r.Test-1) > 1e-9 {
		return fmt.Errorf("%v/%v/%v: %w", r.Train, r.Val, r.Test, ErrBadRatios)
	}
	return nil
}

// String formats the ratios as percentages, e.g. "80/10/10".
func (r Ratios) String() string {
	f := func(x float64) string { return strconv.FormatFloat(x*100, 'f', -1, 64) }
	return f(r.Train) + "/" + f(r.Val) + "/" + f(r.Test)
}

// SplitSpec identifies a split on every machine: the dataset's bytes, the
// seed and the ratios.
type SplitSpec struct {
	DatasetSHA256 string
	Seed          uint64
	Ratios        Ratios
}

// ID is a short stable name for the split, used in cache keys and checkpoints.
func (s SplitSpec) ID() string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("loraft-split-v1|%s|%d|%s", s.DatasetSHA256, s.Seed, s.Ratios)))
	return hex.EncodeToString(sum[:8])
}

// Split holds row indices (into Dataset.Rows) of each part, each in
// ascending order.
type Split struct {
	Spec             SplitSpec
	Train, Val, Test []int
}

// Parts names the three parts in order, for reports.
func (s *Split) Parts() []struct {
	Name string
	Rows []int
} {
	return []struct {
		Name string
		Rows []int
	}{{"train", s.Train}, {"val", s.Val}, {"test", s.Test}}
}

// Hash fingerprints the split's membership (the row indices of each part).
func (s *Split) Hash() string {
	h := sha256.New()
	var b [8]byte
	for _, part := range [][]int{s.Train, s.Val, s.Test} {
		binary.LittleEndian.PutUint64(b[:], uint64(len(part)))
		h.Write(b[:])
		for _, i := range part {
			binary.LittleEndian.PutUint64(b[:], uint64(i))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// NewSplit divides the dataset class by class: within each class the rows
// are ordered by a keyed hash of (seed, statement) — so the order depends on
// the seed and the text, not on Go's random number generators, which may
// change between releases — and the first round(n·val) go to validation, the
// next round(n·test) to test and the rest to train. Each class's share in each
// part is therefore within half a row of exact.
func NewSplit(ds *Dataset, seed uint64, ratios Ratios) (*Split, error) {
	if err := ratios.Validate(); err != nil {
		return nil, fmt.Errorf("split of %s: %w", ds.Name, err)
	}
	sp := &Split{Spec: SplitSpec{DatasetSHA256: ds.SHA256, Seed: seed, Ratios: ratios}}
	var byClass [NumLabels][]int
	for i, r := range ds.Rows {
		byClass[r.Label] = append(byClass[r.Label], i)
	}
	var seedBytes [8]byte
	binary.LittleEndian.PutUint64(seedBytes[:], seed)
	for _, idx := range byClass {
		keys := make(map[int][32]byte, len(idx))
		for _, i := range idx {
			h := sha256.New()
			h.Write(seedBytes[:])
			h.Write([]byte(ds.Rows[i].Statement))
			var k [32]byte
			h.Sum(k[:0])
			keys[i] = k
		}
		slices.SortFunc(idx, func(a, b int) int {
			ka, kb := keys[a], keys[b]
			if c := slices.Compare(ka[:], kb[:]); c != 0 {
				return c
			}
			return a - b
		})
		n := len(idx)
		nVal := int(math.Round(float64(n) * ratios.Val))
		nTest := int(math.Round(float64(n) * ratios.Test))
		if nVal+nTest > n {
			nTest = n - nVal
		}
		sp.Val = append(sp.Val, idx[:nVal]...)
		sp.Test = append(sp.Test, idx[nVal:nVal+nTest]...)
		sp.Train = append(sp.Train, idx[nVal+nTest:]...)
	}
	slices.Sort(sp.Train)
	slices.Sort(sp.Val)
	slices.Sort(sp.Test)
	return sp, nil
}
