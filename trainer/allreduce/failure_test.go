package allreduce

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"
)

const testStepTimeout = 2 * time.Second

// attached reports whether r receives step from rank from.
func attached(r *Ring, step uint64, from int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ib, ok := r.inboxes[inboxKey{step: step, from: from}]
	return ok && ib.attached
}

// TestPeerNeverCalls leaves one rank out of a step: the others give up with
// ErrTimeout within StepTimeout, and the next step with everyone works.
func TestPeerNeverCalls(t *testing.T) {
	const w, n = 3, 1000
	c := newCluster(t, w, func(cfg *Config) { cfg.StepTimeout = testStepTimeout })
	bufs := make([][]float32, w)
	for r := range bufs {
		bufs[r] = make([]float32, n)
	}
	errs, took := c.reduce([]int{0, 1}, func(r *Ring) error { return r.AllReduce(context.Background(), 1, bufs[r.Rank()]) })
	for _, i := range []int{0, 1} {
		t.Logf("rank %d after %v: %v", i, took[i], errs[i])
		if !errors.Is(errs[i], ErrTimeout) {
			t.Errorf("rank %d: %v, want ErrTimeout", i, errs[i])
		}
		if took[i] > testStepTimeout+abortGrace+500*time.Millisecond {
			t.Errorf("rank %d returned after %v, StepTimeout %v", i, took[i], testStepTimeout)
		}
	}

	for r := range bufs {
		for j := range bufs[r] {
			bufs[r][j] = 1
		}
	}
	c.allReduce(t, 2, bufs)
	if bufs[2][n-1] != w {
		t.Fatalf("sum after recovery = %v, want %d", bufs[2][n-1], w)
	}
}

// TestPeerClosedMidStep closes a rank while its neighbour streams a step to
// it: the others fail fast with ErrPeerLost, long before StepTimeout. A new
// ring on the same addresses with a new generation then works.
func TestPeerClosedMidStep(t *testing.T) {
	const w, n = 3, bertBaseR8
	c := newCluster(t, w, func(cfg *Config) { cfg.StepTimeout = testStepTimeout })
	bufs := make([][]float32, w)
	for r := range bufs {
		bufs[r] = make([]float32, n)
	}

	done := make(chan struct{})
	var errs []error
	var took []time.Duration
	go func() {
		defer close(done)
		errs, took = c.reduce([]int{0, 1}, func(r *Ring) error { return r.AllReduce(context.Background(), 1, bufs[r.Rank()]) })
	}()
	waitFor(t, "rank 1 to stream step 1 to rank 2", 5*time.Second, func() bool { return attached(c.rings[2], 1, 1) })
	closedAt := time.Now()
	if err := c.rings[2].Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	for _, i := range []int{0, 1} {
		t.Logf("rank %d after %v: %v", i, took[i], errs[i])
		if !errors.Is(errs[i], ErrPeerLost) {
			t.Errorf("rank %d: %v, want ErrPeerLost", i, errs[i])
		}
		if d := time.Since(closedAt); d > testStepTimeout {
			t.Errorf("rank %d noticed after %v (took %v)", i, d, took[i])
		}
	}

	// Re-form the ring: rank 2 listens again with generation 2 on its old
	// address, the others move to generation 2.
	cfg := c.rings[2].cfg
	cfg.Generation = 2
	lis, err := net.Listen("tcp", cfg.Peers[2])
	if err != nil {
		t.Fatal(err)
	}
	c.rings[2], err = listen(cfg, lis)
	if err != nil {
		t.Fatal(err)
	}
	c.rings[0].SetGeneration(2)
	c.rings[1].SetGeneration(2)
	for r := range bufs {
		for j := range bufs[r] {
			bufs[r][j] = float32(r)
		}
	}
	c.allReduce(t, 1, bufs)
	if bufs[0][n-1] != 0+1+2 {
		t.Fatalf("sum on the re-formed ring = %v, want 3", bufs[0][n-1])
	}
}

