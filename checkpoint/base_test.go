package checkpoint_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
)

// countingStore counts Puts and can refuse Gets, to see what a call read
// and wrote.
type countingStore struct {
	checkpoint.Store
	puts    atomic.Int64
	refuse  atomic.Bool // Get fails
	getBody func(key string) io.ReadCloser
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, size)
}

func (c *countingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if c.refuse.Load() {
		return nil, errors.New("store is down")
	}
	if c.getBody != nil {
		if rc := c.getBody(key); rc != nil {
			return rc, nil
		}
	}
	return c.Store.Get(ctx, key)
}

func dirStore(t *testing.T) checkpoint.Store {
	t.Helper()
	s, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// baseFiles writes a config.json and a weights file and returns them as
// UploadBase takes them, with their contents.
func baseFiles(t *testing.T) (map[string]string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	content := map[string][]byte{
		"config.json":       []byte(`{"hidden_size": 128, "_name_or_path": "google/bert_uncased_L-2_H-128_A-2"}`),
		"model.safetensors": bytes.Repeat([]byte("weights!"), 40000),
	}
	paths := map[string]string{}
	for n, b := range content {
		p := filepath.Join(dir, "local-"+n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths[n] = p
	}
	return paths, content
}

func TestBaseRoundTrip(t *testing.T) {
	stores := []struct {
		name string
		new  func(t *testing.T) checkpoint.Store
	}{
		{"dir", dirStore},
		{"minio", func(t *testing.T) checkpoint.Store {
			return newS3Store(t, s3Config(miniotest.Start(t), "loraft", "bases-test"))
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s := &countingStore{Store: st.new(t)}
			paths, content := baseFiles(t)
			sha, err := checkpoint.UploadBase(ctx, s, "google/bert_uncased_L-2_H-128_A-2", paths)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.puts.Load(); got != 3 {
				t.Fatalf("first upload made %d Puts, want 3 (two blobs and the manifest)", got)
			}
			cache := t.TempDir()
			dir, man, err := checkpoint.FetchBase(ctx, s, sha, cache)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(cache, "bases", sha); dir != want {
				t.Fatalf("FetchBase dir = %s, want %s", dir, want)
			}
			if man.Name != "google/bert_uncased_L-2_H-128_A-2" || len(man.Files) != 2 || man.Files[0].Name != "config.json" || man.Files[1].Name != "model.safetensors" {
				t.Fatalf("manifest = %+v", man)
			}
			for n, want := range content {
				got, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("fetched %s: %d bytes, err %v; want the %d uploaded", n, len(got), err, len(want))
				}
				if f, _ := man.File(n); f.SHA256 != hexSHA(want) || f.Size != int64(len(want)) {
					t.Fatalf("manifest entry %+v, want sha256 %s size %d", f, hexSHA(want), len(want))
				}
				assertMode(t, filepath.Join(dir, n), 0o600)
			}
			assertMode(t, dir, 0o700)
			assertMode(t, filepath.Join(cache, "bases"), 0o700)

			// The same files again: nothing new to upload, the same name.
			s.puts.Store(0)
			sha2, err := checkpoint.UploadBase(ctx, s, "google/bert_uncased_L-2_H-128_A-2", paths)
			if err != nil || sha2 != sha {
				t.Fatalf("second upload = %s, %v; want %s", sha2, err, sha)
			}
			if got := s.puts.Load(); got != 0 {
				t.Fatalf("second upload made %d Puts, want 0", got)
			}
			// A blob of the right size but other bytes is uploaded again.
			w := content["model.safetensors"]
			bad := bytes.Clone(w)
			bad[len(bad)/2] ^= 1
			if err := checkpoint.PutBytes(ctx, s, checkpoint.BaseBlobKey(hexSHA(w)), bad); err != nil {
				t.Fatal(err)
			}
			s.puts.Store(0)
			if _, err := checkpoint.UploadBase(ctx, s, "google/bert_uncased_L-2_H-128_A-2", paths); err != nil {
				t.Fatal(err)
			}
			if got := s.puts.Load(); got != 1 {
				t.Fatalf("upload over a same-size corrupt blob made %d Puts, want 1", got)
			}
			// A complete cache entry needs no store.
			s.refuse.Store(true)
			if _, _, err := checkpoint.FetchBase(ctx, s, sha, cache); err != nil {
				t.Fatalf("FetchBase from a complete cache read the store: %v", err)
			}
		})
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %v, want %v", path, got, want)
	}
}

// putManifest stores raw manifest bytes under their sha256 and returns it.
func putManifest(t *testing.T, s checkpoint.Store, b []byte) string {
	t.Helper()
	sha := hexSHA(b)
	if err := checkpoint.PutBytes(context.Background(), s, checkpoint.BaseManifestKey(sha), b); err != nil {
		t.Fatal(err)
	}
	return sha
}

func TestFetchBaseRefuses(t *testing.T) {
	ctx := context.Background()
	blob := []byte("tensor bytes")
	blobSHA := hexSHA(blob)
	cases := []struct {
		name     string
		setup    func(t *testing.T, s checkpoint.Store) string // returns the sha to fetch
		want     error
		wantText string
	}{
		{"not a sha256", func(*testing.T, checkpoint.Store) string { return "../../etc" }, checkpoint.ErrBadBase, "not a sha256"},
		{"uppercase sha256", func(*testing.T, checkpoint.Store) string { return strings.ToUpper(blobSHA) }, checkpoint.ErrBadBase, "not a sha256"},
		{"missing manifest", func(*testing.T, checkpoint.Store) string { return blobSHA }, checkpoint.ErrNotFound, ""},
		{"manifest not matching its name", func(t *testing.T, s checkpoint.Store) string {
			other := hexSHA([]byte("x"))
			if err := checkpoint.PutBytes(ctx, s, checkpoint.BaseManifestKey(other), []byte(`{"name":"a","files":[]}`)); err != nil {
				t.Fatal(err)
			}
			return other
		}, checkpoint.ErrBaseMismatch, "hashes to"},
		{"manifest over the limit", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, bytes.Repeat([]byte(" "), checkpoint.MaxBaseManifestBytes+1))
		}, checkpoint.ErrBadBase, "more than 65536 bytes"},
		{"no files", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a","files":[]}`))
		}, checkpoint.ErrBadBase, "0 files"},
		{"unknown field", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a","path":"/dev/zero","files":[{"name":"w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBadBase, "unknown field"},
		{"file name with ..", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"..","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBadBase, `file name ".."`},
		{"file name with a slash", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"x/../../w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBadBase, "file name"},
		{"file over the size limit", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"w","sha256":"`+blobSHA+`","size":4294967297}]}`))
		}, checkpoint.ErrBadBase, "size 4294967297"},
		{"name with an escape", func(t *testing.T, s checkpoint.Store) string {
			return putManifest(t, s, []byte(`{"name":"a\u001b[2J","files":[{"name":"w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBadBase, "control character"},
		{"corrupt blob", func(t *testing.T, s checkpoint.Store) string {
			bad := bytes.Clone(blob)
			bad[0] ^= 1
			if err := checkpoint.PutBytes(ctx, s, checkpoint.BaseBlobKey(blobSHA), bad); err != nil {
				t.Fatal(err)
			}
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBaseMismatch, "hashes to"},
		{"blob longer than declared", func(t *testing.T, s checkpoint.Store) string {
			if err := checkpoint.PutBytes(ctx, s, checkpoint.BaseBlobKey(blobSHA), append(bytes.Clone(blob), make([]byte, 1<<20)...)); err != nil {
				t.Fatal(err)
			}
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBaseMismatch, "more than 12"},
		{"blob shorter than declared", func(t *testing.T, s checkpoint.Store) string {
			if err := checkpoint.PutBytes(ctx, s, checkpoint.BaseBlobKey(blobSHA), blob[:5]); err != nil {
				t.Fatal(err)
			}
			return putManifest(t, s, []byte(`{"name":"a","files":[{"name":"w","sha256":"`+blobSHA+`","size":12}]}`))
		}, checkpoint.ErrBaseMismatch, "has 5 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := dirStore(t)
			sha := tc.setup(t, s)
			cache := t.TempDir()
			dir, _, err := checkpoint.FetchBase(ctx, s, sha, cache)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.wantText) {
				t.Fatalf("FetchBase = %q, %v; want an error matching %v and saying %q", dir, err, tc.want, tc.wantText)
			}
			// Nothing refused reaches the cache, not even in part.
			var left []string
			_ = filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			if len(left) > 0 {
				t.Fatalf("refused base left files in the cache: %v", left)
			}
		})
	}
}

func TestUploadBaseRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.safetensors")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: refused by its size before a byte is read.
	if err := f.Truncate(checkpoint.MaxBaseFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	small := filepath.Join(dir, "config.json")
	if err := os.WriteFile(small, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		files    map[string]string
		wantText string
	}{
		{"a device", map[string]string{"model.safetensors": "/dev/zero"}, "not a regular file"},
		{"a directory", map[string]string{"model.safetensors": dir}, "not a regular file"},
		{"over the size limit", map[string]string{"model.safetensors": huge}, "more than the 4294967296"},
		{"a name with a slash", map[string]string{"../config.json": small}, "file name"},
		{"no files", map[string]string{}, "0 files"},
		{"a missing file", map[string]string{"config.json": filepath.Join(dir, "nope")}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &countingStore{Store: dirStore(t)}
			start := time.Now()
			_, err := checkpoint.UploadBase(ctx, s, "b", tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("UploadBase = %v, want an error saying %q", err, tc.wantText)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("refusing took %s", d)
			}
			if n := s.puts.Load(); n != 0 {
				t.Fatalf("a refused base made %d Puts", n)
			}
		})
	}
}

