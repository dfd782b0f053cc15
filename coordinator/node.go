package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// Node is one member of the coordinator raft group. Open builds it as
// part of a Coordinator.
type Node struct {
	cfg    Config
	raft   *raft.Raft
	fsm    *fsm
	stores *Stores
	trans  *raft.NetworkTransport
	// metrics is the coordinator's metric set, nil when not measured.
	metrics *metricSet
}

// openNode starts a raft node on cfg.RaftAddr with stores under cfg.Dir;
// cfg has its defaults and is valid. With m, the FSM's applies are measured.
func openNode(cfg Config, m *metricSet) (*Node, error) {
	logger := newRaftLogger(cfg.Logger, cfg.RaftLogLevel)
	stores, err := OpenStores(cfg.Dir, logger.Named("snapshots").StandardWriter(nil))
	if err != nil {
		return nil, err
	}
	var lis net.Listener
	if cfg.ServerTLS != nil {
		// Only coordinators may join the raft transport.
		lis, err = tls.Listen("tcp", cfg.RaftAddr, pki.WithRole(cfg.ServerTLS, pki.RoleCoordinator))
	} else {
		lis, err = net.Listen("tcp", cfg.RaftAddr)
	}
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("coordinator raft transport on %s: %w", cfg.RaftAddr, err)
	}
	// Raft advertises cfg.RaftAddr as given (a DNS name stays a name), so
	// leader hints match the addresses in Peers.
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{Listener: lis, advertise: advertised(cfg.RaftAddr), client: pki.WithRole(cfg.ClientTLS, pki.RoleCoordinator)},
		MaxPool: 3, Timeout: 10 * time.Second, Logger: logger.Named("net"),
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = logger
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLeaseTimeout
	if err := raft.ValidateConfig(rc); err != nil {
		trans.Close()
		stores.Close()
		return nil, fmt.Errorf("coordinator raft config: %w", err)
	}
	f := newFSM()
	var rf raft.FSM = f
	var obs *observedFSM
	if m != nil {
		obs = &observedFSM{fsm: f, m: m}
		rf = obs
	}
	r, err := raft.NewRaft(rc, rf, stores.Log, stores.Stable, stores.Snapshots, trans)
	if err != nil {
		trans.Close()
		stores.Close()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	if obs != nil {
		obs.r.Store(r)
	}
	return &Node{cfg: cfg, raft: r, fsm: f, stores: stores, trans: trans, metrics: m}, nil
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

// Join adds a voter. It is idempotent (same ID and address: nothing to
// do) and never rewrites a member: an ID already in the group at another
// address, or an address already held by another ID, is ErrMemberConflict
// (remove the member first, then add it).
func (n *Node) Join(id, addr string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, s := range cf.Configuration().Servers {
		switch {
		case s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr):
			return nil
		case s.ID == raft.ServerID(id):
			return fmt.Errorf("coordinator %s is already a member at raft address %s: %w", id, s.Address, ErrMemberConflict)
		case s.Address == raft.ServerAddress(addr):
			return fmt.Errorf("raft address %s belongs to coordinator %s, not %s: %w", addr, s.ID, id, ErrMemberConflict)
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
	timeout := n.cfg.Raft.ApplyTimeout
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

// Close shuts raft down and releases the stores.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	if cerr := n.trans.Close(); err == nil {
		err = cerr
	}
	if cerr := n.stores.Close(); err == nil {
		err = cerr
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

// verifyLeader confirms with a quorum that this node still leads, so an
// answer built from its memory (a heartbeat's assignment) cannot come from
// a deposed leader that was paused and has not noticed yet. Concurrent
// calls share one round of raft heartbeats.
func (n *Node) verifyLeader(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	fut := n.raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return n.notLeader()
			}
			return fmt.Errorf("verifying raft leadership: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("verifying raft leadership: %w", ctx.Err())
	}
}

func (n *Node) barrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	timeout := n.cfg.Raft.ApplyTimeout
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
func (n *Node) Addr() string { return n.cfg.RaftAddr }
