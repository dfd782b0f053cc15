package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
)

// ShardConfig tunes the dataset benchmark.
type ShardConfig struct {
	// Data is the dataset CSV.
	Data string
	// MaxLen is the tokenizer's sequence length (0: shard.DefaultMaxLen).
	MaxLen int
	// Repeat: the best of this many runs counts (at least 1).
	Repeat int
}

// Shard times reading and splitting a dataset, tokenizing it with the cache
// off, and loading its cached tokens.
func (r *Runner) Shard(ctx context.Context, cfg ShardConfig) (Report, error) {
	if cfg.MaxLen == 0 {
		cfg.MaxLen = shard.DefaultMaxLen
	}
	tok, err := wordpiece.BertBaseUncased()
	if err != nil {
		return nil, err
	}
	best := func(f func() error) (float64, error) {
		b := math.Inf(1)
		for range max(1, cfg.Repeat) {
			start := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			b = min(b, time.Since(start).Seconds())
		}
		return b, nil
	}
	var ds *shard.Dataset
	readSplit, err := best(func() error {
		var err error
		if ds, err = shard.ReadFile(cfg.Data, shard.Options{}); err != nil {
			return err
		}
		_, err = shard.NewSplit(ds, 42, shard.DefaultRatios)
		return err
	})
	if err != nil {
		return nil, err
	}
	var toks *shard.Tokens
	tokenize, err := best(func() error {
		var err error
		toks, err = shard.Tokenize(ctx, ds, tok, cfg.MaxLen, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	cacheDir, err := os.MkdirTemp("", "loraft-bench-tokens-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(cacheDir)
	if _, _, err := shard.LoadOrTokenize(ctx, cacheDir, ds, tok, cfg.MaxLen, nil); err != nil {
		return nil, err
	}
	cachedLoad, err := best(func() error {
		_, cached, err := shard.LoadOrTokenize(ctx, cacheDir, ds, tok, cfg.MaxLen, nil)
		if err == nil && !cached {
			err = fmt.Errorf("token cache in %s was not used", cacheDir)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	tokens := 0
	for _, l := range toks.FullLen {
		tokens += int(l)
	}
	return Report{
		"date":          time.Now().UTC().Format(time.RFC3339),
		"loraft":        r.Version,
		"file":          filepath.Base(cfg.Data),
		"rows":          len(ds.Rows),
		"threads":       runtime.GOMAXPROCS(0),
		"read_split_s":  readSplit,
		"tokenize_s":    tokenize,
		"rows_per_s":    float64(len(ds.Rows)) / tokenize,
		"tokens_per_s":  float64(tokens) / tokenize,
		"tokens":        tokens,
		"cached_load_s": cachedLoad,
		"cache_speedup": tokenize / cachedLoad,
		"note":          "best of --repeat runs; tokenize_s is with the cache off, on all threads; tokens count every WordPiece before truncation",
	}, nil
}
