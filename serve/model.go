package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// Classifier runs one batch of tokenized statements through a model.
type Classifier interface {
	ClassifyTokens(ctx context.Context, ids [][]int32) ([]trainer.Prediction, error)
}

// Encoder tokenizes statements (wordpiece.Tokenizer).
type Encoder interface {
	Encode(text string, maxLen int) ([]int32, int)
	UNKID() int32
}

// Model is one loaded adapter with what serving it needs. A Service holds
// one at a time; requests pin it (Acquire/Release) so a swap waits for the
// requests already answered by it before the model's memory is freed.
type Model struct {
	// Name identifies the adapter in answers: "<run>@<step>" or its directory.
	Name string
	// Labels are the class names, in class-index order.
	Labels []string
	// MaxLen is the model's max sequence length, [CLS] and [SEP] included.
	MaxLen int
	// ReviewBelow is the validation report's review threshold (0 when the
	// adapter predates it).
	ReviewBelow float64
	// RandomBase is true for a demo adapter on a random-init base.
	RandomBase bool

	cls   Classifier
	enc   Encoder
	close func()

	mu      sync.Mutex
	refs    int
	retired bool
}

// NewModel wraps a classifier and its tokenizer; close (may be nil) frees
// the model once it is retired and no request holds it.
func NewModel(name string, labels []string, maxLen int, cls Classifier, enc Encoder, close func()) *Model {
	return &Model{Name: name, Labels: labels, MaxLen: maxLen, cls: cls, enc: enc, close: close}
}

// acquire pins m for one request; false when m is already retired.
func (m *Model) acquire() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.retired {
		return false
	}
	m.refs++
	return true
}

func (m *Model) release() {
	m.mu.Lock()
	m.refs--
	free := m.retired && m.refs == 0
	m.mu.Unlock()
	if free && m.close != nil {
		m.close()
	}
}

// retire frees m once the last request holding it is answered.
func (m *Model) retire() {
	m.mu.Lock()
	m.retired = true
	free := m.refs == 0
	m.mu.Unlock()
	if free && m.close != nil {
		m.close()
	}
}

// adapterClassifier runs batches through a libtorch model.
type adapterClassifier struct {
	m   *model.Model
	man trainer.Manifest
	pad int32
}

func (a *adapterClassifier) ClassifyTokens(ctx context.Context, ids [][]int32) ([]trainer.Prediction, error) {
	return trainer.PredictTokens(ctx, a.m, a.pad, a.man, ids)
}

// OpenAdapter loads an adapter directory (`loraft adapter pull`'s output)
// on device; weights overrides the base weights file it recorded. name
// identifies it in answers (the directory when empty).
func OpenAdapter(dir, weights, name string, device gotch.Device) (*Model, error) {
	if _, err := libtorch.SetThreads(); err != nil {
		return nil, err
	}
	m, man, err := trainer.OpenAdapter(dir, weights, device)
	if err != nil {
		return nil, fmt.Errorf("opening adapter %s: %w", dir, err)
	}
	tok, err := wordpiece.Load(filepath.Join(dir, trainer.VocabFile))
	if err != nil {
		m.Drop()
		return nil, fmt.Errorf("opening adapter %s: %w", dir, err)
	}
	if name == "" {
		name = dir
	}
	out := NewModel(name, man.Labels, man.Tokenizer.MaxLen, &adapterClassifier{m: m, man: man, pad: tok.PadID()}, tok, m.Drop)
	out.RandomBase = man.Base.Weights == ""
	if out.ReviewBelow, err = reviewBelowOf(dir); err != nil {
		slog.Warn("adapter has no review threshold; using the fallback", "adapter", dir, "fallback", FallbackReviewBelow, "err", err)
	}
	return out, nil
}

// FallbackReviewBelow is the review threshold for an adapter whose metrics
// do not record one (trained before loraft recorded it).
const FallbackReviewBelow = 0.5

// reviewBelowOf reads the validation report's review threshold from the
// adapter's metrics.json.
func reviewBelowOf(dir string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(dir, trainer.MetricsFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("no %s", trainer.MetricsFile)
		}
		return 0, err
	}
	var mf struct {
		Val metrics.Report `json:"validation"`
	}
	if err := json.Unmarshal(b, &mf); err != nil {
		return 0, fmt.Errorf("reading %s: %w", filepath.Join(dir, trainer.MetricsFile), err)
	}
	if mf.Val.ReviewTarget == 0 {
		return 0, fmt.Errorf("%s has no validation review_below", trainer.MetricsFile)
	}
	return mf.Val.ReviewBelow, nil
}
