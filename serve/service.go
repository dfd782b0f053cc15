package serve

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/loraft/loraft/trainer"
)

// Config bounds the service. DefaultConfig gives each its default.
type Config struct {
	// MaxBatch is the most texts one forward pass takes.
	MaxBatch int
	// MaxWait is how long the first queued text waits for others to share
	// its batch.
	MaxWait time.Duration
	// Workers run batches concurrently on the one model.
	Workers int
	// QueueTexts bounds the texts waiting for a batch; a request that would
	// exceed it is refused with ErrOverloaded instead of growing the queue.
	QueueTexts int
	// MaxTexts bounds the texts of one request.
	MaxTexts int
	// MaxTextBytes cuts each text (at a character boundary) before it is
	// tokenized; the answer reports the cut.
	MaxTextBytes int
	// Review routes statements to a person.
	Review Review
}

// DefaultConfig batches up to 32 texts within 5 ms on 2 workers, queues at
// most 1,024 texts, and takes requests of up to 256 texts of 16 KiB each.
func DefaultConfig() Config {
	return Config{MaxBatch: 32, MaxWait: 5 * time.Millisecond, Workers: 2, QueueTexts: 1024,
		MaxTexts: 256, MaxTextBytes: 16 << 10, Review: DefaultReview()}
}

// Validate names the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.MaxBatch < 1 || c.MaxBatch > 4096:
		return fmt.Errorf("max batch %d, want 1..4096", c.MaxBatch)
	case c.MaxWait < 0 || c.MaxWait > time.Second:
		return fmt.Errorf("max wait %v, want 0..1s", c.MaxWait)
	case c.Workers < 1 || c.Workers > 256:
		return fmt.Errorf("workers %d, want 1..256", c.Workers)
	case c.QueueTexts < c.MaxTexts:
		return fmt.Errorf("queue %d texts, want at least the request limit %d", c.QueueTexts, c.MaxTexts)
	case c.MaxTexts < 1:
		return fmt.Errorf("max texts %d, want at least 1", c.MaxTexts)
	case c.MaxTextBytes < 1:
		return fmt.Errorf("max text bytes %d, want at least 1", c.MaxTextBytes)
	case c.Review.Below > 1:
		return fmt.Errorf("review below %v, want 0..1 (or negative for the adapter's threshold)", c.Review.Below)
	}
	return nil
}

// Errors Classify answers with; the HTTP and gRPC fronts map each to its
// status.
var (
	// ErrOverloaded: the queue is full; retry later (HTTP 429,
	// RESOURCE_EXHAUSTED).
	ErrOverloaded = errors.New("classification queue full")
	// ErrNotReady: no model is loaded yet (HTTP 503, UNAVAILABLE).
	ErrNotReady = errors.New("no model loaded yet")
	// ErrInvalid wraps a request that cannot be classified (HTTP 400,
	// INVALID_ARGUMENT).
	ErrInvalid = errors.New("invalid request")
)

// Result is one text's answer.
type Result struct {
	Label         string             `json:"label"`
	Confidence    float64            `json:"confidence"`
	Probabilities map[string]float64 `json:"probabilities"`
	NeedsReview   bool               `json:"needs_review"`
	ReviewReasons []ReviewReason     `json:"review_reasons,omitempty"`
	// Truncated: the text was cut to MaxTextBytes before tokenizing.
	Truncated bool `json:"truncated,omitempty"`
	// TokensTruncated: its tokens were cut to the model's max length.
	TokensTruncated bool `json:"tokens_truncated,omitempty"`
}

// Answer is a request's results, all from one model.
type Answer struct {
	Model   string   `json:"model"`
	Results []Result `json:"results"`
}

// Service classifies statements with the current model.
type Service struct {
	cfg     Config
	metrics *Metrics

	model atomic.Pointer[Model]
	swap  sync.Mutex // orders SetModel calls

	queue  chan *item
	queued atomic.Int64 // texts queued, not yet in a batch
	work   chan []*item
	busy   atomic.Int64 // workers classifying a batch
	stop   context.CancelFunc
	done   sync.WaitGroup
}

