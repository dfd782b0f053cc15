package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// Peer is one member of the initial coordinator group.
type Peer struct {
	// ID is the member's stable raft server ID.
	ID string
	// RaftAddr is its raft TCP address and APIAddr its gRPC API address (host:port).
	RaftAddr, APIAddr string
}

// RaftTiming holds the raft timeouts of a node. hashicorp/raft requires
// LeaderLeaseTimeout ≤ HeartbeatTimeout ≤ ElectionTimeout.
type RaftTiming struct {
	// HeartbeatTimeout is how long a follower waits for the leader before
	// it starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits before a new election.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a quorum.
	LeaderLeaseTimeout time.Duration
	// ApplyTimeout bounds one write through raft.
	ApplyTimeout time.Duration
}

// Config configures one coordinator: its raft node, its gRPC API and the
// leader's scheduler. Start from DefaultConfig or LANConfig; Open validates it.
type Config struct {
	// ID is this coordinator's stable raft server ID.
	ID string
	// RaftAddr is the raft TCP address, as peers reach it (a name or an IP,
	// never 0.0.0.0): raft advertises it exactly as given.
	RaftAddr string
	// APIAddr is the address the gRPC API listens on ("127.0.0.1:0" picks a port).
	APIAddr string
	// Dir holds the raft log, stable store and snapshots.
	Dir string
	// Peers is the initial group, the same on every member. It bootstraps a
	// fresh group and is ignored once the node has state. Empty: the node
	// waits to be added as a voter by the leader.
	Peers []Peer

	// Raft holds the raft timeouts; Profile names the common sets.
	Raft RaftTiming
	// Scheduler tunes trainer leases and placement.
	Scheduler SchedulerConfig

	// ServerTLS and ClientTLS, when set, require mutual TLS on the gRPC API
	// and on raft's transport. Set both or neither. Certificates then carry
	// their holder's role and id (loraft://<role>/<id>, internal/pki): raft
	// admits only coordinators, and every RPC is authorized by role and
	// audited (coordinator/authz). Without TLS every caller may do
	// everything: for loopback only.
	ServerTLS, ClientTLS *tls.Config
	// MaxTrialsPerSweep bounds the trials of one launched sweep
	// (0: DefaultMaxTrialsPerSweep); a larger sweep is InvalidArgument.
	MaxTrialsPerSweep int

	// HTTPAddr, when set, is the address of the HTTP listener ("127.0.0.1:0"
	// picks a port): /metrics for Prometheus and whatever HTTPHandlers
	// mounts. Empty: no listener. With ServerTLS it serves HTTPS with the
	// same certificate and asks for (but does not require) a client
	// certificate; authz.HTTPCaller decides who may read what.
	HTTPAddr string
	// HTTPHandlers, when set, mounts more handlers (the dashboard) on the
	// HTTP listener's mux. Open calls it once, after the coordinator is
	// built and before the listener serves, so every route exists from the
	// first request. It must not register /metrics.
	HTTPHandlers func(c *Coordinator, mux *http.ServeMux)

	// UnaryInterceptors run, in order, around every unary RPC of the API,
	// after the authorization and audit interceptor.
	UnaryInterceptors []grpc.UnaryServerInterceptor

	// Logger receives the coordinator's and raft's logs (nil: slog.Default()).
	Logger *slog.Logger
	// RaftLogLevel is the least severe raft message passed to Logger.
	RaftLogLevel slog.Level
}

// DefaultConfig returns hashicorp/raft's timeouts (a dead leader is noticed
// in 1–2 s), a 3 s trainer lease and raft's warnings in the log.
func DefaultConfig() Config {
	return Config{
		Raft: RaftTiming{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
			LeaderLeaseTimeout: 500 * time.Millisecond, ApplyTimeout: 10 * time.Second},
		// HeartbeatInterval and Grace stay zero: they follow Lease (Lease/6, Lease).
		Scheduler:    SchedulerConfig{Lease: 3 * time.Second, Tick: 50 * time.Millisecond},
		RaftLogLevel: slog.LevelWarn,
	}
}

// LANConfig returns DefaultConfig with raft timeouts for a LAN or loopback:
// elections in a few hundred milliseconds.
func LANConfig() Config {
	c := DefaultConfig()
	c.Raft.HeartbeatTimeout, c.Raft.ElectionTimeout, c.Raft.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
	return c
}

// Profile returns the raft timing of a named profile: "default"
// (hashicorp/raft's) or "lan" ("fast" is accepted as its old name).
func Profile(name string) (RaftTiming, error) {
	switch name {
	case "default":
		return DefaultConfig().Raft, nil
	case "lan", "fast":
		return LANConfig().Raft, nil
	}
	return RaftTiming{}, fmt.Errorf("raft profile %q: %w", name, ErrUnknownProfile)
}

// ErrUnknownProfile is returned by Profile for a name it does not know.
var ErrUnknownProfile = errors.New("unknown raft profile (want default or lan)")

// FieldError is one invalid field of a Config.
type FieldError struct {
	// Field is the field's name as written in Go, e.g. "Scheduler.Lease".
	Field string
	// Msg says what is wrong with it.
	Msg string
}

func (e *FieldError) Error() string { return "coordinator config: " + e.Field + ": " + e.Msg }