// endless yields bytes forever, telling started about its first Read.
type endless struct {
	started chan struct{}
	once    atomic.Bool
}

func (e *endless) Read(p []byte) (int, error) {
	if e.once.CompareAndSwap(false, true) {
		close(e.started)
	}
	return len(p), nil
}

func (e *endless) Close() error { return nil }

func TestFetchBaseStopsWhenCancelled(t *testing.T) {
	inner := dirStore(t)
	blobSHA := hexSHA([]byte("never read"))
	sha := putManifest(t, inner, []byte(`{"name":"big","files":[{"name":"model.safetensors","sha256":"`+blobSHA+`","size":4294967296}]}`))
	body := &endless{started: make(chan struct{})}
	s := &countingStore{Store: inner, getBody: func(key string) io.ReadCloser {
		if key == checkpoint.BaseBlobKey(blobSHA) {
			return body
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	cache := t.TempDir()
	go func() {
		_, _, err := checkpoint.FetchBase(ctx, s, sha, cache)
		done <- err
	}()
	<-body.started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("FetchBase after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FetchBase still downloading 10s after its context was cancelled")
	}
	entries, _ := os.ReadDir(filepath.Join(cache, "bases", sha))
	if len(entries) != 0 {
		t.Fatalf("a cancelled fetch left %v", entries)
	}
}

func FuzzParseBaseManifest(f *testing.F) {
	sha := hexSHA(nil)
	f.Add([]byte(`{"name":"bert-base-uncased","files":[{"name":"config.json","sha256":"` + sha + `","size":0}]}`))
	f.Add([]byte(`{"name":"a","files":[{"name":"..","sha256":"` + sha + `","size":1}]}`))
	f.Add([]byte(`{"name":"a","files":[{"name":"b","sha256":"` + sha + `","size":-1},{"name":"a","sha256":"` + sha + `","size":1}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := checkpoint.ParseBaseManifest(b)
		if err != nil {
			if !errors.Is(err, checkpoint.ErrBadBase) {
				t.Fatalf("error %v does not match ErrBadBase", err)
			}
			return
		}
		// Whatever parses names only plain files within the limits.
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest fails Validate: %v", err)
		}
		for _, f := range m.Files {
			if f.Name != filepath.Base(f.Name) || strings.ContainsAny(f.Name, `/\`) || strings.HasPrefix(f.Name, ".") {
				t.Fatalf("accepted file name %q", f.Name)
			}
			if f.Size < 0 || f.Size > checkpoint.MaxBaseFileBytes {
				t.Fatalf("accepted size %d", f.Size)
			}
		}
	})
}
