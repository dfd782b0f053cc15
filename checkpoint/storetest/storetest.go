// Package storetest is the conformance suite for checkpoint.Store
// implementations: every Store runs it from its own tests, so a DirStore and
// an S3Store behave alike wherever the checkpoint format relies on them.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
)

// opTimeout bounds each subtest's store calls; a store that hangs fails
// instead of stalling the test binary.
const opTimeout = 2 * time.Minute

// Run runs the conformance suite as subtests of t. newStore returns an
// empty store for one subtest; it is called once per subtest, which owns
// the store (clean-up belongs in t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) checkpoint.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s checkpoint.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"Stat", testStat},
		{"Missing", testMissing},
		{"PrefixIsNotAnObject", testPrefixIsNotAnObject},
		{"List", testList},
		{"Delete", testDelete},
		{"BadKeys", testBadKeys},
		{"FailingReader", testFailingReader},
		{"SizeMismatch", testSizeMismatch},
		{"Concurrent", testConcurrent},
		{"Cancel", testCancel},
		{"String", testString},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			tc.fn(t, ctx, s)
		})
	}
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// onlyReader hides every method of a reader but Read, so stores see a plain
// stream they cannot seek or measure.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// failingReader yields n bytes of data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func mustPut(t *testing.T, ctx context.Context, s checkpoint.Store, key string, b []byte) {
	t.Helper()
	if err := checkpoint.PutBytes(ctx, s, key, b); err != nil {
		t.Fatalf("PutBytes(%q, %d bytes): %v", key, len(b), err)
	}
}

func mustGet(t *testing.T, ctx context.Context, s checkpoint.Store, key string, want []byte) {
	t.Helper()
	got, err := checkpoint.GetBytes(ctx, s, key)
	if err != nil {
		t.Fatalf("GetBytes(%q): %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GetBytes(%q) = %d bytes, want the %d bytes written", key, len(got), len(want))
	}
}