// withDefaults fills zero durations from DefaultConfig, so a Config built
// field by field works like one built from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.Raft.HeartbeatTimeout, d.Raft.HeartbeatTimeout)
	setDefault(&c.Raft.ElectionTimeout, d.Raft.ElectionTimeout)
	setDefault(&c.Raft.LeaderLeaseTimeout, d.Raft.LeaderLeaseTimeout)
	setDefault(&c.Raft.ApplyTimeout, d.Raft.ApplyTimeout)
	c.Scheduler = c.Scheduler.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Validate checks every field and the fields against each other, zero
// durations counting as their defaults; it returns one *FieldError per
// problem, joined.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for _, f := range []struct{ name, v string }{{"ID", c.ID}, {"RaftAddr", c.RaftAddr}, {"APIAddr", c.APIAddr}, {"Dir", c.Dir}} {
		if f.v == "" {
			bad(f.name, "required")
		}
	}
	if c.RaftAddr != "" {
		if err := reachable(c.RaftAddr); err != nil {
			bad("RaftAddr", "%s: %v", c.RaftAddr, err)
		}
	}
	r := c.Raft
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Raft.HeartbeatTimeout", r.HeartbeatTimeout}, {"Raft.ElectionTimeout", r.ElectionTimeout}, {"Raft.LeaderLeaseTimeout", r.LeaderLeaseTimeout}, {"Raft.ApplyTimeout", r.ApplyTimeout}} {
		if f.v < 5*time.Millisecond {
			bad(f.name, "%v is too short (at least 5ms)", f.v)
		}
	}
	if r.ElectionTimeout < r.HeartbeatTimeout {
		bad("Raft.ElectionTimeout", "%v is shorter than Raft.HeartbeatTimeout %v", r.ElectionTimeout, r.HeartbeatTimeout)
	}
	if r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		bad("Raft.LeaderLeaseTimeout", "%v is longer than Raft.HeartbeatTimeout %v", r.LeaderLeaseTimeout, r.HeartbeatTimeout)
	}
	s := c.Scheduler
	switch {
	case s.Lease <= 0:
		bad("Scheduler.Lease", "%v, want a positive duration", s.Lease)
	case s.HeartbeatInterval <= 0 || s.HeartbeatInterval > s.Lease/2:
		// Two heartbeats per lease at least, or one lost packet loses the lease.
		bad("Scheduler.HeartbeatInterval", "%v, want a positive duration of at most half of Scheduler.Lease %v", s.HeartbeatInterval, s.Lease)
	case s.Grace < s.HeartbeatInterval:
		bad("Scheduler.Grace", "%v is shorter than Scheduler.HeartbeatInterval %v: a new leader would drop live trainers", s.Grace, s.HeartbeatInterval)
	case s.Tick <= 0 || s.Tick > s.Lease:
		bad("Scheduler.Tick", "%v, want a positive duration of at most Scheduler.Lease %v", s.Tick, s.Lease)
	}
	if s.SweepRetention < 0 {
		bad("Scheduler.SweepRetention", "%v, want ≥ 0 (0: keep sweeps until deleted)", s.SweepRetention)
	}
	if s.ForgetTrainerAfter > 0 && s.ForgetTrainerAfter < 2*s.Lease {
		// Shorter would forget a trainer that merely missed a lease.
		bad("Scheduler.ForgetTrainerAfter", "%v is shorter than twice Scheduler.Lease %v", s.ForgetTrainerAfter, s.Lease)
	}
	if s.ForgetTrainerAfter < 0 {
		bad("Scheduler.ForgetTrainerAfter", "%v, want a positive duration (0: %v)", s.ForgetTrainerAfter, DefaultForgetTrainerAfter)
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("HTTPAddr", "%s: %v", c.HTTPAddr, err)
		}
	}
	if c.MaxTrialsPerSweep < 0 {
		bad("MaxTrialsPerSweep", "%d, want ≥ 0 (0: %d)", c.MaxTrialsPerSweep, DefaultMaxTrialsPerSweep)
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		bad("ClientTLS", "ServerTLS and ClientTLS must be set together (mutual TLS)")
	}
	errs = append(errs, c.validatePeers()...)
	return errors.Join(errs...)
}

func (c Config) validatePeers() []error {
	if len(c.Peers) == 0 {
		return nil
	}
	var errs []error
	ids, addrs := map[string]bool{}, map[string]bool{}
	self := false
	for i, p := range c.Peers {
		field := fmt.Sprintf("Peers[%d]", i)
		switch {
		case p.ID == "" || p.RaftAddr == "" || p.APIAddr == "":
			errs = append(errs, &FieldError{field, "ID, RaftAddr and APIAddr are required"})
		case ids[p.ID]:
			errs = append(errs, &FieldError{field, fmt.Sprintf("ID %s listed twice", p.ID)})
		case addrs[p.RaftAddr]:
			errs = append(errs, &FieldError{field, fmt.Sprintf("raft address %s listed twice", p.RaftAddr)})
		}
		ids[p.ID], addrs[p.RaftAddr] = true, true
		if p.ID == c.ID {
			self = true
			if p.RaftAddr != c.RaftAddr {
				errs = append(errs, &FieldError{field, fmt.Sprintf("lists this coordinator (%s) at raft address %s, but RaftAddr is %s", p.ID, p.RaftAddr, c.RaftAddr)})
			}
		}
	}
	if !self && c.ID != "" {
		errs = append(errs, &FieldError{"Peers", fmt.Sprintf("does not list this coordinator's ID %s", c.ID)})
	}
	return errs
}

// reachable checks that addr names a host peers can dial.
func reachable(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return errors.New("not an address peers can reach (give the host's name or IP, not 0.0.0.0)")
	}
	return nil
}
