package allreduce

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
)

// Ring is one rank's end of a ring all-reduce: a gRPC server that receives
// its neighbours' chunks and lazily dialled client connections to its peers.
//
// AllReduce calls on one Ring are serialised; SetGeneration, Addr and Close
// may be called from any goroutine at any time.
type Ring struct {
	cfg  Config // immutable after Listen; the generation lives in gen
	lis  net.Listener
	srv  *grpc.Server
	dial []grpc.DialOption

	stepMu sync.Mutex // serialises AllReduce calls

	mu       sync.Mutex          // protects the fields below
	gen      uint64              // current generation
	inboxes  map[inboxKey]*inbox // streams of the current generation, by (step, sender)
	ran      bool                // a step ended in this generation
	lastStep uint64              // the last step that ended in this generation
	lastErr  error               // its outcome
	inFlight bool                // an AllReduce call is between begin and finish
	curStep  uint64              // its step
	conns    map[int]*grpc.ClientConn
	reached  map[int]bool // peers a stream reached in this generation
	closed   bool
	closing  chan struct{} // closed by Close

	wg        sync.WaitGroup // the Serve loop, Exchange handlers, AllReduce calls and senders
	closeOnce sync.Once
	closeErr  error
}

// Listen validates cfg, starts this rank's gRPC server on cfg.Peers[cfg.Rank]
// and returns once it is listening. ctx bounds only the start-up; the Ring
// runs until Close. Peers are dialled lazily, so ranks may start in any order.
func Listen(ctx context.Context, cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("allreduce: %w", err)
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.Peers[cfg.Rank])
	if err != nil {
		return nil, fmt.Errorf("allreduce: rank %d: listen: %w", cfg.Rank, err)
	}
	return listen(cfg, lis)
}

// listen serves cfg's rank on lis, which the Ring owns from then on. Tests
// call it with listeners opened on port 0.
func listen(cfg Config, lis net.Listener) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		lis.Close()
		return nil, fmt.Errorf("allreduce: %w", err)
	}
	cfg = cfg.withDefaults()
	sopts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(wireCodec{}),
		experimental.BufferPool(grpcPool{}),
		grpc.MaxRecvMsgSize(maxRecvMsgBytes),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		grpc.WriteBufferSize(ioBufferBytes),
		grpc.ReadBufferSize(ioBufferBytes),
		grpc.StaticStreamWindowSize(streamWindowBytes),
		grpc.StaticConnWindowSize(2 * streamWindowBytes),
	}
	dopts := []grpc.DialOption{
		grpc.WithDisableRetry(), // a step is not replayable; no replay buffer either
		// Redial a peer that is (re)starting within a second, not gRPC's
		// default of up to two minutes, so the first step after it comes
		// back does not wait out a long back-off.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}}),
		grpc.WithWriteBufferSize(ioBufferBytes),
		grpc.WithReadBufferSize(ioBufferBytes),
		experimental.WithBufferPool(grpcPool{}),
	}
	if cfg.ServerTLS != nil {
		serverTLS, clientTLS := cfg.ServerTLS, cfg.ClientTLS
		if len(cfg.PeerIDs) > 0 {
			serverTLS = withPeer(serverTLS, cfg.PeerIDs...)
			clientTLS = withPeer(clientTLS, cfg.PeerIDs...)
		}
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(serverTLS)))
		dopts = append(dopts, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	} else {
		dopts = append(dopts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	r := &Ring{
		cfg:     cfg,
		lis:     lis,
		srv:     grpc.NewServer(sopts...),
		dial:    dopts,
		gen:     cfg.Generation,
		inboxes: make(map[inboxKey]*inbox),
		conns:   make(map[int]*grpc.ClientConn),
		reached: make(map[int]bool),
		closing: make(chan struct{}),
	}
	pb.RegisterAllReduceServer(r.srv, &service{r: r})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.srv.Serve(lis) // returns when Close stops the server
	}()
	return r, nil
}

// ioBufferBytes is the size of gRPC's per-connection read and write buffers
// (default 32 KiB): larger buffers mean fewer system calls per chunk.
const ioBufferBytes = 512 << 10

