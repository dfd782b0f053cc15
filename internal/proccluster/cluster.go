package proccluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/proc"
)

// The bucket and prefix of the store on a cluster's MinIO.
const (
	StoreBucket = "loraft"
	StorePrefix = "cluster"
)

// Config says what Start runs. The zero value of every field but Bin and
// Dir works.
type Config struct {
	// Bin is the loraft binary every coordinator and trainer runs.
	Bin proc.Binary
	// Dir holds every process's state directory and log, the trainers'
	// events files, the token cache and the store. The caller creates it
	// beforehand and removes it afterwards.
	Dir string
	// Coordinators is the size of the raft group (0: 3).
	Coordinators int
	// Trainers is the number of `loraft trainer`s under the coordinators.
	Trainers int
	// RaftProfile is the coordinators' --raft-profile ("": the command's default).
	RaftProfile string
	// Lease is the coordinators' --lease (0: the command's default).
	Lease time.Duration
	// CoordinatorArgs and TrainerArgs are appended to every coordinator's
	// and every trainer's command line.
	CoordinatorArgs, TrainerArgs []string
	// MinIO runs a MinIO server as the checkpoint store; without it the
	// store is the directory Dir/store.
	MinIO bool
	// CoordinatorNetns, when set, names a network namespace per coordinator
	// (created by the caller) to run it in, and CoordinatorHosts the IP it
	// binds there; the other processes reach it on that IP.
	CoordinatorNetns, CoordinatorHosts []string
	// TrainerRoute, when set, gives the address a trainer (by ID) dials
	// instead of each coordinator API address (kind "coordinator") and the
	// MinIO endpoint (kind "store"), host:port: a fault-injecting proxy in
	// front of it, say. For kind "ring" the target is the trainer's own
	// all-reduce address, and the answer is what it advertises (--advertise)
	// for its ring peers to dial; returning target leaves it direct.
	TrainerRoute func(trainer, kind, target string) (string, error)
}

// Coordinator is one `loraft coordinator` process of a cluster.
type Coordinator struct {
	*proc.Proc
	// ID is its raft server ID (n1, n2, …).
	ID string
	// RaftAddr and APIAddr are its raft and gRPC API addresses on loopback.
	RaftAddr, APIAddr string
	// Dir is its raft directory; it survives Kill and Restart.
	Dir string
}

// Trainer is one `loraft trainer` process of a cluster.
type Trainer struct {
	*proc.Proc
	// ID is its trainer ID under the coordinators (t1, t2, …).
	ID string
	// Addr is the all-reduce address it listens on.
	Addr string
	// Events is its --events file: a JSON line per job start and end.
	Events string
}

// Cluster is a loraft cluster of processes on loopback. Its fields are set
// by Start and read-only afterwards; the processes' own methods are safe for
// concurrent use.
type Cluster struct {
	// Dir is Config.Dir.
	Dir string
	// Env is what every coordinator and trainer has in its environment
	// beyond Bin's: the store and its credentials, the coordinators'
	// addresses and the token cache. A client of the cluster (`loraft sweep
	// launch`) uses the same.
	Env []string
	// Store is the checkpoint store, as --store takes it (LORAFT_STORE in Env).
	Store string
	// MinIO is the store's server, nil without Config.MinIO.
	MinIO *proc.MinIO
	// Coordinators and Trainers are the cluster's loraft processes.
	Coordinators []*Coordinator
	Trainers     []*Trainer
}