// item is one text waiting for its batch.
type item struct {
	ctx  context.Context
	m    *Model
	ids  []int32
	pred trainer.Prediction
	err  error
	done *sync.WaitGroup
}

// New starts a service with no model (Classify answers ErrNotReady until
// SetModel). Close stops it.
func New(cfg Config, m *Metrics) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("serve config: %w", err)
	}
	if m == nil {
		m = NewMetrics()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, metrics: m, stop: cancel,
		queue: make(chan *item, cfg.QueueTexts), work: make(chan []*item, cfg.Workers)}
	s.done.Add(1 + cfg.Workers)
	go s.batch(ctx)
	for range cfg.Workers {
		go s.run()
	}
	return s, nil
}

// Close stops the batcher and workers and frees the current model. Callers
// must have stopped calling Classify.
func (s *Service) Close() {
	s.stop()
	s.done.Wait()
	if m := s.model.Swap(nil); m != nil {
		m.retire()
	}
}

// Config returns the service's limits.
func (s *Service) Config() Config { return s.cfg }

// Metrics returns the service's Prometheus metrics.
func (s *Service) Metrics() *Metrics { return s.metrics }

// Model returns the model answering now (nil before the first SetModel).
func (s *Service) Model() *Model { return s.model.Load() }

// SetModel makes m answer every request from now on. Requests already
// holding the previous model finish with it; it is freed after the last.
func (s *Service) SetModel(m *Model) {
	s.swap.Lock()
	defer s.swap.Unlock()
	if old := s.model.Swap(m); old != nil {
		old.retire()
	}
	s.metrics.swaps.Inc()
}

// Ready reports whether a model is loaded.
func (s *Service) Ready() bool { return s.model.Load() != nil }

// current pins the model answering now.
func (s *Service) current() (*Model, error) {
	for {
		m := s.model.Load()
		if m == nil {
			return nil, ErrNotReady
		}
		if m.acquire() {
			return m, nil
		}
		// Retired between Load and acquire: the next Load sees its successor.
	}
}

// Classify labels texts, all with one model. A text longer than
// MaxTextBytes is cut (Result.Truncated); invalid UTF-8, an empty list or
// more than MaxTexts texts is ErrInvalid naming the field.
func (s *Service) Classify(ctx context.Context, texts []string) (Answer, error) {
	if len(texts) == 0 {
		return Answer{}, fmt.Errorf("%w: texts: empty list, want 1..%d texts", ErrInvalid, s.cfg.MaxTexts)
	}
	if len(texts) > s.cfg.MaxTexts {
		return Answer{}, fmt.Errorf("%w: texts: %d texts, want at most %d", ErrInvalid, len(texts), s.cfg.MaxTexts)
	}
	for i, t := range texts {
		if !utf8.ValidString(t) {
			return Answer{}, fmt.Errorf("%w: texts[%d]: invalid UTF-8", ErrInvalid, i)
		}
	}
	m, err := s.current()
	if err != nil {
		return Answer{}, err
	}
	defer m.release()

	n := int64(len(texts))
	if s.queued.Add(n) > int64(s.cfg.QueueTexts) {
		s.queued.Add(-n)
		s.metrics.overloaded.Inc()
		return Answer{}, ErrOverloaded
	}
	results := make([]Result, len(texts))
	signals := make([]textSignals, len(texts))
	items := make([]*item, len(texts))
	var wg sync.WaitGroup
	wg.Add(len(texts))
	for i, t := range texts {
		if len(t) > s.cfg.MaxTextBytes {
			t, results[i].Truncated = cutUTF8(t, s.cfg.MaxTextBytes), true
		}
		ids, full := m.enc.Encode(t, m.MaxLen)
		results[i].TokensTruncated = full > len(ids)
		signals[i] = signalsOf(t, ids, full, m.enc.UNKID())
		items[i] = &item{ctx: ctx, m: m, ids: ids, done: &wg}
	}
	s.metrics.queue.Add(float64(n))
	for _, it := range items {
		s.queue <- it // never blocks: queued ≤ QueueTexts = cap(queue)
	}
	wg.Wait()

	ans := Answer{Model: m.Name, Results: results}
	for i, it := range items {
		if it.err != nil {
			return Answer{}, it.err
		}
		r := &results[i]
		r.Label, r.Confidence, r.Probabilities = it.pred.Label, it.pred.Confidence, it.pred.Probabilities
		r.ReviewReasons = s.cfg.Review.reasons(m, r.Label, r.Confidence, signals[i])
		r.NeedsReview = len(r.ReviewReasons) > 0
		s.metrics.observeReview(r.ReviewReasons)
	}
	return ans, nil
}

