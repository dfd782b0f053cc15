package allreduce

import (
	"fmt"
	"sync"

	pb "github.com/loraft/loraft/proto/allreducepb"
)

// inboxDepth is how many received chunks an inbox queues before the Exchange
// handler stops reading and gRPC flow control pushes back on the sender.
const inboxDepth = 32

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
