package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// service is the gRPC face of a Ring: it fences each chunk to the ring's run
// and generation and queues it in the inbox of its (step, sender).
type service struct {
	pb.UnimplementedAllReduceServer
	r *Ring
}

var _ pb.AllReduceServer = (*service)(nil)

// Exchange receives one peer's chunks of one step. It ends the stream with an
// ack after a clean end of stream, with FailedPrecondition for a chunk of
// another run or generation, and, as soon as this rank's step fails, with that
// failure (an Abort in the status details), so the sender hears of it at once
// instead of at its deadline.
func (s *service) Exchange(stream grpc.ClientStreamingServer[pb.Chunk, pb.ExchangeAck]) error {
	r := s.r
	if !r.track() {
		return status.Errorf(codes.Unavailable, "rank %d is closing", r.cfg.Rank)
	}
	defer r.wg.Done()
	recvc := r.receive(stream)

	var (
		ib     *inbox
		watch  <-chan struct{} // ib.closed while the local step may still fail
		n      uint64
		endErr = fmt.Errorf("%w: stream ended without an end of stream", ErrPeerLost)
	)
	defer func() {
		if ib != nil {
			ib.end(endErr)
		}
	}()
	for {
		var m received
		select {
		case m = <-recvc:
		case <-watch:
			if ib.outcome != nil {
				return statusOf(r.cfg.Rank, ib.outcome)
			}
			watch = nil // the step succeeded; wait for the end of stream
			continue
		case <-r.closing:
			return status.Errorf(codes.Unavailable, "rank %d is closing", r.cfg.Rank)
		}
		if errors.Is(m.err, io.EOF) {
			endErr = nil
			return stream.SendAndClose(&pb.ExchangeAck{Chunks: n})
		}
		if m.err != nil {
			endErr = fmt.Errorf("%w: stream from the left broke: %w", ErrPeerLost, m.err)
			if ib != nil {
				endErr = fmt.Errorf("%w: stream from rank %d broke: %w", ErrPeerLost, ib.key.from, m.err)
			}
			return m.err
		}
		c := m.c
		if err := r.fence(c); err != nil {
			endErr = err
			return statusOf(r.cfg.Rank, err)
		}
		if ib == nil {
			// Later chunks must name the same sender (checked below).
			if err := r.sender(stream.Context(), c); err != nil {
				return err
			}
			var err error
			if ib, err = r.attach(c); err != nil {
				return err
			}
			watch = ib.closed
		} else if c.GetStep() != ib.key.step || int(c.GetFromRank()) != ib.key.from {
			endErr = fmt.Errorf("%w: stream of rank %d step %d carried a chunk of rank %d step %d",
				ErrProtocol, ib.key.from, ib.key.step, c.GetFromRank(), c.GetStep())
			return statusOf(r.cfg.Rank, endErr)
		}
		if a := c.GetAbort(); a != nil {
			endErr = remoteOf(a)
			return stream.SendAndClose(&pb.ExchangeAck{Chunks: n})
		}
		select {
		case ib.chunks <- c:
			n++
		case <-ib.closed:
			if ib.outcome == nil {
				return status.Errorf(codes.InvalidArgument, "rank %d finished step %d and expects no more chunks", r.cfg.Rank, ib.key.step)
			}
			return statusOf(r.cfg.Rank, ib.outcome)
		case <-r.closing:
			return status.Errorf(codes.Unavailable, "rank %d is closing", r.cfg.Rank)
		}
	}
}

// received is one result of stream.Recv.
type received struct {
	c   *pb.Chunk
	err error
}

