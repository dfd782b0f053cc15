// Package localcluster assembles `loraft local`, the embedded default: three
// coordinators in this process and trainer processes of this same binary,
// all on loopback ports kept in a state directory, so that a killed local
// cluster comes back on the same addresses and resumes its sweep.
package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/internal/loopback"
)

// Config says what Start runs.
type Config struct {
	// StateDir holds the raft data, the trainers' logs and events, and
	// ports.json.
	StateDir string
	// Trainers is the number of trainer processes.
	Trainers int
	// Store is the checkpoint store the trainers use (--store's syntax).
	Store string
	// Raft and Lease are the coordinators' raft timing and trainer lease.
	Raft  coordinator.RaftTiming
	Lease time.Duration
	// Tokens are the dashboard's bearer tokens (nil: none; loopback
	// browsers are operators without one).
	Tokens *dashboard.Tokens
}

// Ports are the loopback addresses of a local cluster, kept in the state
// directory: raft remembers its members' addresses, so a restarted local
// cluster must come back on the same ones.
type Ports struct {
	Raft     []string `json:"raft"`
	API      []string `json:"api"`
	Trainers []string `json:"trainers"`
	// HTTP are the coordinators' HTTP listeners (the dashboard and
	// /metrics) and Metrics the trainers' /metrics listeners; a ports file
	// written before they existed gets them on the next start.
	HTTP    []string `json:"http,omitempty"`
	Metrics []string `json:"metrics,omitempty"`
}

// Cluster is a running local cluster.
type Cluster struct {
	// Ports are its addresses.
	Ports *Ports
	// Logs is the directory of the trainers' logs and events.
	Logs string

	coordinators []*coordinator.Coordinator
	trainers     []*exec.Cmd
}

// Start opens the three coordinators and starts the trainers. On an error
// it stops what it started.
func Start(ctx context.Context, cfg Config) (c *Cluster, err error) {
	ports, err := LoadPorts(filepath.Join(cfg.StateDir, "ports.json"), cfg.Trainers)
	if err != nil {
		return nil, err
	}
	c = &Cluster{Ports: ports, Logs: filepath.Join(cfg.StateDir, "logs")}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.startCoordinators(ctx, cfg); err != nil {
		return nil, err
	}
	return c, c.startTrainers(cfg)
}

// Close stops the trainers (SIGTERM, then waits) and closes the coordinators.
func (c *Cluster) Close() {
	for _, t := range c.trainers {
		_ = t.Process.Signal(syscall.SIGTERM)
	}
	for _, t := range c.trainers {
		_ = t.Wait()
	}
	for _, m := range c.coordinators {
		_ = m.Close()
	}
}

// DashboardURL is the first coordinator's HTTP listener: its dashboard
// (any coordinator's shows the same) and /metrics.
func (c *Cluster) DashboardURL() string { return c.coordinators[0].HTTPURL() }

// LoadPorts reads the ports file at path, choosing free loopback ports for
// what it lacks (a first start, or more trainers than before), and writes
// it back.
func LoadPorts(path string, trainers int) (*Ports, error) {
	var p Ports
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("local cluster ports %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("local cluster ports: %w", err)
	}
	need := 6 + max(0, trainers-len(p.Trainers)) + max(0, trainers-len(p.Metrics))
	if len(p.Raft) == 3 {
		need -= 6
	}
	if len(p.HTTP) != 3 {
		need += 3
	}
	free, err := loopback.Addrs(need)
	if err != nil {
		return nil, err
	}
	if len(p.Raft) != 3 {
		p.Raft, p.API, free = free[:3], free[3:6], free[6:]
	}
	if len(p.HTTP) != 3 {
		p.HTTP, free = free[:3], free[3:]
	}
	for len(p.Trainers) < trainers {
		p.Trainers, free = append(p.Trainers, free[0]), free[1:]
	}
	for len(p.Metrics) < trainers {
		p.Metrics, free = append(p.Metrics, free[0]), free[1:]
	}
	p.Trainers, p.Metrics = p.Trainers[:trainers], p.Metrics[:trainers]
	b, _ = json.MarshalIndent(p, "", "  ")
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return nil, fmt.Errorf("local cluster ports: %w", err)
	}
	return &p, nil
}

// startCoordinators opens the three in-process coordinators on their ports,
// with their raft data under the state directory.
func (c *Cluster) startCoordinators(ctx context.Context, cfg Config) error {
	var peers []coordinator.Peer
	for i := range 3 {
		peers = append(peers, coordinator.Peer{ID: fmt.Sprintf("n%d", i+1), RaftAddr: c.Ports.Raft[i], APIAddr: c.Ports.API[i]})
	}
	for i, p := range peers {
		co := coordinator.DefaultConfig()
		co.ID, co.RaftAddr, co.APIAddr, co.Dir, co.Peers = p.ID, p.RaftAddr, p.APIAddr, filepath.Join(cfg.StateDir, "raft", p.ID), peers
		co.Raft, co.Scheduler.Lease = cfg.Raft, cfg.Lease
		co.HTTPAddr = c.Ports.HTTP[i]
		// Any member's dashboard asks the leader for live progress and
		// forwards writes to it (coordinator.DashboardBackend), so the one
		// URL loraft local prints works whichever member leads.
		co.HTTPHandlers = coordinator.Dashboard(ctx, dashboard.Config{Store: cfg.Store, Tokens: cfg.Tokens})
		m, err := coordinator.Open(ctx, co)
		if err != nil {
			return fmt.Errorf("local coordinator %d: %w", i+1, err)
		}
		c.coordinators = append(c.coordinators, m)
	}
	return nil
}

// startTrainers starts one trainer process of this same binary per trainer
// port: libtorch's random generator is per process, and exact resume needs
// each trainer to own one. They die with this process, even when it is
// killed.
func (c *Cluster) startTrainers(cfg Config) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the loraft binary for the trainers: %w", err)
	}
	n := len(c.Ports.Trainers)
	env := append(os.Environ(), "LORAFT_COORDINATORS="+strings.Join(c.Ports.API, ","), "LORAFT_STORE="+cfg.Store)
	if _, ok := os.LookupEnv("OMP_NUM_THREADS"); !ok {
		// Share the cores: n trainers each using every core oversubscribe
		// the machine, and libtorch's thread pool slows down badly then.
		env = append(env, fmt.Sprintf("OMP_NUM_THREADS=%d", max(1, runtime.NumCPU()/n)))
	}
	if err := os.MkdirAll(c.Logs, 0o755); err != nil {
		return err
	}
	for i := range n {
		id := fmt.Sprintf("local-t%d", i+1)
		lf, err := os.OpenFile(filepath.Join(c.Logs, id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command(self, "trainer", "--id", id, "--listen", c.Ports.Trainers[i], "--events", filepath.Join(c.Logs, id+".events.jsonl"),
			"--metrics-addr", c.Ports.Metrics[i])
		cmd.Env, cmd.Stdout, cmd.Stderr = env, lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		lf.Close()
		if err != nil {
			return fmt.Errorf("starting trainer %s: %w", id, err)
		}
		c.trainers = append(c.trainers, cmd)
	}
	return nil
}
