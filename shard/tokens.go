package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/loraft/loraft/internal/atomicfile"
)

// Encoder turns a statement into BERT input ids ([CLS] … [SEP]) of at most
// maxLen tokens; fullLen is the length before truncation. wordpiece.Tokenizer
// implements it.
type Encoder interface {
	Encode(text string, maxLen int) (ids []int32, fullLen int)
	VocabSHA256() string
}

// DefaultMaxLen is the default maximum sequence length in tokens.
const DefaultMaxLen = 128

// Tokens are the token ids of every row of a dataset, in row order.
type Tokens struct {
	// Key identifies (dataset, reader policy, vocab, max length); it names the cache file.
	Key    string
	MaxLen int
	// IDs[i] are row i's ids, [CLS] … [SEP], at most MaxLen long.
	IDs [][]int32
	// FullLen[i] is row i's length before truncation.
	FullLen []int32
}

// Truncated counts rows longer than MaxLen.
func (t *Tokens) Truncated() int {
	n := 0
	for _, l := range t.FullLen {
		if int(l) > t.MaxLen {
			n++
		}
	}
	return n
}

// tokensVersion changes whenever the cache format or the tokenizer's output
// could change; old cache files then stop matching.
const tokensVersion = "loraft-tokens-v1"

// TokensKey names the tokens of ds under enc and maxLen.
func TokensKey(ds *Dataset, enc Encoder, maxLen int) string {
	vocab := enc.VocabSHA256()
	if lc, ok := enc.(interface{ LowerCase() bool }); ok && !lc.LowerCase() {
		vocab += "|cased" // a cased tokenizer gives other ids from the same vocabulary
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%d|%s|%d", tokensVersion, ds.SHA256, ds.Report.Kept, vocab, maxLen))
	return hex.EncodeToString(sum[:12])
}

// Tokenize encodes every row of ds on all CPUs. progress, when not nil, is
// called from one goroutine at a time with the rows done so far.
func Tokenize(ctx context.Context, ds *Dataset, enc Encoder, maxLen int, progress func(done, total int)) (*Tokens, error) {
	if maxLen < 2 {
		return nil, fmt.Errorf("tokenize %s: max length %d leaves no room for [CLS] and [SEP]", ds.Name, maxLen)
	}
	n := len(ds.Rows)
	t := &Tokens{Key: TokensKey(ds, enc, maxLen), MaxLen: maxLen, IDs: make([][]int32, n), FullLen: make([]int32, n)}
	var next, done atomic.Int64
	var mu sync.Mutex // serialises progress calls
	var wg sync.WaitGroup
	const chunk = 64
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				lo := int(next.Add(chunk)) - chunk
				if lo >= n {
					return
				}
				hi := min(lo+chunk, n)
				for i := lo; i < hi; i++ {
					ids, full := enc.Encode(ds.Rows[i].Statement, maxLen)
					t.IDs[i], t.FullLen[i] = ids, int32(full)
				}
				d := done.Add(int64(hi - lo))
				if progress != nil {
					mu.Lock()
					progress(int(d), n)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenize %s: %w", ds.Name, err)
	}
	return t, nil
}

// ErrCorruptCache reports a token cache file that fails its checksum or layout.
var ErrCorruptCache = errors.New("corrupt token cache")

// LoadOrTokenize returns the tokens of ds from cacheDir when a valid cache
// file exists, and otherwise tokenizes and writes one (atomically: a crash
// never leaves a half-written file under the final name). A corrupt cache
// file is reported in the log and rebuilt. cached says whether the cache was
// used. An empty cacheDir disables the cache.
func LoadOrTokenize(ctx context.Context, cacheDir string, ds *Dataset, enc Encoder, maxLen int, progress func(done, total int)) (t *Tokens, cached bool, err error) {
	if cacheDir == "" {
		t, err = Tokenize(ctx, ds, enc, maxLen, progress)
		return t, false, err
	}
	key := TokensKey(ds, enc, maxLen)
	path := filepath.Join(cacheDir, key+".tokens")
	t, err = readTokens(path, key, maxLen, len(ds.Rows))
	switch {
	case err == nil:
		return t, true, nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		slog.Warn("token cache unusable; tokenizing again", "file", path, "err", err)
	}
	t, err = Tokenize(ctx, ds, enc, maxLen, progress)
	if err != nil {
		return nil, false, err
	}
	if err := writeTokens(path, t); err != nil {
		// The tokens are good; a cache that cannot be written only costs time later.
		slog.Warn("token cache not written", "file", path, "err", err)
	}
	return t, false, nil
}

var tokensMagic = []byte("LRFTTOK1")

// Cache file: magic, then uint32 LE max length and row count, then per row
// uint32 full length, uint32 n, n × uint32 ids; then the sha256 of all that.
func writeTokens(path string, t *Tokens) error {
	var buf bytes.Buffer
	buf.Write(tokensMagic)
	le := binary.LittleEndian
	buf.Write(le.AppendUint32(nil, uint32(t.MaxLen)))
	buf.Write(le.AppendUint32(nil, uint32(len(t.IDs))))
	var b []byte
	for i, ids := range t.IDs {
		b = le.AppendUint32(b[:0], uint32(t.FullLen[i]))
		b = le.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = le.AppendUint32(b, uint32(id))
		}
		buf.Write(b)
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	// Owner-only: the ids spell out statements about people's mental health.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, buf.Bytes(), 0o600)
}

// tokensFileMax is the largest a valid cache file of rows rows of at most
// maxLen ids can be: the header, per row two uint32 and maxLen ids, and the
// checksum. A larger file is refused before it is read.
func tokensFileMax(maxLen, rows int) int64 {
	return int64(len(tokensMagic)) + 8 + int64(rows)*(8+4*int64(maxLen)) + sha256.Size
}

// readTokens reads the cache file at path, which must hold rows rows of at
// most maxLen ids under key. Its size is checked before it is read, so a
// planted or damaged file costs no more than a valid one.
func readTokens(path, key string, maxLen, rows int) (*Tokens, error) {
	if maxLen < 0 || rows < 0 {
		return nil, fmt.Errorf("%s: %w: max length %d and row count %d must not be negative", path, ErrCorruptCache, maxLen, rows)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if limit := tokensFileMax(maxLen, rows); !info.Mode().IsRegular() || info.Size() > limit {
		return nil, fmt.Errorf("%s: %w: %d bytes (not a regular file, or more than the %d that %d rows of at most %d ids take)",
			path, ErrCorruptCache, info.Size(), limit, rows, maxLen)
	}
	data := make([]byte, info.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("reading token cache %s: %w", path, err)
	}
	return decodeTokens(path, data, key, maxLen, rows)
}

// decodeTokens parses a cache file's bytes (see writeTokens); path only
// names it in errors. Anything but a file writeTokens wrote for the same
// maxLen and rows is an error wrapping ErrCorruptCache, never a panic.
func decodeTokens(path string, data []byte, key string, maxLen, rows int) (*Tokens, error) {
	corrupt := func(what string) error { return fmt.Errorf("%s: %w: %s", path, ErrCorruptCache, what) }
	if maxLen < 0 || rows < 0 {
		return nil, corrupt("negative max length or row count")
	}
	if len(data) < len(tokensMagic)+8+sha256.Size || !bytes.Equal(data[:len(tokensMagic)], tokensMagic) {
		return nil, corrupt("bad header")
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, corrupt("checksum mismatch")
	}
	le := binary.LittleEndian
	p := body[len(tokensMagic):]
	if int(le.Uint32(p)) != maxLen || int(le.Uint32(p[4:])) != rows {
		return nil, corrupt("max length or row count differs from its name")
	}
	p = p[8:]
	if rows > len(p)/8 { // every row takes at least 8 bytes; check before allocating
		return nil, corrupt("truncated")
	}
	t := &Tokens{Key: key, MaxLen: maxLen, IDs: make([][]int32, rows), FullLen: make([]int32, rows)}
	for i := range rows {
		if len(p) < 8 {
			return nil, corrupt("truncated")
		}
		full, n := le.Uint32(p), int(le.Uint32(p[4:]))
		p = p[8:]
		switch {
		case n > maxLen:
			return nil, corrupt(fmt.Sprintf("row %d: %d ids, more than the max length %d", i, n, maxLen))
		case len(p) < 4*n:
			return nil, corrupt(fmt.Sprintf("row %d: truncated", i))
		case full > math.MaxInt32 || int(full) < n:
			return nil, corrupt(fmt.Sprintf("row %d: full length %d is below its %d ids", i, full, n))
		}
		t.FullLen[i] = int32(full)
		ids := make([]int32, n)
		for j := range ids {
			id := le.Uint32(p[4*j:])
			if id > math.MaxInt32 {
				// A negative id would index the embedding out of range.
				return nil, corrupt(fmt.Sprintf("row %d: id %d is out of range", i, id))
			}
			ids[j] = int32(id)
		}
		t.IDs[i] = ids
		p = p[4*n:]
	}
	if len(p) != 0 {
		return nil, corrupt("trailing bytes")
	}
	return t, nil
}

// Batch is a padded model input: Size rows of Len tokens, row-major.
type Batch struct {
	// Rows are the dataset row indices in batch order.
	Rows []int
	Size int
	Len  int
	// IDs are token ids, 0 ([PAD]) past each row's end; Mask is 1 on real tokens.
	IDs, Mask []int64
	// Labels are the rows' class indices.
	Labels []int64
}

// Batch pads rows to the longest row among them. padID is the tokenizer's [PAD] id.
func (t *Tokens) Batch(ds *Dataset, rows []int, padID int32) Batch {
	L := 0
	for _, r := range rows {
		L = max(L, len(t.IDs[r]))
	}
	b := Batch{Rows: rows, Size: len(rows), Len: L,
		IDs: make([]int64, len(rows)*L), Mask: make([]int64, len(rows)*L), Labels: make([]int64, len(rows))}
	for i, r := range rows {
		row := b.IDs[i*L : (i+1)*L]
		for j := range row {
			row[j] = int64(padID)
		}
		for j, id := range t.IDs[r] {
			row[j] = int64(id)
			b.Mask[i*L+j] = 1
		}
		b.Labels[i] = int64(ds.Rows[r].Label)
	}
	return b
}
