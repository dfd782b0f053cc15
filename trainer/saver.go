package trainer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Defaults of the checkpoint writer's Job fields.
const (
	// DefaultPendingCheckpoints is how many checkpoints may wait for the
	// store at once when Job.PendingCheckpoints is zero.
	DefaultPendingCheckpoints = 3
	// DefaultStoreOutage is how long checkpoints may keep failing before
	// the job gives up, when Job.StoreOutage is zero.
	DefaultStoreOutage = 10 * time.Minute
)

// Retry backoff of a failing checkpoint: doubling from saveBackoffMin up to
// saveBackoffMax between attempts.
const (
	saveBackoffMin = 250 * time.Millisecond
	saveBackoffMax = 5 * time.Second
)

var (
	// ErrStoreUnreachable reports a job that gave up because its store
	// kept failing checkpoint writes for longer than Job.StoreOutage. It
	// is not the run's fault: the run can resume from its last committed
	// checkpoint.
	ErrStoreUnreachable = errors.New("store unreachable")
	// ErrCheckpointDropped reports a checkpoint given up unwritten because
	// newer ones superseded it while it waited for the store.
	ErrCheckpointDropped = errors.New("checkpoint dropped unwritten")
)

// pendingSave is one encoded checkpoint waiting for the store.
type pendingSave struct {
	step    int
	files   map[string][]byte
	metrics map[string]float64
	at      time.Time // when the state was taken
}

// saver writes checkpoints to the store on its own goroutine, in the order
// they were taken, so training goes on while the store is slow or down. A
// failed write is retried with backoff; at most max checkpoints wait at
// once, and a new one beyond that drops the oldest waiting one that is not
// being written (superseded: it is reported to failed, never committed).
// A checkpoint is committed (commit, which reports it) only after every
// earlier one was committed or dropped.
//
// When writes keep failing for outage, the saver stops with an error that
// wraps ErrStoreUnreachable, and calls stop with it (the job stops
// training). commit and failed are called on the saver's goroutine only,
// one at a time.
type saver struct {
	commit func(ctx context.Context, p *pendingSave) error
	failed func(step int, err error)
	stop   func(error)
	store  string // the store, for errors
	max    int
	outage time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: there is news in queue or closed
	done   chan struct{} // closed when run returns

	mu        sync.Mutex // guards the fields below
	queue     []*pendingSave
	writing   bool  // queue[0] is being written
	dropped   []int // steps dropped, not yet reported to failed
	closed    bool  // no more checkpoints will come
	committed int   // the last committed step; 0: none
	err       error // why the saver stopped early
	// metric is the selection metric; bestCommitted its best committed
	// value (hasBest: there is one).
	metric        string
	bestCommitted float64
	hasBest       bool
}

// newSaver starts a saver; committed is the step the run resumed from (0:
// none), metric the selection metric whose best checkpoint is never dropped. The caller ends it with wait or abort.
func newSaver(ctx context.Context, store string, max int, outage time.Duration, committed int, metric string,
	commit func(context.Context, *pendingSave) error, failed func(int, error), stop func(error)) *saver {
	switch {
	case max <= 0:
		max = DefaultPendingCheckpoints
	case max < 2:
		max = 2 // the one being written and the newest, which is never dropped
	}
	if outage <= 0 {
		outage = DefaultStoreOutage
	}
	s := &saver{commit: commit, failed: failed, stop: stop, store: store, max: max, outage: outage,
		wake: make(chan struct{}, 1), done: make(chan struct{}), committed: committed, metric: metric}
	s.ctx, s.cancel = context.WithCancel(ctx)
	go s.run()
	return s
}

// add queues a checkpoint for writing. It fails only once the saver has
// given up.
func (s *saver) add(p *pendingSave) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.queue = append(s.queue, p)
	for len(s.queue) > s.max {
		i := s.droppable()
		if i < 0 {
			break // only the best and the newest wait: keep both
		}
		s.dropped = append(s.dropped, s.queue[i].step)
		s.queue = slices.Delete(s.queue, i, i+1)
	}
	s.poke()
	return nil
}

// droppable is the index of the oldest waiting checkpoint that may be
// dropped, or -1: never the one being written (it may still land), never the
// newest, and never the one holding the best selection metric so far (its
// loss would change which checkpoint the sweep calls best). s.mu is held.
func (s *saver) droppable() int {
	best, bestV := -1, s.bestCommitted
	if s.metric != "" {
		for i, q := range s.queue {
			if v, ok := q.metrics[s.metric]; ok && (!s.hasBest && best < 0 || v > bestV) {
				best, bestV = i, v
			}
		}
	}
	first := 0
	if s.writing {
		first = 1
	}
	for i := first; i < len(s.queue)-1; i++ {
		if i != best {
			return i
		}
	}
	return -1
}

// poke wakes run; s.mu is held.
func (s *saver) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait closes the queue and waits until every queued checkpoint is
// committed or dropped, or the saver gives up (the error wraps
// ErrStoreUnreachable), or ctx ends.
func (s *saver) wait() error {
	s.mu.Lock()
	s.closed = true
	s.poke()
	s.mu.Unlock()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if len(s.queue) > 0 {
		return fmt.Errorf("checkpoints not written: %w", s.ctx.Err())
	}
	return nil
}

// abort stops the saver without waiting for the queue, and waits for its
// goroutine.
func (s *saver) abort() {
	s.cancel()
	<-s.done
}

// stopped returns why the saver gave up, or nil.
func (s *saver) stopped() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *saver) run() {
	defer close(s.done)
	defer s.cancel()
	backoff := saveBackoffMin
	var failingSince time.Time
	for {
		s.mu.Lock()
		dropped := s.dropped
		s.dropped = nil
		var p *pendingSave
		if len(s.queue) > 0 {
			p, s.writing = s.queue[0], true
		}
		closed := s.closed
		s.mu.Unlock()
		for _, step := range dropped {
			s.failed(step, fmt.Errorf("checkpoint at step %d: %w: newer checkpoints superseded it while %s failed", step, ErrCheckpointDropped, s.store))
		}
		if p == nil {
			if closed {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-s.ctx.Done():
				return
			}
		}

		err := s.commit(s.ctx, p)
		s.mu.Lock()
		s.writing = false
		if err == nil {
			s.queue = s.queue[1:] // p is still first: add never drops the one being written
			s.committed = p.step
			if v, ok := p.metrics[s.metric]; ok && s.metric != "" && (!s.hasBest || v > s.bestCommitted) {
				s.bestCommitted, s.hasBest = v, true
			}
			s.mu.Unlock()
			backoff, failingSince = saveBackoffMin, time.Time{}
			continue
		}
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		s.failed(p.step, err)
		now := time.Now()
		if failingSince.IsZero() {
			failingSince = now
		}
		if now.Sub(failingSince) >= s.outage {
			s.giveUp(err)
			return
		}
		t := time.NewTimer(min(backoff, s.outage-now.Sub(failingSince)))
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, saveBackoffMax)
	}
}

// giveUp records the saver's final error, reports the checkpoints it leaves
// unwritten, and stops the job.
func (s *saver) giveUp(last error) {
	s.mu.Lock()
	var steps []int
	for _, p := range s.queue {
		steps = append(steps, p.step)
	}
	committed := "none"
	if s.committed > 0 {
		committed = fmt.Sprint(s.committed)
	}
	s.err = fmt.Errorf("%w for %v (%s); last committed step %s; checkpoints at steps %v not written: %w",
		ErrStoreUnreachable, s.outage, s.store, committed, steps, last)
	err := s.err
	s.mu.Unlock()
	s.stop(err)
}
