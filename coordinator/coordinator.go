package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/loraft/loraft/coordinator/authz"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Coordinator is one running member of the coordinator group: its raft
// node, the gRPC API it serves and the leader's scheduler. Open builds
// one; Close takes it down. Nothing else assembles a coordinator.
type Coordinator struct {
	cfg  Config
	node *Node
	api  *Server
	srv  *grpc.Server
	lis  net.Listener
	// http is the HTTP listener (/metrics, the dashboard), nil without HTTPAddr.
	http    *httpListener
	metrics *metricSet
	// link reaches the leader for this node's dashboard when it follows.
	link *leaderLink

	stop context.CancelFunc // stops the scheduler
	wg   sync.WaitGroup     // the Serve loops, the scheduler and the leader watch
	// failed receives the first Serve loop's error (API or HTTP) if one
	// ends before Close.
	failed chan error

	closeOnce sync.Once
	closeErr  error
}

// drainTimeout bounds how long Close lets in-flight RPCs finish before it
// cuts them off.
const drainTimeout = 2 * time.Second

// Open validates cfg (after filling its zero durations from DefaultConfig),
// starts the raft node (bootstrapping the group from cfg.Peers when it has
// no state yet), serves the API on cfg.APIAddr and starts the scheduler.
// ctx bounds only the start-up; Close stops what Open started.
func Open(ctx context.Context, cfg Config) (*Coordinator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening coordinator %s: %w", cfg.ID, err)
	}
	m := newMetrics()
	node, err := openNode(cfg, m)
	if err != nil {
		return nil, err
	}
	apiAddrs := map[string]string{}
	if len(cfg.Peers) > 0 {
		servers := map[string]string{}
		for _, p := range cfg.Peers {
			servers[p.ID], apiAddrs[p.RaftAddr] = p.RaftAddr, p.APIAddr
		}
		if err := node.Bootstrap(servers); err != nil {
			node.Close()
			return nil, fmt.Errorf("bootstrapping the raft group: %w", err)
		}
	}
	lis, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("coordinator API on %s: %w", cfg.APIAddr, err)
	}
	m.reg.MustRegister(newStateCollector(node))
	// Authorization (and the audit log) come first after the metrics: a
	// refused call reaches no other interceptor's side effects and no
	// handler, but is counted.
	interceptors := append([]grpc.UnaryServerInterceptor{m.unaryInterceptor, authz.UnaryInterceptor(authz.Config{State: authzState{node}, Logger: cfg.Logger})},
		cfg.UnaryInterceptors...)
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(interceptors...),
		// Clients ping every 5 s to notice a dead coordinator (see the
		// Client's keepalive); allow it, and drop clients that vanish.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second})}
	opts = append(opts, serverMsgSizes()...) // sizes chosen in msgsize.go
	if cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
	}
	c := &Coordinator{cfg: cfg, node: node, lis: lis, srv: grpc.NewServer(opts...), failed: make(chan error, 1), metrics: m, link: newLeaderLink(DialTLS(cfg.ClientTLS)),
		api: newServer(node, ServerConfig{APIAddrs: apiAddrs, Scheduler: cfg.Scheduler, MaxTrialsPerSweep: cfg.MaxTrialsPerSweep})}
	pb.RegisterCoordinatorServer(c.srv, c.api)
	if cfg.HTTPAddr != "" {
		if c.http, err = c.openHTTP(); err != nil {
			lis.Close()
			node.Close()
			return nil, err
		}
		c.wg.Add(1)
		go c.serveHTTP(c.http)
	}

	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		m.watchLeader(sctx, node.raft)
	}()
	go func() {
		defer c.wg.Done()
		if err := c.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			cfg.Logger.Error("coordinator API stopped serving", "id", cfg.ID, "addr", lis.Addr().String(), "err", err)
			select {
			case c.failed <- fmt.Errorf("coordinator %s API on %s: %w", cfg.ID, lis.Addr(), err):
			default: // the HTTP listener's failure is already there
			}
		}
	}()
	go func() {
		defer c.wg.Done()
		c.api.runScheduler(sctx)
	}()
	return c, nil
}

// ID is the coordinator's raft server ID.
func (c *Coordinator) ID() string { return c.cfg.ID }

// APIAddr is the address the gRPC API listens on (with the port chosen
// when the configured one was 0).
func (c *Coordinator) APIAddr() string { return c.lis.Addr().String() }

// RaftAddr is the raft address as configured and advertised.
func (c *Coordinator) RaftAddr() string { return c.cfg.RaftAddr }

// Node is the coordinator's raft node (leadership and applied state).
func (c *Coordinator) Node() *Node { return c.node }

// Failed delivers the API server's error should it stop serving before
// Close; a process should then exit.
func (c *Coordinator) Failed() <-chan error { return c.failed }

// Close shuts the coordinator down in order: the HTTP listener and then the
// API stop accepting calls (in-flight ones get drainTimeout each to
// finish), the scheduler drains, then
// raft shuts down and its stores close. It waits for every goroutine Open
// started and is safe to call more than once.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		if c.http != nil {
			c.http.close()
		}
		done := make(chan struct{})
		go func() { c.srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainTimeout):
			c.srv.Stop()
			<-done
		}
		c.stop()
		c.wg.Wait()
		c.link.close()
		var serveErr error
		select {
		case serveErr = <-c.failed:
		default:
		}
		c.closeErr = errors.Join(serveErr, c.node.Close())
		if c.closeErr != nil {
			c.cfg.Logger.Warn("closing coordinator", "id", c.cfg.ID, "err", c.closeErr)
		}
	})
	return c.closeErr
}
