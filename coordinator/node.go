package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// NotLeaderError is returned for writes on a follower; Leader is the
// leader's raft address when known, so clients can retry there.
type NotLeaderError struct {
	Leader string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the leader (no leader elected yet)"
	}
	return "not the leader; the leader is " + e.Leader
}

// ErrNotLeader is what a *NotLeaderError matches with errors.Is.
var ErrNotLeader = errors.New("not the leader")

// Is lets errors.Is(err, ErrNotLeader) match.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// NodeConfig configures one coordinator raft node.
type NodeConfig struct {
	// ID is the node's stable raft server ID; Addr its raft TCP address (host:port).
	ID   string
	Addr string
	// Dir holds the raft log, stable store and snapshots.
	Dir string
	// Raft tuning; zero values take hashicorp/raft's defaults.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// ApplyTimeout bounds a write (default 10 s).
	ApplyTimeout time.Duration
	// ServerTLS and ClientTLS, when set, wrap raft's TCP transport in
	// (mutual) TLS: every member must present a certificate the others trust.
	ServerTLS, ClientTLS *tls.Config
}

// Node is one member of the coordinator raft group.
type Node struct {
	cfg    NodeConfig
	raft   *raft.Raft
	fsm    *fsm
	stores *Stores
	trans  *raft.NetworkTransport
}

// OpenNode starts a raft node on cfg.Addr with stores under cfg.Dir.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if cfg.ID == "" || cfg.Addr == "" || cfg.Dir == "" {
		return nil, errors.New("coordinator node: ID, Addr and Dir are required")
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	stores, err := OpenStores(cfg.Dir, io.Discard)
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.Addr)
	if err == nil && (addr.IP == nil || addr.IP.IsUnspecified()) {
		err = errors.New("not an address peers can reach (give the host's name or IP, not 0.0.0.0)")
	}
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("coordinator raft address %s: %w", cfg.Addr, err)
	}
	var lis net.Listener
	if cfg.ServerTLS != nil {
		lis, err = tls.Listen("tcp", cfg.Addr, cfg.ServerTLS)
	} else {
		lis, err = net.Listen("tcp", cfg.Addr)
	}
	var trans *raft.NetworkTransport
	if err == nil {
		// Raft advertises cfg.Addr as given (a DNS name stays a name), so
		// leader hints match the addresses in --peers.
		trans = raft.NewNetworkTransport(&streamLayer{Listener: lis, advertise: advertised(cfg.Addr), client: cfg.ClientTLS}, 3, 10*time.Second, io.Discard)
	}
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("coordinator raft transport on %s: %w", cfg.Addr, err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: io.Discard})
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if err := raft.ValidateConfig(rc); err != nil {
		trans.Close()
		stores.Close()
		return nil, fmt.Errorf("coordinator raft config: %w", err)
	}
	f := newFSM()
	r, err := raft.NewRaft(rc, f, stores.Log, stores.Stable, stores.Snapshots, trans)
	if err != nil {
		trans.Close()
		stores.Close()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	return &Node{cfg: cfg, raft: r, fsm: f, stores: stores, trans: trans}, nil
}

// Bootstrap forms a new group from servers (ID → address), once, on one
// node of a fresh cluster. A node that already has state ignores it.
func (n *Node) Bootstrap(servers map[string]string) error {
	var cfg raft.Configuration
	for id, addr := range servers {
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	err := n.raft.BootstrapCluster(cfg).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// Join adds a voter; it is idempotent (same ID and address: nothing to do;
// same ID at a new address: removed, then added).
func (n *Node) Join(id, addr string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) {
			return nil
		}
		if s.ID == raft.ServerID(id) || s.Address == raft.ServerAddress(addr) {
			if err := n.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("removing %s before rejoin: %w", s.ID, err)
			}
		}
	}
	return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0).Error()
}

// Remove removes a voter.
func (n *Node) Remove(id string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	return n.raft.RemoveServer(raft.ServerID(id), 0, 0).Error()
}

func (n *Node) notLeader() error {
	addr, _ := n.raft.LeaderWithID()
	return &NotLeaderError{Leader: string(addr)}
}

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's raft address, or "".
func (n *Node) Leader() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}

// Apply replicates a command through raft; on a follower it returns a
// *NotLeaderError. The FSM's own rejection comes back as the error.
func (n *Node) Apply(ctx context.Context, c *pb.Command) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	data, err := EncodeCommand(c)
	if err != nil {
		return err
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	fut := n.raft.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return n.notLeader()
		}
		return fmt.Errorf("replicating command: %w", err)
	}
	if res, ok := fut.Response().(error); ok {
		return res
	}
	return nil
}

// State returns a copy of the replicated state as this node has applied it.
func (n *Node) State() *pb.State {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return proto.Clone(n.fsm.state()).(*pb.State)
}

// WaitForLeader polls until the group has a leader or ctx ends.
func (n *Node) WaitForLeader(ctx context.Context) (string, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if l := n.Leader(); l != "" {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a raft leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Close shuts raft down and releases the stores.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	if cerr := n.trans.Close(); err == nil {
		err = cerr
	}
	if cerr := n.stores.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		slog.Warn("closing coordinator node", "id", n.cfg.ID, "err", err)
	}
	return err
}

// ConsistentState returns the state after a raft barrier on the leader: every
// write committed before the call is applied, and the barrier's commit proves
// this node still leads, so the answer is linearizable. A follower returns a
// *NotLeaderError.
func (n *Node) ConsistentState(ctx context.Context) (*pb.State, error) {
	if err := n.barrier(ctx); err != nil {
		return nil, err
	}
	return n.State(), nil
}

func (n *Node) barrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return n.notLeader()
		}
		return fmt.Errorf("raft barrier: %w", err)
	}
	return nil
}

// memberAPI returns the API address of the coordinator at raftAddr, as the
// replicated member table records it.
func (n *Node) memberAPI(raftAddr string) string {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	for _, m := range n.fsm.members {
		if m.GetRaftAddress() == raftAddr {
			return m.GetApiAddress()
		}
	}
	return ""
}

// view runs fn on the applied state under the read lock; fn must not keep
// references past its return.
func (n *Node) view(fn func(f *fsm)) {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	fn(n.fsm)
}

// streamLayer is raft's TCP stream layer, over TLS when client is set.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func (t *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if t.client == nil {
		return d.Dial("tcp", string(address))
	}
	return tls.DialWithDialer(d, "tcp", string(address), t.client)
}

func (t *streamLayer) Addr() net.Addr { return t.advertise }

// advertised is a raft address exactly as configured.
type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }

// Addr is the node's raft address.
func (n *Node) Addr() string { return n.cfg.Addr }