// streamWindowBytes is the HTTP/2 flow-control window of an incoming Exchange
// stream (its connection's is twice that, as the next step's stream may open
// while one drains). With gRPC's default, a window sized by bandwidth-delay
// probing from 64 KiB up, senders stalled on window updates: 4 ranks on 2
// cores used 1.3 of them for a 64 MB step, 2 with this window (bench
// allreduce). A static window also saves the probing pings. Back-pressure is
// unchanged: a rank whose inbox is full stops reading, and the window closes.
const streamWindowBytes = 16 << 20

// Addr returns the address the Ring's server listens on.
func (r *Ring) Addr() string { return r.lis.Addr().String() }

// Rank returns this rank's index in the ring.
func (r *Ring) Rank() int { return r.cfg.Rank }

// Generation returns the ring's current generation.
func (r *Ring) Generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// SetGeneration moves the ring to generation gen, for a ring re-formed by a
// new assignment with the same peers. From then on this rank stamps its
// chunks with gen and refuses chunks of any other generation; a step in
// flight fails with ErrStaleGeneration, and step numbers may start over.
func (r *Ring) SetGeneration(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen == r.gen {
		return
	}
	old := r.gen
	r.gen = gen
	// A step in flight fails; it measures nothing in the new generation.
	r.ran, r.lastStep, r.lastErr, r.inFlight = false, 0, nil, false
	clear(r.reached) // the re-formed ring's peers may be starting up
	for k, ib := range r.inboxes {
		err := fmt.Errorf("%w: generation changed from %d to %d during step %d", ErrStaleGeneration, old, gen, k.step)
		ib.fail(err)
		ib.close(err)
		delete(r.inboxes, k)
	}
}

// Close stops the server, fails a step in flight with ErrClosed, closes the
// connections and waits for every goroutine of the Ring, including an
// AllReduce call in flight, to return. Further calls return nil.
func (r *Ring) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.closing)
		for k, ib := range r.inboxes {
			ib.fail(fmt.Errorf("%w: rank %d", ErrClosed, r.cfg.Rank))
			delete(r.inboxes, k)
		}
		r.mu.Unlock()

		r.srv.Stop()
		r.wg.Wait()

		r.mu.Lock()
		defer r.mu.Unlock()
		for to, cc := range r.conns {
			if err := cc.Close(); err != nil && r.closeErr == nil {
				r.closeErr = fmt.Errorf("allreduce: rank %d: close connection to rank %d: %w", r.cfg.Rank, to, err)
			}
		}
	})
	return r.closeErr
}

// track registers an Exchange handler with r.wg; it reports false once the
// Ring is closing.
func (r *Ring) track() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// reach records that a stream reached rank to, or, with ok false, reports
// whether one did in this generation.
func (r *Ring) reach(to int, ok bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.reached[to] = true
	}
	return r.reached[to]
}

// client returns a client for rank to, dialling it on first use.
func (r *Ring) client(to int) (pb.AllReduceClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	cc, ok := r.conns[to]
	if !ok {
		var err error
		cc, err = grpc.NewClient(r.cfg.Peers[to], r.dialOptions(to)...)
		if err != nil {
			return nil, fmt.Errorf("%w: dial rank %d at %s: %w", ErrPeerLost, to, r.cfg.Peers[to], err)
		}
		r.conns[to] = cc
	}
	return pb.NewAllReduceClient(cc), nil
}

// withPeer returns a clone of cfg that admits only a peer whose verified
// certificate is loraft://trainer/<id> for one of ids.
func withPeer(cfg *tls.Config, ids ...string) *tls.Config {
	return pki.WithIdentity(cfg, pki.RoleTrainer, ids...)
}

// dialOptions are the options to dial rank to with. With PeerIDs under
// TLS the client accepts only that rank's certificate, not any trainer of
// the ring: an address that another trainer took over (or that the
// coordinators were told wrongly) fails the handshake instead of
// receiving chunks meant for another rank.
func (r *Ring) dialOptions(to int) []grpc.DialOption {
	if r.cfg.ClientTLS == nil || len(r.cfg.PeerIDs) == 0 {
		return r.dial
	}
	creds := credentials.NewTLS(withPeer(r.cfg.ClientTLS, r.cfg.PeerIDs[to]))
	return append(slices.Clip(r.dial), grpc.WithTransportCredentials(creds)) // the last credentials win
}
