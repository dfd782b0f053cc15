package coordinator

import (
	"errors"
	"fmt"
	"sync"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
)

// leaderLink is a coordinator's own connections to the other members' APIs,
// made with its client identity (Config.ClientTLS, plaintext without TLS):
// a follower's dashboard reads the leader's soft state and forwards writes
// through them. DialTLS accepts only a coordinator's certificate, so a
// caller's name relayed with a write reaches only a coordinator.
type leaderLink struct {
	opts []grpc.DialOption

	mu     sync.Mutex // guards conns and closed
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newLeaderLink(opts ...grpc.DialOption) *leaderLink {
	return &leaderLink{opts: append(opts, clientKeepalive, clientMsgSizes), conns: map[string]*grpc.ClientConn{}}
}

// errLinkClosed: the coordinator is closing.
var errLinkClosed = errors.New("coordinator is closing")

// client returns a client of the API at addr, connecting lazily.
func (l *leaderLink) client(addr string) (pb.CoordinatorClient, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errLinkClosed
	}
	cc, ok := l.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, l.opts...); err != nil {
			return nil, fmt.Errorf("coordinator %s: %w", addr, err)
		}
		l.conns[addr] = cc
	}
	return pb.NewCoordinatorClient(cc), nil
}

// close closes every connection; client fails afterwards.
func (l *leaderLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, cc := range l.conns {
		_ = cc.Close()
	}
	l.conns = nil
}

// leaderAPI returns the API address of the leader as this node's raft knows
// it ("" when it knows none) and whether that leader is this node.
func (c *Coordinator) leaderAPI() (addr string, self bool) {
	raftAddr, id := c.node.raft.LeaderWithID()
	if raftAddr == "" {
		return "", false
	}
	if string(id) == c.cfg.ID {
		return c.APIAddr(), true
	}
	if addr = c.node.memberAPI(string(raftAddr)); addr == "" {
		addr = c.api.apiAddrs[string(raftAddr)]
	}
	return addr, false
}