// mustBeMissing checks that key has no object: Get and Stat fail with
// ErrNotFound and List of the whole store does not show it.
func mustBeMissing(t *testing.T, ctx context.Context, s checkpoint.Store, key string) {
	t.Helper()
	if rc, err := s.Get(ctx, key); !errors.Is(err, checkpoint.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Fatalf("Get(%q) = %v, want ErrNotFound", key, err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Stat(%q) = %v, want ErrNotFound", key, err)
	}
	for _, o := range mustList(t, ctx, s, "") {
		if o.Key == key {
			t.Fatalf("List shows %q, which should not exist", key)
		}
	}
}

func mustList(t *testing.T, ctx context.Context, s checkpoint.Store, prefix string) []checkpoint.ObjectInfo {
	t.Helper()
	objs, err := s.List(ctx, prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return objs
}

func keys(objs []checkpoint.ObjectInfo) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func testRoundTrip(t *testing.T, ctx context.Context, s checkpoint.Store) {
	big := randomBytes(t, 5<<20)
	// Past S3 clients' 16 MiB part size, so an S3Store uploads in parts.
	huge := randomBytes(t, 17<<20+5)
	for _, tc := range []struct {
		name     string
		key      string
		data     []byte
		streamed bool // through a reader that cannot seek
	}{
		{"empty", "empty", nil, false},
		{"one-byte", "one", []byte{0x42}, false},
		{"5MB-random", "runs/t1/ckpt/10/adapter.safetensors", big, false},
		{"5MB-random-streamed", "runs/t1/ckpt/20/adapter.safetensors", big, true},
		{"empty-streamed", "runs/t1/empty", nil, true},
		{"17MB-random", "datasets/huge.csv", huge, false},
		{"17MB-random-streamed", "datasets/huge-streamed.csv", huge, true},
		{"deep-key", "a/b/c/d/e/f/g/h", []byte("deep"), false},
		{"special-characters", "runs/ü ber/x+y=z&w%20(1).json", []byte(`{"ok":true}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.data)
			if tc.streamed {
				r = onlyReader{r}
			}
			if err := s.Put(ctx, tc.key, r, int64(len(tc.data))); err != nil {
				t.Fatalf("Put(%q, %d bytes): %v", tc.key, len(tc.data), err)
			}
			mustGet(t, ctx, s, tc.key, tc.data)
			info, err := s.Stat(ctx, tc.key)
			if err != nil {
				t.Fatalf("Stat(%q): %v", tc.key, err)
			}
			if info.Key != tc.key || info.Size != int64(len(tc.data)) {
				t.Fatalf("Stat(%q) = %+v, want key %q and size %d", tc.key, info, tc.key, len(tc.data))
			}
			objs := mustList(t, ctx, s, tc.key)
			if len(objs) != 1 || objs[0].Key != tc.key || objs[0].Size != int64(len(tc.data)) {
				t.Fatalf("List(%q) = %+v, want just the object, %d bytes", tc.key, objs, len(tc.data))
			}
		})
	}
}

func testOverwrite(t *testing.T, ctx context.Context, s checkpoint.Store) {
	const key = "runs/t1/manifest.json"
	first := randomBytes(t, 100_000)
	second := []byte("shorter replacement")
	mustPut(t, ctx, s, key, first)
	mustPut(t, ctx, s, key, second)
	mustGet(t, ctx, s, key, second)
	info, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != int64(len(second)) {
		t.Fatalf("Stat size after overwrite = %d, want %d", info.Size, len(second))
	}
	if got := keys(mustList(t, ctx, s, "")); !slices.Equal(got, []string{key}) {
		t.Fatalf("List after overwrite = %q, want just %q", got, key)
	}
}

func testStat(t *testing.T, ctx context.Context, s checkpoint.Store) {
	before := time.Now()
	for _, size := range []int{0, 1, 4096, 1 << 20} {
		key := "stat/" + strconv.Itoa(size)
		mustPut(t, ctx, s, key, randomBytes(t, size))
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if info.Key != key || info.Size != int64(size) {
			t.Fatalf("Stat(%q) = %+v, want size %d", key, info, size)
		}
		// Clocks of a local server agree within seconds; S3 stores
		// whole seconds.
		if d := info.Modified.Sub(before); d < -time.Minute || d > time.Hour {
			t.Fatalf("Stat(%q).Modified = %v, want about %v", key, info.Modified, before)
		}
	}
}

func testMissing(t *testing.T, ctx context.Context, s checkpoint.Store) {
	mustBeMissing(t, ctx, s, "never/written")
	mustPut(t, ctx, s, "present", []byte("x"))
	mustBeMissing(t, ctx, s, "present/child")
	mustBeMissing(t, ctx, s, "presen")
	if objs := mustList(t, ctx, s, "nothing/"); len(objs) != 0 {
		t.Fatalf("List of an unused prefix = %+v, want none", objs)
	}
}

// testPrefixIsNotAnObject: a directory of keys is not an object, cannot be
// read, and deleting it as a key removes nothing.
func testPrefixIsNotAnObject(t *testing.T, ctx context.Context, s checkpoint.Store) {
	mustPut(t, ctx, s, "runs/a/x", []byte("x"))
	for _, key := range []string{"runs", "runs/a"} {
		mustBeMissing(t, ctx, s, key)
		if err := s.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q) of a key prefix: %v", key, err)
		}
	}
	mustGet(t, ctx, s, "runs/a/x", []byte("x"))
}

func testList(t *testing.T, ctx context.Context, s checkpoint.Store) {
	stored := map[string]int{
		"top":                   1,
		"datasets/abc.csv":      2,
		"runs/a-b":              3,
		"runs/a/1":              4,
		"runs/a/2/x":            5,
		"runs/a/2/y/z.json":     6,
		"runs/ab/x":             7,
		"runs/b":                8,
		"runs/a.json":           9,
		"runs/a/2/x.safetensor": 10,
	}
	for k, n := range stored {
		mustPut(t, ctx, s, k, bytes.Repeat([]byte{'d'}, n))
	}
	all := slices.Sorted(func(yield func(string) bool) {
		for k := range stored {
			if !yield(k) {
				return
			}
		}
	})
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"runs/a/", []string{"runs/a/1", "runs/a/2/x", "runs/a/2/x.safetensor", "runs/a/2/y/z.json"}},
		{"runs/a", []string{"runs/a-b", "runs/a.json", "runs/a/1", "runs/a/2/x", "runs/a/2/x.safetensor", "runs/a/2/y/z.json", "runs/ab/x"}},
		{"runs/a/2/x", []string{"runs/a/2/x", "runs/a/2/x.safetensor"}},
		{"runs/a/2/y/", []string{"runs/a/2/y/z.json"}},
		{"runs/b", []string{"runs/b"}},
		{"t", []string{"top"}},
		{"d", []string{"datasets/abc.csv"}},
		{"runs/c", []string{}},
		{"nothing/", []string{}},
		{"top/", []string{}},
	} {
		t.Run(strconv.Quote(tc.prefix), func(t *testing.T) {
			objs := mustList(t, ctx, s, tc.prefix)
			if got := keys(objs); !slices.Equal(got, tc.want) {
				t.Fatalf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
			for _, o := range objs {
				if o.Size != int64(stored[o.Key]) {
					t.Fatalf("List(%q) gives %q size %d, want %d", tc.prefix, o.Key, o.Size, stored[o.Key])
				}
				if o.Modified.IsZero() {
					t.Fatalf("List(%q) gives %q no modification time", tc.prefix, o.Key)
				}
			}
		})
	}
}

func testDelete(t *testing.T, ctx context.Context, s checkpoint.Store) {
	mustPut(t, ctx, s, "runs/t1/ckpt/1/a", []byte("a"))
	mustPut(t, ctx, s, "runs/t1/ckpt/1/b", []byte("b"))
	if err := s.Delete(ctx, "runs/t1/ckpt/1/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	mustBeMissing(t, ctx, s, "runs/t1/ckpt/1/a")
	mustGet(t, ctx, s, "runs/t1/ckpt/1/b", []byte("b"))
	if err := s.Delete(ctx, "runs/t1/ckpt/1/a"); err != nil {
		t.Fatalf("second Delete of the same key: %v", err)
	}
	if err := s.Delete(ctx, "never/written/key"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "runs/t1/ckpt/1/b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if objs := mustList(t, ctx, s, ""); len(objs) != 0 {
		t.Fatalf("List after deleting everything = %+v, want none", objs)
	}
	// The emptied prefix can be written again.
	mustPut(t, ctx, s, "runs/t1/ckpt/1/a", []byte("again"))
	mustGet(t, ctx, s, "runs/t1/ckpt/1/a", []byte("again"))
}

func testBadKeys(t *testing.T, ctx context.Context, s checkpoint.Store) {
	bad := []string{
		"",
		"/abs",
		"trailing/",
		"a//b",
		".",
		"..",
		"./a",
		"a/./b",
		"a/..",
		"../escape",
		"a/../../escape",
		`a\b`,
		"bad\xffutf8",
		"nul\x00byte",
		"new\nline",
		strings.Repeat("k", 1025),
		strings.Repeat("s", 256) + "/x",
		".loraft-tmp-123",
		"a/.loraft-tmp-x",
	}
	for _, key := range bad {
		name := strconv.QuoteToASCII(key)
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			check := func(method string, err error) {
				t.Helper()
				if !errors.Is(err, checkpoint.ErrBadKey) {
					t.Fatalf("%s(%q) = %v, want ErrBadKey", method, key, err)
				}
				if !strings.Contains(err.Error(), strconv.Quote(key)) {
					t.Fatalf("%s(%q) error %q does not name the key", method, key, err)
				}
			}
			check("Put", s.Put(ctx, key, strings.NewReader("x"), 1))
			rc, err := s.Get(ctx, key)
			if err == nil {
				rc.Close()
			}
			check("Get", err)
			_, err = s.Stat(ctx, key)
			check("Stat", err)
			check("Delete", s.Delete(ctx, key))
		})
	}
	for _, prefix := range []string{"/", "/runs", "../", "a/../", "a//", `a\`, "\xff", "./"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, checkpoint.ErrBadKey) {
			t.Errorf("List(%q) = %v, want ErrBadKey", prefix, err)
		}
	}
	if objs := mustList(t, ctx, s, ""); len(objs) != 0 {
		t.Fatalf("bad keys left objects: %+v", objs)
	}
}

var errBoom = errors.New("storetest: reader failed on purpose")

func testFailingReader(t *testing.T, ctx context.Context, s checkpoint.Store) {
	old := []byte("the previous, complete object")
	mustPut(t, ctx, s, "kept", old)
	for _, tc := range []struct {
		name string
		key  string
		sent int // bytes before the failure
		size int64
	}{
		{"new-key-midway", "runs/t1/ckpt/5/adapter.safetensors", 256 << 10, 1 << 20},
		{"new-key-at-start", "runs/t1/ckpt/6/adapter.safetensors", 0, 1 << 20},
		{"new-key-after-all-bytes", "runs/t1/ckpt/7/adapter.safetensors", 1 << 20, 1 << 20},
		{"new-key-after-first-part", "runs/t1/ckpt/8/adapter.safetensors", 17 << 20, 20 << 20},
		{"overwrite-midway", "kept", 256 << 10, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &failingReader{data: randomBytes(t, tc.sent), err: errBoom}
			err := s.Put(ctx, tc.key, r, tc.size)
			if err == nil {
				t.Fatalf("Put(%q) with a reader failing after %d of %d bytes succeeded", tc.key, tc.sent, tc.size)
			}
			if !errors.Is(err, errBoom) {
				t.Errorf("Put error %v does not wrap the reader's error", err)
			}
			if tc.key == "kept" {
				mustGet(t, ctx, s, "kept", old)
				if got := keys(mustList(t, ctx, s, "")); !slices.Equal(got, []string{"kept"}) {
					t.Fatalf("List after failed Puts = %q, want just \"kept\"", got)
				}
				return
			}
			mustBeMissing(t, ctx, s, tc.key)
			if got := keys(mustList(t, ctx, s, "runs/")); len(got) != 0 {
				t.Fatalf("List after a failed Put = %q, want none", got)
			}
		})
	}
}

// testSizeMismatch: a reader that yields fewer or more bytes than the
// declared size fails the Put and leaves nothing, seekable or not.
func testSizeMismatch(t *testing.T, ctx context.Context, s checkpoint.Store) {
	data := randomBytes(t, 64<<10)
	for _, tc := range []struct {
		name     string
		size     int64
		streamed bool
	}{
		{"short", int64(len(data)) + 1, false},
		{"short-streamed", int64(len(data)) + 1, true},
		{"long", int64(len(data)) - 1, false},
		{"long-streamed", int64(len(data)) - 1, true},
		{"long-by-all", 0, true},
		{"negative", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "mismatch/" + tc.name
			var r io.Reader = bytes.NewReader(data)
			if tc.streamed {
				r = onlyReader{r}
			}
			if err := s.Put(ctx, key, r, tc.size); err == nil {
				t.Fatalf("Put of %d bytes declared as %d succeeded", len(data), tc.size)
			}
			mustBeMissing(t, ctx, s, key)
		})
	}
}

func testConcurrent(t *testing.T, ctx context.Context, s checkpoint.Store) {
	const n = 8
	want := make([][]byte, n)
	for i := range want {
		want[i] = randomBytes(t, 64<<10+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = checkpoint.PutBytes(ctx, s, fmt.Sprintf("conc/%d/obj", i), want[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put %d: %v", i, err)
		}
	}
	if objs := mustList(t, ctx, s, "conc/"); len(objs) != n {
		t.Fatalf("List after %d concurrent Puts = %q", n, keys(objs))
	}
	for i := range n {
		mustGet(t, ctx, s, fmt.Sprintf("conc/%d/obj", i), want[i])
	}
}

// cancellingReader cancels its context after its first chunk, then keeps
// yielding data as if nothing happened.
type cancellingReader struct {
	cancel context.CancelFunc
	left   int
	chunks int
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	if c.chunks++; c.chunks == 2 {
		c.cancel()
	}
	n := min(len(p), c.left, 32<<10)
	clear(p[:n])
	c.left -= n
	return n, nil
}

func testCancel(t *testing.T, ctx context.Context, s checkpoint.Store) {
	t.Run("before", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := s.Put(cctx, "cancel/before", strings.NewReader("data"), 4)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with a cancelled context = %v, want context.Canceled", err)
		}
		mustBeMissing(t, ctx, s, "cancel/before")
	})
	t.Run("midway", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		const size = 4 << 20
		err := s.Put(cctx, "cancel/midway", onlyReader{&cancellingReader{cancel: cancel, left: size}}, size)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put whose context is cancelled midway = %v, want context.Canceled", err)
		}
		mustBeMissing(t, ctx, s, "cancel/midway")
	})
	t.Run("deadline", func(t *testing.T) {
		cctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		err := s.Put(cctx, "cancel/deadline", strings.NewReader("data"), 4)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put past its deadline = %v, want context.DeadlineExceeded", err)
		}
		mustBeMissing(t, ctx, s, "cancel/deadline")
	})
}

func testString(t *testing.T, ctx context.Context, s checkpoint.Store) {
	if s.String() == "" {
		t.Fatal("String() is empty")
	}
	// Errors name the store.
	_, err := s.Stat(ctx, "missing")
	if err == nil || !strings.Contains(err.Error(), s.String()) {
		t.Fatalf("Stat error %v does not name the store %q", err, s)
	}
}
