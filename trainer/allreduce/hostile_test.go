package allreduce

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// inboxCount is how many inboxes r holds.
func inboxCount(r *Ring) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inboxes)
}

// hostileCluster starts a 3-rank ring under mutual TLS with PeerIDs, and
// returns it with client connections to rank 0 holding rank 1's and rank
// 2's certificates, by rank: peers the ring admits, sending whatever they
// like.
func hostileCluster(t *testing.T) (*cluster, map[uint32]*grpc.ClientConn) {
	t.Helper()
	ca := testpki.New(t)
	ids := []string{"t0", "t1", "t2"}
	c := newCluster(t, 3, func(cfg *Config) {
		cert := ca.IssueAs(t, pki.RoleTrainer, ids[cfg.Rank])
		cfg.ServerTLS, cfg.ClientTLS, cfg.PeerIDs = ca.ServerConfig(cert), ca.ClientConfig(cert), ids
		cfg.StepTimeout = 10 * time.Second
	})
	conns := map[uint32]*grpc.ClientConn{}
	for rank := uint32(1); rank <= 2; rank++ {
		cert := ca.IssueAs(t, pki.RoleTrainer, ids[rank])
		conn, err := grpc.NewClient(c.rings[0].Addr(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[rank] = conn
	}
	return c, conns
}

// sendOne opens a stream, sends one chunk of step step from rank from in
// generation gen, and returns the stream's outcome.
func sendOne(t *testing.T, conn *grpc.ClientConn, gen, step uint64, from uint32) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := pb.NewAllReduceClient(conn).Exchange(ctx)
	if err != nil {
		return err
	}
	_ = stream.Send(&pb.Chunk{RunId: testRun, Generation: gen, Step: step, FromRank: from, Phase: pb.Phase_PHASE_REDUCE_SCATTER,
		Segment: 2, Data: make([]byte, 4), Length: 3}) // a refusal shows in CloseAndRecv
	_, err = stream.CloseAndRecv()
	return err
}

// TestHostilePeerFarSteps: an admitted peer naming steps far ahead of the
// ring's is refused with InvalidArgument and allocates no inbox, in the
// current generation and a forged newer one; steps within the window are
// taken, the inboxes of reduced steps are dropped, and the ring still
// reduces correctly afterwards.
func TestHostilePeerFarSteps(t *testing.T) {
	c, conns := hostileCluster(t)
	bufs := [][]float32{{1, 2, 3}, {10, 20, 30}, {100, 200, 300}}
	c.allReduce(t, 1, bufs) // rank 0 has ended step 1: the window is steps 2..4
	if n := inboxCount(c.rings[0]); n != 0 {
		t.Fatalf("%d inboxes after step 1, want 0", n)
	}
	for _, tc := range []struct {
		name string
		gen  uint64
		step uint64
		from uint32
		code codes.Code
	}{
		{"one past the window", 1, 5, 2, codes.InvalidArgument},
		{"far ahead", 1, 1 << 40, 2, codes.InvalidArgument},
		{"the largest step", 1, math.MaxUint64, 1, codes.InvalidArgument},
		{"a newer generation far ahead", 2, 1 << 50, 2, codes.FailedPrecondition},
		{"a step already reduced", 1, 1, 2, codes.Aborted},
		{"speaking as another rank", 1, 2, 1, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := conns[2] // rank 2's certificate, whatever the chunk says
			if tc.code != codes.PermissionDenied {
				conn = conns[tc.from]
			}
			err := sendOne(t, conn, tc.gen, tc.step, tc.from)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if n := inboxCount(c.rings[0]); n != 0 {
				t.Fatalf("rank 0 holds %d inboxes after a refused chunk, want 0", n)
			}
		})
	}
	// Within the window the chunks are queued (a fast neighbour's), up to
	// one inbox per sender and step.
	for step := uint64(2); step <= 4; step++ {
		for from := uint32(1); from <= 2; from++ {
			if err := sendOne(t, conns[from], 1, step, from); err != nil {
				t.Fatalf("step %d from rank %d, within the window: %v", step, from, err)
			}
		}
	}
	if n, limit := inboxCount(c.rings[0]), c.rings[0].maxInboxes(); n != limit {
		t.Fatalf("%d inboxes after filling the window, want its limit %d", n, limit)
	}
	// Rank 0's next step is 6: inboxes of steps before it are dropped. The
	// jump from step 1 to 6 is past every rank's window (training never
	// skips steps), so whichever rank begins step 6 first may have its chunk
	// refused by a neighbour that has not begun it yet: step 6 may fail, but
	// it ends on every rank, and rank 0 holds no inbox afterwards.
	bufs = [][]float32{{1, 1, 1}, {2, 2, 2}, {3, 3, 3}}
	errs, _ := c.reduce(nil, func(r *Ring) error { return r.AllReduce(context.Background(), 6, bufs[r.Rank()]) })
	for rank, err := range errs {
		if err != nil {
			t.Logf("rank %d step 6 (a jump past the window): %v", rank, err)
		}
	}
	if n := inboxCount(c.rings[0]); n != 0 {
		t.Fatalf("%d inboxes left after step 6, want 0 (steps 2..4 were reduced past)", n)
	}
	// The planted chunks failed nothing beyond the steps they named: the
	// next step reduces correctly on every rank.
	bufs = [][]float32{{1, 1, 1}, {2, 2, 2}, {3, 3, 3}}
	c.allReduce(t, 7, bufs)
	if bufs[0][2] != 6 || bufs[1][0] != 6 || bufs[2][1] != 6 {
		t.Fatalf("step 7 after the attack: %v, want 6 everywhere", bufs)
	}
}

