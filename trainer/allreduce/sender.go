package allreduce

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
)

// sender streams one step's chunks to one peer on one Exchange stream. The
// AllReduce goroutine queues chunks without ever blocking, so it keeps
// draining its own inbox while the peer applies back-pressure. The sender's
// goroutine owns the stream's send side; a watcher goroutine waits for the
// peer's answer, which comes early when the peer's step fails. A chunk must
// not be modified once queued.
type sender struct {
	to     int
	ctx    context.Context // the stream's context, cancelled when the step ends
	cancel context.CancelFunc
	errc   chan<- error // receives the first stream error, without blocking

	mu     sync.Mutex // protects queue and closed
	queue  []*outChunk
	closed bool
	wake   chan struct{} // capacity 1: the queue changed

	failOnce sync.Once
	failed   chan struct{} // closed when the stream failed; err says why
	err      error

	done chan struct{} // closed when the goroutines are over
}

// startSender starts streaming to rank to. errc must have room for one error
// per sender of the step.
func (r *Ring) startSender(to int, errc chan<- error) *sender {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sender{
		to: to, ctx: ctx, cancel: cancel, errc: errc,
		wake: make(chan struct{}, 1), failed: make(chan struct{}), done: make(chan struct{}),
	}
	r.wg.Add(1) // the AllReduce call holds a count, so Close is still waiting
	go func() {
		defer r.wg.Done()
		defer close(s.done)
		s.run(r)
	}()
	return s
}

func (s *sender) run(r *Ring) {
	client, err := r.client(s.to)
	if err != nil {
		s.fail(err)
		return
	}
	// Until a stream has reached the peer in this generation, it may still be
	// starting up: wait for it, within the step deadline. After that a peer
	// that cannot be reached is gone, and the step fails at once.
	stream, err := client.Exchange(s.ctx, grpc.WaitForReady(!r.reach(s.to, false)), grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		s.fail(sendError(s.to, err))
		return
	}
	r.reach(s.to, true)
	answered := make(chan struct{})
	go func() { // the peer's answer: an ack after our end of stream, or why it stopped early
		defer close(answered)
		if err := stream.RecvMsg(new(pb.ExchangeAck)); err != nil {
			s.fail(sendError(s.to, err))
		}
	}()
	defer func() { <-answered }() // ends at the latest when the step cancels s.ctx
	for {
		c, ok := s.next()
		if !ok {
			break
		}
		if err := stream.SendMsg(c); err != nil {
			if !errors.Is(err, io.EOF) { // io.EOF: the peer ended the stream; the watcher gets why
				s.fail(sendError(s.to, err))
			}
			return
		}
	}
	if s.ctx.Err() == nil {
		_ = stream.CloseSend() // only fails when the stream did, which the watcher reports
	}
}

// next returns the next queued chunk; ok is false once the queue is closed
// and empty, or the stream failed or was cancelled.
func (s *sender) next() (c *outChunk, ok bool) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			c = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return c, true
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-s.wake:
		case <-s.failed:
			return nil, false
		case <-s.ctx.Done():
			return nil, false
		}
	}
}

// push queues c; it never blocks.
func (s *sender) push(c *outChunk) {
	s.mu.Lock()
	if !s.closed {
		s.queue = append(s.queue, c)
	}
	s.mu.Unlock()
	s.signal()
}

func (s *sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fail records the stream's first error and reports it to the step.
func (s *sender) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.failed)
		select {
		case s.errc <- err:
		default:
		}
	})
}

// finish ends the stream after the queued chunks and waits, until ctx ends
// or the Ring closes, for the peer's ack. It returns the stream's error.
func (s *sender) finish(ctx context.Context, closing <-chan struct{}) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.signal()
	defer s.cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.stop()
		return contextError(ctx)
	case <-closing:
		s.stop()
		return ErrClosed
	}
	select {
	case <-s.failed:
		return s.err
	default:
		return nil
	}
}

// abort drops the chunks not yet sent and queues a as the stream's last
// message. The caller gives it time to get through, then calls stop.
func (s *sender) abort(a *pb.Chunk) {
	s.mu.Lock()
	clear(s.queue)
	s.queue = append(s.queue[:0], newOutChunk(a, false, 1))
	s.closed = true
	s.mu.Unlock()
	s.signal()
}

// stop cancels the stream and waits for the sender's goroutines.
func (s *sender) stop() {
	s.cancel()
	<-s.done
}
