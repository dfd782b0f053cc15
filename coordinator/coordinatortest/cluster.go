// Package coordinatortest starts in-process coordinator groups on loopback
// for tests, waits on them without sleeping blindly, and checks client
// histories for linearizability with porcupine. Every coordinator it starts
// goes through coordinator.Open, like the real binary's.
package coordinatortest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/loopback"
	"google.golang.org/grpc"
)

// Options shapes a test cluster. The zero value gives TestTiming, a 3 s
// lease and raft's warnings in the test log.
type Options struct {
	// Base is each member's configuration before the cluster fills in ID,
	// addresses, directory and peers; zero means TestConfig().
	Base *coordinator.Config
	// Configure, when set, adjusts member i's configuration last.
	Configure func(i int, c *coordinator.Config)
	// DialOptions are the options Client uses (e.g. TLS credentials).
	DialOptions []grpc.DialOption
}

// Cluster is a group of in-process coordinators on loopback ports. Its
// members are stopped when the test ends.
type Cluster struct {
	t       testing.TB
	opts    Options
	Configs []coordinator.Config
	// Members are the running coordinators; a stopped one is nil.
	Members []*coordinator.Coordinator
	// APIAddrs are the members' gRPC API addresses, in order.
	APIAddrs []string
}

// NewCluster starts n coordinators named n1…nN that bootstrap one group.
func NewCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	addrs, err := loopback.Addrs(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	base := TestConfig()
	if opts.Base != nil {
		base = *opts.Base
	}
	if base.Logger == nil {
		base.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c := &Cluster{t: t, opts: opts, Members: make([]*coordinator.Coordinator, n)}
	var peers []coordinator.Peer
	for i := range n {
		peers = append(peers, coordinator.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: addrs[2*i], APIAddr: addrs[2*i+1]})
		c.APIAddrs = append(c.APIAddrs, addrs[2*i+1])
	}
	dir := t.TempDir()
	for i, p := range peers {
		cfg := base
		cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir, cfg.Peers = p.ID, p.RaftAddr, p.APIAddr, filepath.Join(dir, p.ID), peers
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		c.Configs = append(c.Configs, cfg)
	}
	t.Cleanup(c.Close)
	for i := range n {
		c.Start(i)
	}
	return c
}

// TestConfig is coordinator.DefaultConfig with raft timeouts between the
// LAN profile's and raft's defaults: elections within a second, yet no
// leadership churn when tests share a loaded 2-core machine (the LAN
// profile's 150 ms heartbeat timeout lost leaders under `go test ./...`).
func TestConfig() coordinator.Config {
	c := coordinator.DefaultConfig()
	c.Raft.HeartbeatTimeout, c.Raft.ElectionTimeout, c.Raft.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	return c
}

// Start opens member i (again, after Stop) on its configuration and directory.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if c.Members[i] != nil {
		c.t.Fatalf("coordinator %s is already running", c.Configs[i].ID)
	}
	m, err := coordinator.Open(context.Background(), c.Configs[i])
	if err != nil {
		c.t.Fatalf("opening coordinator %s: %v", c.Configs[i].ID, err)
	}
	c.Members[i] = m
}

// Stop closes member i (a clean stop: its API and raft shut down).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if m := c.Members[i]; m != nil {
		c.Members[i] = nil
		if err := m.Close(); err != nil {
			c.t.Logf("closing coordinator %s: %v", c.Configs[i].ID, err)
		}
	}
}

// Close stops every member.
func (c *Cluster) Close() {
	for i := range c.Members {
		c.Stop(i)
	}
}

// Client returns a client of every member's API, closed when the test ends.
func (c *Cluster) Client() *coordinator.Client {
	c.t.Helper()
	cl, err := coordinator.NewClient(c.APIAddrs, c.opts.DialOptions...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitForLeader waits up to within for a running member to lead and
// returns its index.
func (c *Cluster) WaitForLeader(within time.Duration) int {
	c.t.Helper()
	leader := -1
	Eventually(c.t, within, func() error {
		for i, m := range c.Members {
			if m != nil && m.Node().IsLeader() {
				leader = i
				return nil
			}
		}
		return fmt.Errorf("no coordinator of %d leads", len(c.Members))
	})
	return leader
}

// pollInterval is how often Eventually checks its condition.
const pollInterval = 10 * time.Millisecond

// Eventually checks cond every 10 ms until it returns nil, and fails the
// test with cond's last error when within has passed. It is the one way
// tests wait for a cluster to reach a state.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		<-tick.C
	}
}

// testWriter sends log lines to the test's log, so they show with -v and
// when the test fails.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
