package shard

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

// spaceEncoder is a deterministic stand-in tokenizer for the cache and batch
// tests (the real WordPiece tokenizer has its own tests in shard/wordpiece):
// one id per space-separated word, 10 + word length.
type spaceEncoder struct{ calls atomic.Int64 }

func (e *spaceEncoder) Encode(text string, maxLen int) ([]int32, int) {
	e.calls.Add(1)
	ids := []int32{101}
	for _, w := range strings.Fields(text) {
		ids = append(ids, int32(10+len(w)))
	}
	ids = append(ids, 102)
	full := len(ids)
	if full > maxLen {
		ids = append(ids[:maxLen-1], 102)
	}
	return ids, full
}

func (e *spaceEncoder) VocabSHA256() string { return "test-vocab" }

func tokensFixture(t *testing.T) *Dataset {
	t.Helper()
	ds, err := Read(strings.NewReader(",statement,status\n0,a bb ccc,Normal\n1,one,Stress\n2,w w w w w w w w,Anxiety\n"), "tok.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestLoadOrTokenizeCache(t *testing.T) {
	ctx := context.Background()
	ds := tokensFixture(t)
	dir := t.TempDir()
	enc := &spaceEncoder{}

	first, cached, err := LoadOrTokenize(ctx, dir, ds, enc, 6, nil)
	if err != nil || cached {
		t.Fatalf("first load: cached=%v err=%v, want a fresh tokenization", cached, err)
	}
	want := [][]int32{{101, 11, 12, 13, 102}, {101, 13, 102}, {101, 11, 11, 11, 11, 102}}
	if !reflect.DeepEqual(first.IDs, want) {
		t.Fatalf("ids = %v, want %v", first.IDs, want)
	}
	if first.Truncated() != 1 || first.FullLen[2] != 10 {
		t.Fatalf("truncated = %d (full %v), want 1 row of full length 10", first.Truncated(), first.FullLen)
	}

	calls := enc.calls.Load()
	second, cached, err := LoadOrTokenize(ctx, dir, ds, enc, 6, nil)
	if err != nil || !cached {
		t.Fatalf("second load: cached=%v err=%v, want the cache", cached, err)
	}
	if enc.calls.Load() != calls {
		t.Fatalf("cached load called the encoder %d times", enc.calls.Load()-calls)
	}
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("cached tokens differ: %+v vs %+v", second, first)
	}

	// Another max length is another cache entry.
	if _, cached, _ := LoadOrTokenize(ctx, dir, ds, enc, 8, nil); cached {
		t.Fatal("max length 8 used the max length 6 cache")
	}

	// Corrupt the file: the next load notices, rebuilds it, and the one after uses it.
	path := filepath.Join(dir, first.Key+".tokens")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[20] ^= 0xFF
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readTokens(path, first.Key, 6, 3); err == nil {
		t.Fatal("corrupt cache file read without error")
	}
	third, cached, err := LoadOrTokenize(ctx, dir, ds, enc, 6, nil)
	if err != nil || cached || !reflect.DeepEqual(third.IDs, want) {
		t.Fatalf("after corruption: cached=%v err=%v ids=%v", cached, err, third.IDs)
	}
	if _, cached, _ := LoadOrTokenize(ctx, dir, ds, enc, 6, nil); !cached {
		t.Fatal("rebuilt cache not used")
	}
	// Truncated file.
	if err := os.WriteFile(path, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readTokens(path, first.Key, 6, 3); err == nil {
		t.Fatal("truncated cache file read without error")
	}

	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tokens-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestTokenizeProgressAndCancel(t *testing.T) {
	ds := syntheticDataset(t, [NumLabels]int{300, 10, 10, 10, 10, 10, 10})
	last := 0
	tok, err := Tokenize(context.Background(), ds, &spaceEncoder{}, 16, func(done, total int) {
		if done < last || total != len(ds.Rows) {
			t.Errorf("progress went %d → %d of %d", last, done, total)
		}
		last = done
	})
	if err != nil || last != len(ds.Rows) || len(tok.IDs) != len(ds.Rows) {
		t.Fatalf("err=%v last progress=%d rows=%d", err, last, len(ds.Rows))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Tokenize(ctx, ds, &spaceEncoder{}, 16, nil); err == nil {
		t.Fatal("Tokenize ignored a cancelled context")
	}
	if _, err := Tokenize(context.Background(), ds, &spaceEncoder{}, 1, nil); err == nil {
		t.Fatal("max length 1 accepted")
	}
}

func TestBatchPadding(t *testing.T) {
	ds := tokensFixture(t)
	tok, err := Tokenize(context.Background(), ds, &spaceEncoder{}, 128, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := tok.Batch(ds, []int{1, 0}, 0)
	if b.Size != 2 || b.Len != 5 {
		t.Fatalf("batch %dx%d, want 2x5 (padded to the longest row)", b.Size, b.Len)
	}
	if want := []int64{101, 13, 102, 0, 0, 101, 11, 12, 13, 102}; !reflect.DeepEqual(b.IDs, want) {
		t.Fatalf("ids = %v, want %v", b.IDs, want)
	}
	if want := []int64{1, 1, 1, 0, 0, 1, 1, 1, 1, 1}; !reflect.DeepEqual(b.Mask, want) {
		t.Fatalf("mask = %v, want %v", b.Mask, want)
	}
	if want := []int64{int64(Stress), int64(Normal)}; !reflect.DeepEqual(b.Labels, want) {
		t.Fatalf("labels = %v, want %v", b.Labels, want)
	}
}
