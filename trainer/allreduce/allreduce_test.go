package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// bertBaseR8 is the trainable parameter count of bert-base with r=8 LoRA on
// query/value plus the 7-class classifier.
const bertBaseR8 = 300_295

func TestSegments(t *testing.T) {
	for _, tc := range []struct {
		n, w int
		want []int
	}{
		{0, 3, []int{0, 0, 0, 0}},
		{2, 3, []int{0, 1, 2, 2}},
		{10, 4, []int{0, 3, 6, 8, 10}},
		{8, 4, []int{0, 2, 4, 6, 8}},
	} {
		if got := segments(tc.n, tc.w); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("segments(%d, %d) = %v, want %v", tc.n, tc.w, got, tc.want)
		}
	}
}

func TestAllReduceSum(t *testing.T) {
	for w := 1; w <= 5; w++ {
		for _, chunk := range []int{0, 1024} { // default 256 KiB, and many chunks per segment
			c := newCluster(t, w, func(cfg *Config) { cfg.ChunkBytes = chunk })
			for step, n := range []int{0, 1, w - 1, 1000, bertBaseR8} {
				t.Run(fmt.Sprintf("world=%d/chunk=%d/n=%d", w, chunk, n), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
					bufs, sum, abs := randomBuffers(rng, w, n)
					c.allReduce(t, uint64(step), bufs)
					checkSum(t, bufs, sum, abs)
				})
			}
		}
	}
}

// TestAllReduceManySteps reuses one ring for many steps whose sums are exact.
func TestAllReduceManySteps(t *testing.T) {
	const w, n, steps = 3, 1000, 200
	c := newCluster(t, w, nil)
	bufs := make([][]float32, w)
	for step := range uint64(steps) {
		for r := range bufs {
			bufs[r] = make([]float32, n)
			for j := range bufs[r] {
				bufs[r][j] = float32(int(step)*r + j)
			}
		}
		c.allReduce(t, step, bufs)
		for r := range bufs {
			for j, v := range bufs[r] {
				if want := float32(int(step)*(0+1+2) + w*j); v != want {
					t.Fatalf("step %d rank %d element %d = %v, want %v", step, r, j, v, want)
				}
			}
		}
	}
}

func TestAllReduceStepOrder(t *testing.T) {
	c := newCluster(t, 2, nil)
	bufs := [][]float32{{1}, {2}}
	c.allReduce(t, 5, bufs)
	errs, _ := c.reduce([]int{0}, func(r *Ring) error { return r.AllReduce(context.Background(), 5, bufs[0]) })
	if !errors.Is(errs[0], ErrStepOrder) {
		t.Fatalf("repeating step 5: %v, want ErrStepOrder", errs[0])
	}
	c.allReduce(t, 6, bufs)
}

func TestAllReduceLengthMismatch(t *testing.T) {
	c := newCluster(t, 3, nil)
	bufs := [][]float32{make([]float32, 10), make([]float32, 10), make([]float32, 11)}
	errs, _ := c.reduce(nil, func(r *Ring) error { return r.AllReduce(context.Background(), 1, bufs[r.Rank()]) })
	for i, err := range errs {
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("rank %d: %v, want ErrProtocol", i, err)
		}
	}
	for i := range bufs {
		bufs[i] = []float32{float32(i)}
	}
	c.allReduce(t, 2, bufs) // the ring recovers
	if bufs[2][0] != 3 {
		t.Fatalf("sum after recovery = %v, want 3", bufs[2][0])
	}
}

func TestNaiveAllReduceSum(t *testing.T) {
	for _, w := range []int{1, 2, 4} {
		c := newCluster(t, w, func(cfg *Config) { cfg.ChunkBytes = 4096 })
		for step, n := range []int{0, 1, 1000, bertBaseR8} {
			t.Run(fmt.Sprintf("world=%d/n=%d", w, n), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
				bufs, sum, abs := randomBuffers(rng, w, n)
				errs, _ := c.reduce(nil, func(r *Ring) error {
					return r.NaiveAllReduce(context.Background(), uint64(step), bufs[r.Rank()])
				})
				for i, err := range errs {
					if err != nil {
						t.Fatalf("rank %d: %v", i, err)
					}
				}
				checkSum(t, bufs, sum, abs)
			})
		}
	}
}
