package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is a flat object store with slash-separated keys (S3 semantics): an
// object becomes visible only once completely written; there are no partial
// objects and no directories. A key names one object; a prefix of keys
// ("runs/t1/") is not an object and cannot be read.
//
// Keys are checked by ValidateKey in every method; a bad key fails with an
// error that wraps ErrBadKey and names the key. Implementations are safe for
// concurrent use by several goroutines; concurrent Puts of one key leave one
// of the written objects, whole.
type Store interface {
	// Put stores the size bytes that r yields under key, replacing any
	// object there. r must yield exactly size bytes: a reader that ends
	// early, yields more, or fails, and a cancelled ctx, fail the Put and
	// leave the previous object (or none) visible, never a partial one.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens the object at key for reading; the caller closes it. A
	// missing key is an error that wraps ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes the object at key; a missing key is an error that
	// wraps ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns every object whose key starts with prefix (a plain
	// string prefix, recursive: "runs/a/" lists "runs/a/x/y" but not
	// "runs/ab/x"), sorted by key. The empty prefix lists the whole store.
	// A prefix nothing matches gives an empty list, not an error.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes the object at key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String describes the store for humans and logs, without secrets,
	// e.g. "dir /var/loraft" or "s3://bucket/prefix at http://127.0.0.1:9000".
	String() string
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	// Key is the object's key, relative to the store (an S3 store's
	// prefix is not part of it).
	Key string
	// Size is the object's length in bytes.
	Size int64
	// Modified is when the object was last written, as the store reports it.
	Modified time.Time
}

// Sentinel errors of the Store implementations, compared with errors.Is.
var (
	// ErrNotFound reports a Get or Stat of a key that holds no object.
	ErrNotFound = errors.New("object not found")
	// ErrBadKey reports a key (or List prefix) that ValidateKey rejects.
	ErrBadKey = errors.New("bad object key")
)

// Key limits shared by every Store, the tighter of S3's and a local
// filesystem's.
const (
	maxKeyBytes        = 1024 // S3's limit, in bytes
	maxKeySegmentBytes = 255  // NAME_MAX of common filesystems, in bytes
)

// storeTmpPrefix starts the names of DirStore's temporary files. List never
// returns them, so no key may have a segment starting with it.
const storeTmpPrefix = ".loraft-tmp-"

// ValidateKey reports whether key is a valid object key, with an error that
// wraps ErrBadKey and names the key. A valid key is non-empty valid UTF-8 of
// at most 1024 bytes, made of '/'-separated segments that are non-empty, at
// most 255 bytes, not "." or "..", and do not start with ".loraft-tmp-"
// (reserved for temporary files); it holds no backslash and no control
// characters, and so neither starts nor ends with '/'.
func ValidateKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrBadKey, key, reason)
	}
	return nil
}

// validateListPrefix checks a List prefix: empty, or a string that some valid
// key could start with.
func validateListPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A prefix ending in '/' or inside a segment is fine; completing it
	// with one more character must give a valid key.
	if reason := keyProblem(prefix + "x"); reason != "" {
		return fmt.Errorf("%w: list prefix %q: %s", ErrBadKey, prefix, reason)
	}
	return nil
}