// Start starts the store, the coordinators and the trainers, and returns
// once every process has been started (not once the group has a leader: see
// Leader and WaitHealthy). On an error it takes down what it started.
func Start(cfg Config) (cl *Cluster, err error) {
	if cfg.Bin.Path == "" || cfg.Dir == "" {
		return nil, errors.New("proccluster: Config.Bin and Config.Dir are required")
	}
	if cfg.Coordinators == 0 {
		cfg.Coordinators = 3
	}
	if cfg.Coordinators < 0 || cfg.Trainers < 0 {
		return nil, fmt.Errorf("proccluster: %d coordinators and %d trainers", cfg.Coordinators, cfg.Trainers)
	}
	c := &Cluster{Dir: cfg.Dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, c.LogTails(25))
			_ = c.Close()
		}
	}()
	if cfg.MinIO {
		if c.MinIO, err = proc.StartMinIO(filepath.Join(cfg.Dir, "minio")); err != nil {
			return nil, err
		}
		c.Store = "s3://" + StoreBucket + "/" + StorePrefix
		c.Env = []string{checkpoint.EnvS3Endpoint + "=" + c.MinIO.Endpoint,
			"AWS_ACCESS_KEY_ID=" + c.MinIO.AccessKey, "AWS_SECRET_ACCESS_KEY=" + c.MinIO.SecretKey}
	} else {
		c.Store = filepath.Join(cfg.Dir, "store")
	}
	addrs, err := loopback.Addrs(2*cfg.Coordinators + cfg.Trainers)
	if err != nil {
		return nil, err
	}
	if (len(cfg.CoordinatorNetns) > 0 || len(cfg.CoordinatorHosts) > 0) &&
		(len(cfg.CoordinatorNetns) != cfg.Coordinators || len(cfg.CoordinatorHosts) != cfg.Coordinators) {
		return nil, fmt.Errorf("proccluster: %d coordinators, %d namespaces and %d hosts", cfg.Coordinators, len(cfg.CoordinatorNetns), len(cfg.CoordinatorHosts))
	}
	var peers, apis []string
	for i := range cfg.Coordinators {
		raftAddr, apiAddr := addrs[2*i], addrs[2*i+1]
		if len(cfg.CoordinatorHosts) > 0 {
			raftAddr, apiAddr = onHost(cfg.CoordinatorHosts[i], raftAddr), onHost(cfg.CoordinatorHosts[i], apiAddr)
		}
		co := &Coordinator{ID: fmt.Sprintf("n%d", i+1), RaftAddr: raftAddr, APIAddr: apiAddr}
		co.Dir = filepath.Join(cfg.Dir, "raft-"+co.ID)
		peers = append(peers, fmt.Sprintf("%s=%s/%s", co.ID, co.RaftAddr, co.APIAddr))
		apis = append(apis, co.APIAddr)
		c.Coordinators = append(c.Coordinators, co)
	}
	c.Env = append(c.Env, "LORAFT_STORE="+c.Store, "LORAFT_COORDINATORS="+strings.Join(apis, ","),
		"LORAFT_CACHE="+filepath.Join(cfg.Dir, "cache"))
	if len(cfg.CoordinatorHosts) > 0 {
		// Coordinators off loopback without TLS: every process that dials
		// them (trainers, and the CLI run with Env) must say it means it.
		c.Env = append(c.Env, "LORAFT_INSECURE=1")
	}
	for i, co := range c.Coordinators {
		bin, args := cfg.Bin, []string{}
		if len(cfg.CoordinatorNetns) > 0 {
			ip, err := exec.LookPath("ip")
			if err != nil {
				return nil, fmt.Errorf("proccluster: running coordinators in network namespaces needs iproute2: %w", err)
			}
			bin, args = proc.Binary{Path: ip, Env: cfg.Bin.Env}, []string{"netns", "exec", cfg.CoordinatorNetns[i], cfg.Bin.Path}
		}
		args = append(args, "coordinator", "--id", co.ID, "--raft-addr", co.RaftAddr, "--api-addr", co.APIAddr, "--dir", co.Dir,
			"--peers", strings.Join(peers, ","))
		if cfg.RaftProfile != "" {
			args = append(args, "--raft-profile", cfg.RaftProfile)
		}
		if cfg.Lease != 0 {
			args = append(args, "--lease", cfg.Lease.String())
		}
		co.Proc = &proc.Proc{Name: "coordinator " + co.ID, Bin: bin, Args: append(args, cfg.CoordinatorArgs...), Env: c.Env,
			Log: filepath.Join(cfg.Dir, "coordinator-"+co.ID+".log")}
		if err := co.Start(); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Trainers {
		tr := &Trainer{ID: fmt.Sprintf("t%d", i+1), Addr: addrs[2*cfg.Coordinators+i]}
		trainerEnv, err := c.trainerEnv(cfg, tr.ID, apis)
		if err != nil {
			return nil, err
		}
		tr.Events = filepath.Join(cfg.Dir, "events-"+tr.ID+".jsonl")
		args := []string{"trainer", "--id", tr.ID, "--listen", tr.Addr, "--events", tr.Events}
		if cfg.TrainerRoute != nil {
			adv, err := cfg.TrainerRoute(tr.ID, "ring", tr.Addr)
			if err != nil {
				return nil, fmt.Errorf("routing trainer %s's ring peers: %w", tr.ID, err)
			}
			if adv != tr.Addr {
				args = append(args, "--advertise", adv)
			}
		}
		tr.Proc = &proc.Proc{Name: "trainer " + tr.ID, Bin: cfg.Bin, Args: append(args, cfg.TrainerArgs...), Env: trainerEnv,
			Log: filepath.Join(cfg.Dir, "trainer-"+tr.ID+".log")}
		if err := tr.Start(); err != nil {
			return nil, err
		}
		c.Trainers = append(c.Trainers, tr)
	}
	return c, nil
}

