package allreduce

import (
	"fmt"
	"sync"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inboxDepth is how many received chunks an inbox queues before the Exchange
// handler stops reading and gRPC flow control pushes back on the sender.
const inboxDepth = 32

// maxStreamsPerConn is the most Exchange streams one connection may have
// open on this rank's server (HTTP/2 MAX_CONCURRENT_STREAMS; gRPC's default
// is unlimited). A sound peer has one stream per step open to this rank,
// and two while one step's stream drains as the next opens; 4 leaves slack.
// Further streams wait for one to end instead of each costing a handler,
// a receive goroutine and buffers.
const maxStreamsPerConn = 4

// stepWindow is how far ahead of this rank's step a chunk's step may be.
// No rank can finish step s before every rank has sent its share of s, so a
// sound peer is at most one step ahead; 2 leaves a step of slack. A chunk
// further ahead is refused before anything is allocated for it: without
// this, any step number named on the wire created an inbox that lived until
// this rank reached that step, which a peer naming steps near 2^64 meant
// never.
const stepWindow = 2

// maxInboxes bounds the inboxes a ring holds at once: one per sender for
// each step of the window and the current one. With inboxDepth chunks of at
// most maxRecvMsgBytes each, it bounds the bytes a ring buffers to
// maxInboxes × inboxDepth × maxRecvMsgBytes whatever its peers send.
func (r *Ring) maxInboxes() int {
	return (stepWindow + 1) * max(r.cfg.World-1, 1)
}

// stepRefLocked is the step that chunk steps are measured against: the step
// in flight, else the one after the last that ended, else (no step yet in
// this generation) the lowest step a peer has sent. ok is false when there
// is none of these. r.mu must be held.
func (r *Ring) stepRefLocked() (ref uint64, ok bool) {
	switch {
	case r.inFlight:
		return r.curStep, true
	case r.ran:
		return r.lastStep + 1, true
	}
	for k := range r.inboxes {
		if !ok || k.step < ref {
			ref, ok = k.step, true
		}
	}
	return ref, ok
}

// admitLocked decides whether a stream may create (or use) the inbox for
// key: its step must be within stepWindow of the reference step, and a new
// inbox must fit under maxInboxes. The error is a gRPC status
// (InvalidArgument for a step out of the window, ResourceExhausted when
// full). r.mu must be held.
func (r *Ring) admitLocked(key inboxKey) error {
	if ref, ok := r.stepRefLocked(); ok && key.step > ref && key.step-ref > stepWindow {
		return statusOf(r.cfg.Rank, fmt.Errorf("%w: chunk of step %d from rank %d is more than %d steps ahead of step %d",
			ErrProtocol, key.step, key.from, stepWindow, ref))
	}
	if _, ok := r.inboxes[key]; !ok && len(r.inboxes) >= r.maxInboxes() {
		return status.Errorf(codes.ResourceExhausted, "rank %d already holds %d inboxes, its limit; refusing step %d from rank %d",
			r.cfg.Rank, len(r.inboxes), key.step, key.from)
	}
	return nil
}

// dropBeyondLocked drops the inboxes of steps more than stepWindow after
// step, which a peer may have opened before this rank had a step to
// measure them against. r.mu must be held.
func (r *Ring) dropBeyondLocked(step uint64) {
	for k, ib := range r.inboxes {
		if k.step > step && k.step-step > stepWindow {
			err := fmt.Errorf("%w: step %d is more than %d steps ahead of step %d", ErrProtocol, k.step, stepWindow, step)
			ib.fail(err)
			ib.close(err)
			delete(r.inboxes, k)
		}
	}
}

// inboxKey names the chunks one peer sends this rank in one step.
type inboxKey struct {
	step uint64
	from int
}

// inbox hands the chunks of one Exchange stream to the AllReduce call of the
// same step, in arrival order. Exactly one Exchange handler writes chunks and
// calls end; the AllReduce call reads and calls close. Either side may exist
// first: a fast neighbour's stream waits here until this rank reaches the step.
type inbox struct {
	key    inboxKey
	chunks chan *pb.Chunk

	endOnce sync.Once
	ended   chan struct{} // closed after the stream's last chunk was queued
	endErr  error         // why the stream ended; nil for a clean end of stream

	failOnce sync.Once
	failed   chan struct{} // closed when the step must fail, whatever was received
	failErr  error

	closeOnce sync.Once
	closed    chan struct{} // closed when the local step is over
	outcome   error         // the local step's result, sent upstream if the stream is still open

	attached bool // guarded by Ring.mu: an Exchange stream delivers into this inbox
}

func newInbox(key inboxKey) *inbox {
	return &inbox{
		key:    key,
		chunks: make(chan *pb.Chunk, inboxDepth),
		ended:  make(chan struct{}),
		failed: make(chan struct{}),
		closed: make(chan struct{}),
	}
}

// end records that the stream is over. Chunks queued before stay readable.
func (ib *inbox) end(err error) {
	ib.endOnce.Do(func() {
		ib.endErr = err
		close(ib.ended)
	})
}

// fail makes the step fail with err (a generation change, a newer generation
// seen on the wire, the ring closing).
func (ib *inbox) fail(err error) {
	ib.failOnce.Do(func() {
		ib.failErr = err
		close(ib.failed)
	})
}

// close tells the Exchange handler that the local step is over with outcome.
func (ib *inbox) close(outcome error) {
	ib.closeOnce.Do(func() {
		ib.outcome = outcome
		close(ib.closed)
	})
}

// inboxLocked returns the inbox for key in the current generation, creating
// it. r.mu must be held.
func (r *Ring) inboxLocked(key inboxKey) *inbox {
	ib, ok := r.inboxes[key]
	if !ok {
		ib = newInbox(key)
		r.inboxes[key] = ib
	}
	return ib
}

// finishedLocked reports whether step is at or before the last step this rank
// ran in the current generation. r.mu must be held.
func (r *Ring) finishedLocked(step uint64) bool {
	return r.ran && step <= r.lastStep
}

// begin registers an AllReduce call for step and returns the generation it
// runs in and the inboxes of the peers it receives from. The call is tracked
// by r.wg until finish.
func (r *Ring) begin(step uint64, from []int) (uint64, []*inbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, nil, ErrClosed
	}
	if r.finishedLocked(step) {
		return 0, nil, fmt.Errorf("%w: step %d is not after step %d", ErrStepOrder, step, r.lastStep)
	}
	r.inFlight, r.curStep = true, step
	r.dropBeyondLocked(step)
	ibs := make([]*inbox, len(from))
	for i, f := range from {
		ibs[i] = r.inboxLocked(inboxKey{step: step, from: f})
	}
	r.wg.Add(1)
	return r.gen, ibs, nil
}

// finish ends the AllReduce call begun for step in generation gen with
// outcome err: it closes the call's inboxes, and, if the generation is still
// current, records the step as the last one and drops the inboxes of this
// and earlier steps (a neighbour's late stream for them is refused).
func (r *Ring) finish(gen, step uint64, ibs []*inbox, err error) {
	for _, ib := range ibs {
		ib.close(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.wg.Done()
	r.inFlight = false
	if gen != r.gen {
		return
	}
	r.ran, r.lastStep, r.lastErr = true, step, err
	for k, ib := range r.inboxes {
		if k.step <= step {
			ib.close(fmt.Errorf("%w: step %d was given up when step %d ended", ErrPeerLost, k.step, step))
			delete(r.inboxes, k)
		}
	}
}