// keyProblem returns why key is not valid, or "" when it is.
func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > maxKeyBytes:
		return fmt.Sprintf("longer than %d bytes", maxKeyBytes)
	case !utf8.ValidString(key):
		return "not valid UTF-8"
	case strings.HasPrefix(key, "/"):
		return "starts with '/'"
	case strings.Contains(key, `\`):
		return "contains a backslash"
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return "contains a control character"
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return "has an empty segment"
		case seg == "." || seg == "..":
			return fmt.Sprintf("has a %q segment", seg)
		case len(seg) > maxKeySegmentBytes:
			return fmt.Sprintf("has a segment longer than %d bytes", maxKeySegmentBytes)
		case strings.HasPrefix(seg, storeTmpPrefix):
			return fmt.Sprintf("has a segment starting with the reserved %q", storeTmpPrefix)
		}
	}
	return ""
}

// PutBytes stores b under key in s.
func PutBytes(ctx context.Context, s Store, key string, b []byte) error {
	return s.Put(ctx, key, bytes.NewReader(b), int64(len(b)))
}

// GetBytes reads the whole object at key from s.
func GetBytes(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("reading %q from %s: %w", key, s, err)
	}
	return b, nil
}

// exactReader passes on exactly size bytes of r and fails when r yields
// fewer or more, or when ctx ends. It withholds the last bytes until it has
// seen r's end, so a consumer that streams into an upload whose length is
// declared up front (an HTTP PUT with Content-Length) never receives the
// full length from a reader that is about to fail.
type exactReader struct {
	ctx  context.Context
	r    io.Reader
	size int64 // the declared length
	left int64 // bytes still to pass on
	done bool  // r's end has been checked
}

func newExactReader(ctx context.Context, r io.Reader, size int64) *exactReader {
	return &exactReader{ctx: ctx, r: r, size: size, left: size}
}

func (e *exactReader) Read(p []byte) (int, error) {
	if err := e.ctx.Err(); err != nil {
		return 0, err
	}
	if e.left == 0 {
		if !e.done {
			if err := e.checkEnd(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		return n, fmt.Errorf("reader ended after %d of %d bytes: %w", e.size-e.left, e.size, io.ErrUnexpectedEOF)
	case err != nil && err != io.EOF:
		// Withhold bytes read with an error: they may be the last ones.
		return 0, err
	case e.left == 0 && err == io.EOF:
		e.done = true
		return n, nil
	case e.left == 0:
		// Hold these last bytes back until r has shown it ends here.
		if err := e.checkEnd(); err != nil {
			return 0, err
		}
		return n, nil
	}
	return n, nil
}

// checkEnd reads one more byte from r, expecting io.EOF.
func (e *exactReader) checkEnd() error {
	e.done = true
	var one [1]byte
	for range 100 { // a reader may return 0, nil a few times
		n, err := e.r.Read(one[:])
		switch {
		case n > 0:
			return fmt.Errorf("reader yields more than the declared %d bytes", e.size)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return fmt.Errorf("reader returned no data and no error after %d bytes: %w", e.size, io.ErrNoProgress)
}

// DefaultCallTimeout bounds each store call (a Put, Get, Stat, List or
// Delete) when the store's CallTimeout is zero, so that a paused or
// black-holed store becomes an error within seconds instead of a hang
// (DESIGN invariant 7). A checkpoint's objects take well under a second on
// a healthy store; 10 s leaves room for a loaded one, and a failed call is
// retried.
const DefaultCallTimeout = 10 * time.Second

// putThroughput is the slowest upload rate a Put is allowed before its
// deadline: a Put of size bytes gets CallTimeout plus size/putThroughput.
const putThroughput = 1 << 20 // bytes per second

// callTimeout returns d, or DefaultCallTimeout when d is not positive.
func callTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultCallTimeout
	}
	return d
}

// putTimeout is the deadline of a Put of size bytes with per-call bound d.
func putTimeout(d time.Duration, size int64) time.Duration {
	return callTimeout(d) + time.Duration(size/putThroughput)*time.Second
}

// logFailure logs a failed store call at WARN with the operation, the key
// (or List prefix) and the store's description, which names the endpoint
// but never credentials. A missing object and a rejected key are the
// caller's business, not the store's health, and are not logged.
func logFailure(lg *slog.Logger, store Store, op, key string, start time.Time, err error) {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadKey) {
		return
	}
	if lg == nil {
		lg = slog.Default()
	}
	lg.Warn("object store call failed", "op", op, "key", key, "store", store.String(),
		"elapsed", time.Since(start).Round(time.Millisecond), "err", err)
}

// stallReader is a Get's body with an idle deadline: when no Read returns
// data for timeout, cancel ends the request (and the next Read fails).
// Close stops the timer and cancels.
type stallReader struct {
	io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	cancel  context.CancelFunc
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		r.timer.Reset(r.timeout)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.timer.Stop()
	err := r.ReadCloser.Close()
	r.cancel()
	return err
}
