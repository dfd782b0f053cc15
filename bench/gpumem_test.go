package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseMemoryUsed(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want float64
		ok   bool
	}{
		{"1234\n", 1234, true},
		{" 81559 \n", 81559, true},
		{"0\n7\n", 0, true}, // the first GPU's line
		{"", 0, false},
		{"[N/A]\n", 0, false},
		{"-3\n", 0, false},
		{"NVIDIA-SMI has failed\n", 0, false},
	} {
		got, err := parseMemoryUsed([]byte(tc.out))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMemoryUsed(%q) = %v, %v; want %v, ok %v", tc.out, got, err, tc.want, tc.ok)
		}
	}
}

func TestCudaIndex(t *testing.T) {
	for _, tc := range []struct {
		device string
		index  int
		ok     bool
	}{
		{"cuda", 0, true}, {"cuda:0", 0, true}, {"cuda:3", 3, true},
		{"cpu", 0, false}, {"cuda:", 0, false}, {"cuda:-1", 0, false}, {"cuda1", 0, false}, {"cudax", 0, false},
	} {
		if i, ok := cudaIndex(tc.device); i != tc.index || ok != tc.ok {
			t.Errorf("cudaIndex(%q) = %d, %v; want %d, %v", tc.device, i, ok, tc.index, tc.ok)
		}
	}
}

// scriptedMemory answers memory.used from values in turn (the last one
// repeated) and signals each answer on seen.
type scriptedMemory struct {
	mu     sync.Mutex
	values []float64
	failAt int // the call (1-based) that fails; 0: none
	calls  int
	seen   chan int
}

func (s *scriptedMemory) used(context.Context) (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	select {
	case s.seen <- s.calls:
	default:
	}
	if s.calls == s.failAt {
		return 0, errors.New("nvidia-smi wedged")
	}
	return s.values[min(s.calls, len(s.values))-1], nil
}

// waitCalls returns once s has answered n times.
func (s *scriptedMemory) waitCalls(t *testing.T, n int) {
	t.Helper()
	for c := range s.seen {
		if c >= n {
			return
		}
	}
}

func TestGPUMemoryWatch(t *testing.T) {
	t.Run("peak above the baseline", func(t *testing.T) {
		s := &scriptedMemory{values: []float64{500, 700, 2500, 900}, seen: make(chan int, 100)}
		stop, err := gpuMemory{used: s.used, every: time.Millisecond}.watch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.waitCalls(t, 5)
		peak, err := stop()
		if err != nil || peak != 2000 {
			t.Fatalf("stop() = %v, %v; want 2000 MB above the 500 MB baseline", peak, err)
		}
	})
	t.Run("a failed sample is reported", func(t *testing.T) {
		s := &scriptedMemory{values: []float64{500, 800}, failAt: 3, seen: make(chan int, 100)}
		stop, err := gpuMemory{used: s.used, every: time.Millisecond}.watch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.waitCalls(t, 3)
		if peak, err := stop(); err == nil || !strings.Contains(err.Error(), "wedged") {
			t.Fatalf("stop() = %v, %v; want the sample's error", peak, err)
		}
	})
	t.Run("a sample that stop cuts short is no failure", func(t *testing.T) {
		started := make(chan struct{})
		calls := 0
		used := func(ctx context.Context) (float64, error) {
			if calls++; calls == 1 {
				return 100, nil
			}
			close(started)
			<-ctx.Done() // nvidia-smi killed by stop
			return 0, fmt.Errorf("nvidia-smi: %w", ctx.Err())
		}
		stop, err := gpuMemory{used: used, every: time.Millisecond}.watch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		<-started
		if peak, err := stop(); err != nil || peak != 0 {
			t.Fatalf("stop() = %v, %v; want 0, nil", peak, err)
		}
	})
	t.Run("no baseline, no watch", func(t *testing.T) {
		s := &scriptedMemory{failAt: 1, seen: make(chan int, 100)}
		if _, err := (gpuMemory{used: s.used, every: time.Millisecond}).watch(context.Background()); err == nil {
			t.Fatal("watch started without a baseline")
		}
	})
}

// TestNvidiaSMIMemory runs a stand-in nvidia-smi from PATH: the query asks
// for the right GPU and reads its answer.
func TestNvidiaSMIMemory(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"$*\" > " + filepath.Join(dir, "args") + "\necho 4321\n"
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	got, err := nvidiaSMIMemory(2).used(context.Background())
	if err != nil || got != 4321 {
		t.Fatalf("used() = %v, %v; want 4321", got, err)
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "--query-gpu=memory.used --format=csv,noheader,nounits --id=2"; strings.TrimSpace(string(args)) != want {
		t.Errorf("nvidia-smi %s, want %s", args, want)
	}
}