// receive reads stream on its own goroutine, so the handler can stop waiting
// for the next chunk when the local step fails. The goroutine ends after the
// first error, which at the latest comes when the handler returns and gRPC
// cancels the stream.
func (r *Ring) receive(stream grpc.ClientStreamingServer[pb.Chunk, pb.ExchangeAck]) <-chan received {
	recvc := make(chan received)
	done := stream.Context().Done()
	r.wg.Add(1) // the handler holds a count, so Close is still waiting
	go func() {
		defer r.wg.Done()
		for {
			c, err := stream.Recv()
			select {
			case recvc <- received{c, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return recvc
}

// fence checks a chunk's run and generation against the ring's. A chunk of a
// newer generation means this rank is the stale one: the step the chunk
// belongs to fails here too, with ErrStaleGeneration.
func (r *Ring) fence(c *pb.Chunk) error {
	if c.GetRunId() != r.cfg.RunID {
		return fmt.Errorf("%w: chunk of run %q from rank %d reached run %q", ErrWrongRun, c.GetRunId(), c.GetFromRank(), r.cfg.RunID)
	}
	from := int(c.GetFromRank())
	if from >= r.cfg.World || from == r.cfg.Rank {
		return fmt.Errorf("%w: chunk from rank %d reached rank %d of %d", ErrProtocol, from, r.cfg.Rank, r.cfg.World)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch g := c.GetGeneration(); {
	case g < r.gen:
		return fmt.Errorf("%w: chunk of generation %d from rank %d; rank %d is at generation %d", ErrStaleGeneration, g, from, r.cfg.Rank, r.gen)
	case g > r.gen:
		err := fmt.Errorf("%w: rank %d is at generation %d, rank %d at generation %d", ErrStaleGeneration, from, g, r.cfg.Rank, r.gen)
		// Fail the step the chunk belongs to here too, but create no inbox
		// a sound chunk could not have: a forged generation must not be a
		// way around the window.
		if key := (inboxKey{step: c.GetStep(), from: from}); !r.closed && !r.finishedLocked(key.step) && r.admitLocked(key) == nil {
			r.inboxLocked(key).fail(err)
		}
		return err
	}
	return nil
}

// attach binds the stream that carried c to the inbox of c's step and
// sender. It refuses a second stream for the same inbox and a stream for a
// step this rank has already ended.
func (r *Ring) attach(c *pb.Chunk) (*inbox, error) {
	key := inboxKey{step: c.GetStep(), from: int(c.GetFromRank())}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, status.Errorf(codes.Unavailable, "rank %d is closing", r.cfg.Rank)
	}
	if r.finishedLocked(key.step) {
		if key.step == r.lastStep && r.lastErr != nil {
			return nil, statusOf(r.cfg.Rank, r.lastErr)
		}
		return nil, status.Errorf(codes.Aborted, "rank %d already ended step %d (last step %d)", r.cfg.Rank, key.step, r.lastStep)
	}
	if err := r.admitLocked(key); err != nil {
		return nil, err
	}
	ib := r.inboxLocked(key)
	if ib.attached {
		return nil, status.Errorf(codes.AlreadyExists, "rank %d already receives step %d from rank %d", r.cfg.Rank, key.step, key.from)
	}
	ib.attached = true
	return ib, nil
}

// sender checks, when the ring knows its ranks' certificates (PeerIDs under
// TLS), that the chunk's from_rank is the rank whose certificate the stream
// came with: the handshake admits any trainer of the ring, and without this
// one of them could speak for another, filling that rank's inboxes or
// failing its steps. The error is a PermissionDenied status.
func (r *Ring) sender(ctx context.Context, c *pb.Chunk) error {
	if r.cfg.ServerTLS == nil || len(r.cfg.PeerIDs) == 0 {
		return nil
	}
	from := int(c.GetFromRank())
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "rank %d: chunk from rank %d on a stream without a peer", r.cfg.Rank, from)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "rank %d: chunk from rank %d on a stream without TLS", r.cfg.Rank, from)
	}
	id, err := pki.FromConnectionState(info.State)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "rank %d: chunk from rank %d: %v", r.cfg.Rank, from, err)
	}
	if id.ID != r.cfg.PeerIDs[from] { // fence checked from < World
		return status.Errorf(codes.PermissionDenied, "rank %d: trainer %s sent a chunk as rank %d, which is trainer %s",
			r.cfg.Rank, id.ID, from, r.cfg.PeerIDs[from])
	}
	return nil
}
