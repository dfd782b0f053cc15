package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gpuMemory samples how much memory a CUDA device has in use while one
// benchmark process runs, and reports the peak above what was in use before
// it started. Go cannot ask loraft's libtorch allocator for its peak (gotch
// binds no CUDA memory statistics), and the PyTorch reference's own
// max_memory_allocated leaves out the CUDA context and the allocator's
// cache; device memory in use is what both processes cost the GPU, measured
// the same way for both. It assumes the benchmark's processes are the only
// ones using the device, as on a machine lent for the check.
type gpuMemory struct {
	// used returns the MB in use on the device now.
	used func(ctx context.Context) (float64, error)
	// every is the sampling interval.
	every time.Duration
}

// nvidiaSMIMemory samples device index's memory.used with nvidia-smi, each
// query bounded by a deadline so a wedged driver cannot hang the benchmark.
func nvidiaSMIMemory(index int) gpuMemory {
	return gpuMemory{every: 100 * time.Millisecond, used: func(ctx context.Context) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
			"--id="+strconv.Itoa(index)).Output()
		if err != nil {
			if cerr := ctx.Err(); cerr != nil { // stopped (Canceled) or wedged (DeadlineExceeded)
				err = cerr
			}
			return 0, fmt.Errorf("nvidia-smi memory.used of GPU %d: %w", index, err)
		}
		return parseMemoryUsed(out)
	}}
}

// parseMemoryUsed reads nvidia-smi's "--format=csv,noheader,nounits"
// answer: one number of MiB on the first line.
func parseMemoryUsed(out []byte) (float64, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	v, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("nvidia-smi memory.used: want MiB, got %q", line)
	}
	return v, nil
}

// cudaIndex is the device index of "cuda" (0) or "cuda:N"; ok is false for
// any other device.
func cudaIndex(device string) (index int, ok bool) {
	rest, found := strings.CutPrefix(device, "cuda")
	if !found {
		return 0, false
	}
	if rest == "" {
		return 0, true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
	if err != nil || n < 0 || !strings.HasPrefix(rest, ":") {
		return 0, false
	}
	return n, true
}

// watch takes the baseline and samples until stop, which returns the peak
// MB in use above the baseline. A failed sample ends the sampling, and stop
// reports it; a sample that stop itself cut short (an error wrapping
// context.Canceled) is no failure.
func (g gpuMemory) watch(ctx context.Context) (stop func() (float64, error), err error) {
	base, err := g.used(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		peak    = base
		lastErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(g.every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			v, err := g.used(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) { // not stop's doing
					lastErr = err
				}
				return
			}
			peak = max(peak, v)
		}
	}()
	return func() (float64, error) {
		cancel()
		wg.Wait()
		if lastErr != nil {
			return 0, lastErr
		}
		return peak - base, nil
	}, nil
}
