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
	// spooled: files are in the saver's spool too (written there by add,
	// or left there by an earlier process).
	spooled bool
}

// size is the bytes of p's files.
func (p *pendingSave) size() int64 {
	var n int64
	for _, b := range p.files {
		n += int64(len(b))
	}
	return n
}

// saverConfig configures a saver; the zero values of the bounds take the
// defaults.
type saverConfig struct {
	store string // the store, for errors
	// max bounds the waiting checkpoints (DefaultPendingCheckpoints; at
	// least 2), maxBytes their bytes (DefaultPendingBytes).
	max      int
	maxBytes int64
	outage   time.Duration // DefaultStoreOutage
	// committed is the step the run resumed from (0: none); metric the
	// selection metric whose best checkpoint is never dropped.
	committed int
	metric    string
	// spool, when set, receives every checkpoint before its first write is
	// tried (generation and run are recorded with it), and loses it once it
	// is committed or dropped.
	spool      *spool
	generation uint64
	run        string

	commit func(ctx context.Context, p *pendingSave) error
	failed func(step int, err error)
	stop   func(error)
	// warn receives spool failures; they do not stop the job (the
	// checkpoint still waits in memory). Nil drops them.
	warn func(msg string)
}

// saver writes checkpoints to the store on its own goroutine, in the order
// they were taken, so training goes on while the store is slow or down. A
// failed write is retried with backoff; at most max checkpoints (and
// maxBytes) wait at once, and a new one beyond that drops the oldest waiting
// one that is not being written (superseded: it is reported to failed, never
// committed). With a spool, every waiting checkpoint is on local disk too,
// so a trainer restarted while the store is down can still write it.
// A checkpoint is committed (commit, which reports it) only after every
// earlier one was committed or dropped.
//
// When writes keep failing for outage, the saver stops with an error that
// wraps ErrStoreUnreachable, and calls stop with it (the job stops
// training). commit and failed are called on the saver's goroutine only,
// one at a time.
type saver struct {
	cfg saverConfig

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: there is news in queue or closed
	done   chan struct{} // closed when run returns

	mu        sync.Mutex // guards the fields below
	queue     []*pendingSave
	bytes     int64 // of queue
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

// newSaver starts a saver. The caller ends it with wait or abort.
func newSaver(ctx context.Context, cfg saverConfig) *saver {
	switch {
	case cfg.max <= 0:
		cfg.max = DefaultPendingCheckpoints
	case cfg.max < 2:
		cfg.max = 2 // the one being written and the newest, which is never dropped
	}
	if cfg.maxBytes <= 0 {
		cfg.maxBytes = DefaultPendingBytes
	}
	if cfg.outage <= 0 {
		cfg.outage = DefaultStoreOutage
	}
	if cfg.warn == nil {
		cfg.warn = func(string) {}
	}
	s := &saver{cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{}), committed: cfg.committed, metric: cfg.metric}
	s.ctx, s.cancel = context.WithCancel(ctx)
	go s.run()
	return s
}

// add queues a checkpoint for writing, spooling it first (unless it came
// from the spool). It fails only once the saver has given up.
func (s *saver) add(p *pendingSave) error {
	if err := s.stopped(); err != nil {
		return err
	}
	if s.cfg.spool != nil && !p.spooled {
		// A spool that cannot be written (disk full) costs the restart
		// safety only: the checkpoint still waits in memory.
		if err := s.cfg.spool.put(p, s.cfg.generation, s.cfg.run); err != nil {
			s.cfg.warn(fmt.Sprintf("warning: %v; the checkpoint waits in memory only", err))
		} else {
			p.spooled = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.queue = append(s.queue, p)
	s.bytes += p.size()
	for len(s.queue) > s.cfg.max || s.bytes > s.cfg.maxBytes {
		i := s.droppable()
		if i < 0 {
			break // only the best and the newest wait: keep both
		}
		s.dropped = append(s.dropped, s.queue[i].step)
		s.bytes -= s.queue[i].size()
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
			s.unspool(step)
			s.cfg.failed(step, fmt.Errorf("checkpoint at step %d: %w: newer checkpoints superseded it while %s failed", step, ErrCheckpointDropped, s.cfg.store))
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

		err := s.cfg.commit(s.ctx, p)
		s.mu.Lock()
		s.writing = false
		if err == nil {
			s.queue = s.queue[1:] // p is still first: add never drops the one being written
			s.bytes -= p.size()
			s.committed = p.step
			if v, ok := p.metrics[s.metric]; ok && s.metric != "" && (!s.hasBest || v > s.bestCommitted) {
				s.bestCommitted, s.hasBest = v, true
			}
			s.mu.Unlock()
			if p.spooled {
				s.unspool(p.step)
			}
			backoff, failingSince = saveBackoffMin, time.Time{}
			continue
		}
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		s.cfg.failed(p.step, err)
		now := time.Now()
		if failingSince.IsZero() {
			failingSince = now
		}
		if now.Sub(failingSince) >= s.cfg.outage {
			s.giveUp(err)
			return
		}
		t := time.NewTimer(min(backoff, s.cfg.outage-now.Sub(failingSince)))
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, saveBackoffMax)
	}
}

// unspool removes a committed or dropped checkpoint from the spool.
func (s *saver) unspool(step int) {
	if s.cfg.spool == nil {
		return
	}
	if err := s.cfg.spool.remove(step); err != nil {
		s.cfg.warn(fmt.Sprintf("warning: step %d: %v", step, err))
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
		ErrStoreUnreachable, s.cfg.outage, s.cfg.store, committed, steps, last)
	err := s.err
	s.mu.Unlock()
	s.cfg.stop(err)
}