// onHost is addr's port on host.
func onHost(host, addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, port)
}

// trainerEnv is Env with the coordinators' and the store's addresses
// routed through cfg.TrainerRoute for trainer id.
func (c *Cluster) trainerEnv(cfg Config, id string, apis []string) ([]string, error) {
	env := slices.Clone(c.Env)
	if cfg.TrainerRoute == nil {
		return env, nil
	}
	routed := make([]string, len(apis))
	for i, a := range apis {
		r, err := cfg.TrainerRoute(id, "coordinator", a)
		if err != nil {
			return nil, fmt.Errorf("routing trainers to coordinator %s: %w", a, err)
		}
		routed[i] = r
	}
	env = append(env, "LORAFT_COORDINATORS="+strings.Join(routed, ","))
	if c.MinIO != nil {
		host := strings.TrimPrefix(strings.TrimPrefix(c.MinIO.Endpoint, "http://"), "https://")
		r, err := cfg.TrainerRoute(id, "store", host)
		if err != nil {
			return nil, fmt.Errorf("routing trainers to the store %s: %w", host, err)
		}
		env = append(env, checkpoint.EnvS3Endpoint+"="+strings.Replace(c.MinIO.Endpoint, host, r, 1))
	}
	// Later entries win: os/exec keeps the last value of a repeated key.
	return env, nil
}

// Procs lists every process of the cluster: coordinators, trainers, MinIO.
func (c *Cluster) Procs() []*proc.Proc {
	var out []*proc.Proc
	for _, co := range c.Coordinators {
		if co.Proc != nil {
			out = append(out, co.Proc)
		}
	}
	for _, tr := range c.Trainers {
		out = append(out, tr.Proc)
	}
	if c.MinIO != nil {
		out = append(out, c.MinIO.Proc)
	}
	return out
}

// Close kills every process (SIGKILL: nothing of a test or benchmark needs
// an orderly exit) and waits for them. It leaves Dir to its owner.
func (c *Cluster) Close() error {
	procs := c.Procs()
	for _, p := range procs {
		_ = p.Signal(syscall.SIGKILL) // ErrNotRunning: gone already
	}
	var errs []error
	for _, p := range procs {
		errs = append(errs, p.Kill())
	}
	return errors.Join(errs...)
}

// LogTails is the last n lines of every process's log, for a failure message.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for _, p := range c.Procs() {
		fmt.Fprintf(&b, "\n--- %s (last lines of %s) ---\n%s", p.Name, p.Log, p.Tail(n))
	}
	return b.String()
}

// APIAddrs lists the API addresses of the coordinators, but those in except.
func (c *Cluster) APIAddrs(except ...*Coordinator) []string {
	var out []string
	for _, co := range c.Coordinators {
		if !contains(except, co) {
			out = append(out, co.APIAddr)
		}
	}
	return out
}

func contains(list []*Coordinator, co *Coordinator) bool {
	for _, x := range list {
		if x == co {
			return true
		}
	}
	return false
}

// ByAPI is the coordinator with API address addr, or nil.
func (c *Cluster) ByAPI(addr string) *Coordinator {
	for _, co := range c.Coordinators {
		if co.APIAddr == addr {
			return co
		}
	}
	return nil
}

// Trainer is the trainer with ID id, or nil.
func (c *Cluster) Trainer(id string) *Trainer {
	for _, tr := range c.Trainers {
		if tr.ID == id {
			return tr
		}
	}
	return nil
}

// OpenStore opens the cluster's checkpoint store from this process.
func (c *Cluster) OpenStore(ctx context.Context) (checkpoint.Store, error) {
	if c.MinIO == nil {
		return checkpoint.NewDirStore(c.Store)
	}
	return checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: c.MinIO.Endpoint, Bucket: StoreBucket, Prefix: StorePrefix,
		AccessKey: c.MinIO.AccessKey, SecretKey: c.MinIO.SecretKey, Timeout: 10 * time.Second})
}