// TestCloseDuringStep closes a rank inside its own AllReduce call: the call
// returns ErrClosed, Close waits for it, and its neighbour fails fast.
func TestCloseDuringStep(t *testing.T) {
	const w, n = 3, 1000
	c := newCluster(t, w, func(cfg *Config) { cfg.StepTimeout = testStepTimeout })
	bufs := make([][]float32, w)
	for r := range bufs {
		bufs[r] = make([]float32, n)
	}
	done := make(chan struct{})
	var errs []error
	go func() {
		defer close(done)
		// Rank 0 stays out, so the step cannot finish.
		errs, _ = c.reduce([]int{1, 2}, func(r *Ring) error { return r.AllReduce(context.Background(), 1, bufs[r.Rank()]) })
	}()
	waitFor(t, "rank 2 to receive step 1 from rank 1", 5*time.Second, func() bool { return attached(c.rings[2], 1, 1) })
	start := time.Now()
	if err := c.rings[2].Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if d := time.Since(start); d > testStepTimeout {
		t.Errorf("the step ended %v after Close", d)
	}
	t.Logf("rank 1: %v; rank 2: %v", errs[1], errs[2])
	if !errors.Is(errs[2], ErrClosed) {
		t.Errorf("rank 2: %v, want ErrClosed", errs[2])
	}
	if !errors.Is(errs[1], ErrPeerLost) {
		t.Errorf("rank 1: %v, want ErrPeerLost", errs[1])
	}
	if err := c.rings[2].AllReduce(context.Background(), 2, bufs[2]); !errors.Is(err, ErrClosed) {
		t.Errorf("AllReduce after Close: %v, want ErrClosed", err)
	}
}

// TestCallerDeadline: the caller's context bounds a step like StepTimeout.
func TestCallerDeadline(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.rings[0].AllReduce(ctx, 1, []float32{1})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

// TestCloseLeavesNoGoroutines runs good and failed steps, closes every rank
// and checks that the goroutine count returns to where it started.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c := newCluster(t, 3, func(cfg *Config) { cfg.StepTimeout = 500 * time.Millisecond })
	bufs := [][]float32{make([]float32, 5000), make([]float32, 5000), make([]float32, 5000)}
	c.allReduce(t, 1, bufs)
	c.reduce([]int{0, 1}, func(r *Ring) error { return r.AllReduce(context.Background(), 2, bufs[r.Rank()]) })
	c.rings[1].SetGeneration(2)
	c.reduce(nil, func(r *Ring) error { return r.AllReduce(context.Background(), 3, bufs[r.Rank()]) })
	c.close()
	waitFor(t, "goroutines to end", 5*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}

// TestPeerGoneBetweenSteps closes a rank between steps: the next step fails
// fast on the others, since a peer that was reached before and now refuses
// connections is gone, not starting up.
func TestPeerGoneBetweenSteps(t *testing.T) {
	const w, n = 3, 1000
	const stepTimeout = 10 * time.Second
	c := newCluster(t, w, func(cfg *Config) { cfg.StepTimeout = stepTimeout })
	bufs := [][]float32{make([]float32, n), make([]float32, n), make([]float32, n)}
	c.allReduce(t, 1, bufs)
	if err := c.rings[1].Close(); err != nil {
		t.Fatal(err)
	}
	errs, took := c.reduce([]int{0, 2}, func(r *Ring) error { return r.AllReduce(context.Background(), 2, bufs[r.Rank()]) })
	for _, i := range []int{0, 2} {
		t.Logf("rank %d after %v: %v", i, took[i], errs[i])
		if !errors.Is(errs[i], ErrPeerLost) {
			t.Errorf("rank %d: %v, want ErrPeerLost", i, errs[i])
		}
		if took[i] > stepTimeout/2 {
			t.Errorf("rank %d took %v to notice (StepTimeout %v)", i, took[i], stepTimeout)
		}
	}
}