// TestHostilePeerInboxBound: before the ring's first step, when no step
// bounds the window, a peer naming many distinct steps gets at most
// maxInboxes inboxes and then ResourceExhausted; the ring's first step then
// drops them and works.
func TestHostilePeerInboxBound(t *testing.T) {
	c, conns := hostileCluster(t)
	limit := c.rings[0].maxInboxes()
	refused := 0
	for i := range 4 * limit {
		err := sendOne(t, conns[2], 1, uint64(1000-i), 2)
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			refused++
		default:
			t.Fatalf("step %d: %v", 1000-i, err)
		}
		if n := inboxCount(c.rings[0]); n > limit {
			t.Fatalf("rank 0 holds %d inboxes, more than its limit %d", n, limit)
		}
	}
	if refused < 3*limit {
		t.Fatalf("%d of %d streams refused, want at least %d", refused, 4*limit, 3*limit)
	}
	// Rank 0 begins step 1 first, dropping the planted inboxes (all far
	// ahead of it), so its left neighbour's stream finds room.
	bufs := [][]float32{{1, 2, 3}, {10, 20, 30}, {100, 200, 300}}
	done := make(chan error, 1)
	go func() { done <- c.rings[0].AllReduce(context.Background(), 1, bufs[0]) }()
	waitFor(t, "rank 0 to begin step 1", 10*time.Second, func() bool {
		r := c.rings[0]
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.inFlight
	})
	errs, _ := c.reduce([]int{1, 2}, func(r *Ring) error { return r.AllReduce(context.Background(), 1, bufs[r.Rank()]) })
	if err := <-done; err != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("step 1 after the attack: %v, %v, %v", err, errs[1], errs[2])
	}
	if bufs[0][2] != 333 || bufs[2][0] != 111 {
		t.Fatalf("step 1: %v, want [111 222 333] everywhere", bufs)
	}
}

// TestStreamsPerConnection: one connection gets at most maxStreamsPerConn
// Exchange streams at a time; a further one waits (here until its deadline)
// instead of costing the server a handler.
func TestStreamsPerConnection(t *testing.T) {
	c, conns := hostileCluster(t)
	client := pb.NewAllReduceClient(conns[2])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range maxStreamsPerConn {
		stream, err := client.Exchange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Streams held open, each attached to its own inbox. Steps go
		// down (no step has run, so the lowest one seen is the
		// reference), one stream attached before the next opens.
		if err := stream.Send(&pb.Chunk{RunId: testRun, Generation: 1, Step: uint64(maxStreamsPerConn - i), FromRank: 2,
			Phase: pb.Phase_PHASE_REDUCE_SCATTER, Data: make([]byte, 4), Length: 3}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the stream to attach", 10*time.Second, func() bool { return inboxCount(c.rings[0]) == i+1 })
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	extra, err := client.Exchange(short)
	if err == nil {
		err = extra.Send(&pb.Chunk{RunId: testRun, Generation: 1, Step: 1, FromRank: 2, Phase: pb.Phase_PHASE_REDUCE_SCATTER, Data: make([]byte, 4), Length: 3})
		if err == nil {
			_, err = extra.CloseAndRecv()
		}
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream %d on one connection: %v, want it held until its deadline (DeadlineExceeded)", maxStreamsPerConn+1, err)
	}
	if n := inboxCount(c.rings[0]); n != maxStreamsPerConn {
		t.Fatalf("%d inboxes, want %d: the extra stream reached the server", n, maxStreamsPerConn)
	}
}