func signalsOf(text string, ids []int32, full int, unk int32) textSignals {
	s := textSignals{empty: strings.TrimSpace(text) == "", fullLen: full}
	if len(ids) > 2 {
		for _, id := range ids[1 : len(ids)-1] { // without [CLS] and [SEP]
			s.pieces++
			if id == unk {
				s.unk++
			}
		}
	}
	return s
}

// cutUTF8 cuts s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// batch gathers queued texts into batches: it waits for a first text, then
// up to MaxWait for more, up to MaxBatch; it groups them by model, sorts
// them by length and cuts a batch where padding would double its size.
// When a worker is idle and nothing else is queued, the first text goes at
// once: waiting could only add latency, since the worker would sit idle.
func (s *Service) batch(ctx context.Context) {
	defer s.done.Done()
	defer close(s.work)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *item
		select {
		case <-ctx.Done():
			return
		case first = <-s.queue:
		}
		got := []*item{first}
		wait := s.cfg.MaxWait
		if len(s.queue) == 0 && s.busy.Load() < int64(s.cfg.Workers) && len(s.work) == 0 {
			wait = 0
		}
		timer.Reset(wait)
	gather:
		for len(got) < s.cfg.MaxBatch && (wait > 0 || len(s.queue) > 0) {
			select {
			case it := <-s.queue:
				got = append(got, it)
			case <-timer.C:
				break gather
			case <-ctx.Done():
				break gather
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		s.queued.Add(-int64(len(got)))
		s.metrics.queue.Sub(float64(len(got)))
		for _, b := range splitBatches(got) {
			select {
			case s.work <- b:
			case <-ctx.Done():
				fail(b, ctx.Err())
			}
		}
	}
}

// splitBatches groups items by model and, sorted by length, cuts a new
// batch when a text is more than twice as long as the batch's first, so a
// few long texts do not pad many short ones.
func splitBatches(items []*item) [][]*item {
	sort.SliceStable(items, func(a, b int) bool {
		if items[a].m != items[b].m {
			return items[a].m.Name < items[b].m.Name
		}
		return len(items[a].ids) < len(items[b].ids)
	})
	var out [][]*item
	start := 0
	for i := 1; i <= len(items); i++ {
		if i == len(items) || items[i].m != items[start].m ||
			(i-start >= 4 && len(items[i].ids) > 2*len(items[start].ids)) {
			out = append(out, items[start:i])
			start = i
		}
	}
	return out
}

func fail(b []*item, err error) {
	for _, it := range b {
		it.err = err
		it.done.Done()
	}
}

// run is one worker: it classifies batches until the batcher stops.
func (s *Service) run() {
	defer s.done.Done()
	for b := range s.work {
		// Texts whose request has given up are dropped from the batch.
		live := b[:0:0]
		for _, it := range b {
			if err := it.ctx.Err(); err != nil {
				it.err = err
				it.done.Done()
				continue
			}
			live = append(live, it)
		}
		if len(live) == 0 {
			continue
		}
		ids := make([][]int32, len(live))
		for i, it := range live {
			ids[i] = it.ids
		}
		start := time.Now()
		s.busy.Add(1)
		preds, err := live[0].m.cls.ClassifyTokens(context.Background(), ids)
		s.busy.Add(-1)
		s.metrics.observeBatch(len(live), time.Since(start))
		if err == nil && len(preds) != len(live) {
			err = fmt.Errorf("model answered %d of %d texts", len(preds), len(live))
		}
		for i, it := range live {
			if err != nil {
				it.err = fmt.Errorf("classifying: %w", err)
			} else {
				it.pred = preds[i]
			}
			it.done.Done()
		}
	}
}
