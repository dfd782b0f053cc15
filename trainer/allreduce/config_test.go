package allreduce

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	good := Config{Rank: 1, World: 3, Peers: []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}, RunID: "r"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"zero world", func(c *Config) { c.World, c.Rank, c.Peers = 0, 0, nil }},
		{"negative rank", func(c *Config) { c.Rank = -1 }},
		{"rank past world", func(c *Config) { c.Rank = 3 }},
		{"peers short", func(c *Config) { c.Peers = c.Peers[:2] }},
		{"no run id", func(c *Config) { c.RunID = "" }},
		{"negative timeout", func(c *Config) { c.StepTimeout = -time.Second }},
		{"chunk not a multiple of 4", func(c *Config) { c.ChunkBytes = 1001 }},
		{"chunk too large", func(c *Config) { c.ChunkBytes = MaxChunkBytes + 4 }},
		{"negative chunk", func(c *Config) { c.ChunkBytes = -4 }},
		{"server TLS only", func(c *Config) { c.ServerTLS = &tls.Config{} }},
		{"peer not host:port", func(c *Config) { c.Peers[2] = "127.0.0.1" }},
		{"duplicate peer", func(c *Config) { c.Peers[2] = c.Peers[0] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Peers = append([]string(nil), good.Peers...)
			tc.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			if _, lerr := Listen(context.Background(), c); !errors.Is(lerr, ErrInvalidConfig) {
				t.Fatalf("Listen = %v, want ErrInvalidConfig", lerr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{World: 1, Peers: []string{"127.0.0.1:1"}, RunID: "r"}.withDefaults()
	if c.StepTimeout != DefaultStepTimeout || c.ChunkBytes != DefaultChunkBytes {
		t.Fatalf("defaults: StepTimeout %v ChunkBytes %d", c.StepTimeout, c.ChunkBytes)
	}
}

// TestListenAndClose starts a rank through the public constructor on a free
// port and closes it twice.
func TestListenAndClose(t *testing.T) {
	c := newCluster(t, 1, nil) // reserves a free address, then frees it
	addr := c.rings[0].Addr()
	if err := c.rings[0].Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Listen(context.Background(), Config{World: 1, Peers: []string{addr}, RunID: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Addr() != addr {
		t.Errorf("Addr = %s, want %s", r.Addr(), addr)
	}
	if err := r.AllReduce(context.Background(), 0, []float32{1}); err != nil {
		t.Errorf("World 1 AllReduce: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestLateStart: a rank whose right neighbour is not listening yet waits for
// it within the step deadline.
func TestLateStart(t *testing.T) {
	free := newCluster(t, 2, nil) // reserves two free addresses, then frees them
	peers := []string{free.rings[0].Addr(), free.rings[1].Addr()}
	free.close()

	rings := make([]*Ring, 2)
	cfg := func(rank int) Config {
		return Config{Rank: rank, World: 2, Peers: peers, RunID: testRun, StepTimeout: 20 * time.Second}
	}
	var err error
	if rings[0], err = Listen(context.Background(), cfg(0)); err != nil {
		t.Fatal(err)
	}
	defer rings[0].Close()
	bufs := [][]float32{{1, 2}, {10, 20}}
	errc := make(chan error, 1)
	go func() { errc <- rings[0].AllReduce(context.Background(), 1, bufs[0]) }()
	waitFor(t, "rank 0 to dial rank 1", 5*time.Second, func() bool {
		rings[0].mu.Lock()
		defer rings[0].mu.Unlock()
		return rings[0].conns[1] != nil
	})
	if rings[1], err = Listen(context.Background(), cfg(1)); err != nil {
		t.Fatal(err)
	}
	defer rings[1].Close()
	if err := rings[1].AllReduce(context.Background(), 1, bufs[1]); err != nil {
		t.Fatalf("rank 1: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("rank 0: %v", err)
	}
	if bufs[0][1] != 22 || bufs[1][1] != 22 {
		t.Fatalf("sums %v %v, want [11 22]", bufs[0], bufs[1])
	}
}
