package allreduce

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
)

const testRun = "run-test"

// cluster is World ranks of one ring on 127.0.0.1, each serving on a
// listener opened on port 0.
type cluster struct {
	t     testing.TB
	rings []*Ring
}

// newCluster starts w ranks. mod, if not nil, adjusts each rank's Config.
func newCluster(t testing.TB, w int, mod func(*Config)) *cluster {
	t.Helper()
	lis := make([]net.Listener, w)
	peers := make([]string, w)
	for i := range w {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i], peers[i] = l, l.Addr().String()
	}
	c := &cluster{t: t, rings: make([]*Ring, w)}
	for i := range w {
		cfg := Config{Rank: i, World: w, Peers: peers, RunID: testRun, Generation: 1, StepTimeout: 20 * time.Second}
		if mod != nil {
			mod(&cfg)
		}
		r, err := listen(cfg, lis[i])
		if err != nil {
			t.Fatal(err)
		}
		c.rings[i] = r
	}
	t.Cleanup(c.close)
	return c
}

func (c *cluster) close() {
	for i, r := range c.rings {
		if err := r.Close(); err != nil {
			c.t.Errorf("rank %d: Close: %v", i, err)
		}
	}
}

// reduce runs fn on the ranks in ranks (all of them when nil) concurrently
// and returns each rank's error and how long its call took.
func (c *cluster) reduce(ranks []int, fn func(r *Ring) error) ([]error, []time.Duration) {
	if ranks == nil {
		for i := range c.rings {
			ranks = append(ranks, i)
		}
	}
	errs := make([]error, len(c.rings))
	took := make([]time.Duration, len(c.rings))
	var wg sync.WaitGroup
	for _, i := range ranks {
		wg.Go(func() {
			start := time.Now()
			errs[i] = fn(c.rings[i])
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	return errs, took
}

// allReduce runs AllReduce(step) on every rank with its buffer and fails the
// test on any error.
func (c *cluster) allReduce(t testing.TB, step uint64, bufs [][]float32) {
	t.Helper()
	errs, _ := c.reduce(nil, func(r *Ring) error {
		return r.AllReduce(context.Background(), step, bufs[r.Rank()])
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d step %d: %v", i, step, err)
		}
	}
}

// randomBuffers returns w buffers of n random values in [-1, 1) and their
// float64 element-wise sum and sum of magnitudes.
func randomBuffers(rng *rand.Rand, w, n int) (bufs [][]float32, sum, abs []float64) {
	bufs = make([][]float32, w)
	sum, abs = make([]float64, n), make([]float64, n)
	for i := range bufs {
		bufs[i] = make([]float32, n)
		for j := range bufs[i] {
			v := float32(rng.Float64()*2 - 1)
			bufs[i][j] = v
			sum[j] += float64(v)
			abs[j] += math.Abs(float64(v))
		}
	}
	return bufs, sum, abs
}

// checkSum fails t unless every rank's buffer is the sum within float32
// rounding (w-1 additions, each off by at most half an ulp of the partial
// sum) and all ranks' buffers are bit-identical.
func checkSum(t testing.TB, bufs [][]float32, sum, abs []float64) {
	t.Helper()
	w := len(bufs)
	for j := range sum {
		tol := float64(w) * 0x1p-24 * abs[j] * 1.0001
		if got := float64(bufs[0][j]); math.Abs(got-sum[j]) > tol {
			t.Fatalf("element %d = %v, want %v ± %g", j, got, sum[j], tol)
		}
		for i := 1; i < w; i++ {
			if math.Float32bits(bufs[i][j]) != math.Float32bits(bufs[0][j]) {
				t.Fatalf("element %d: rank %d holds %v (%#08x), rank 0 holds %v (%#08x)", j, i,
					bufs[i][j], math.Float32bits(bufs[i][j]), bufs[0][j], math.Float32bits(bufs[0][j]))
			}
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	coordinatortest.Eventually(t, timeout, func() error {
		if !cond() {
			return errors.New("waiting for " + what)
		}
		return nil
	})
}
