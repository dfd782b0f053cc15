package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/storetest"
)

func TestDirStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) checkpoint.Store {
		s, err := checkpoint.NewDirStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func newDirStore(t *testing.T) (*checkpoint.DirStore, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := checkpoint.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// files lists every file and directory under dir, relative, with a trailing
// '/' on directories.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestNewDirStore(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "store")
	s, err := checkpoint.NewDirStore(dir)
	if err != nil {
		t.Fatalf("NewDirStore of a missing nested directory: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("NewDirStore did not create %s: %v", dir, err)
	}
	if s.Dir() != dir || s.String() != "dir "+dir {
		t.Fatalf("Dir() = %q, String() = %q; want %q", s.Dir(), s.String(), dir)
	}

	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.NewDirStore(file); err == nil {
		t.Fatal("NewDirStore of a regular file succeeded")
	}
	if _, err := checkpoint.NewDirStore(""); err == nil {
		t.Fatal("NewDirStore(\"\") succeeded")
	}

	// A relative path is made absolute.
	t.Chdir(base)
	s, err = checkpoint.NewDirStore("rel")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "rel"); s.Dir() != want {
		t.Fatalf("Dir() of a relative store = %q, want %q", s.Dir(), want)
	}
}

// TestDirStoreLayout: objects are plain files at their key's path, with no
// temporary files left after Puts, failed or not.
func TestDirStoreLayout(t *testing.T) {
	ctx := context.Background()
	s, dir := newDirStore(t)
	if err := checkpoint.PutBytes(ctx, s, "runs/t1/manifest.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "runs", "t1", "manifest.json"))
	if err != nil || string(b) != "{}" {
		t.Fatalf("object file holds %q, %v; want %q", b, err, "{}")
	}
	fi, err := os.Stat(filepath.Join(dir, "runs", "t1", "manifest.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("object file mode %v, %v; want 0600", fi.Mode(), err)
	}
	for _, d := range []string{filepath.Join(dir, "runs"), filepath.Join(dir, "runs", "t1")} { // the root was there before
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("directory %s mode %v, %v; want 0700", d, fi.Mode(), err)
		}
	}
	err = s.Put(ctx, "runs/t1/broken", &failAfter{n: 1000}, 5000)
	if err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	if !errors.Is(err, errFail) {
		t.Fatalf("Put error %v does not wrap the reader's error", err)
	}
	want := []string{"runs/", "runs/t1/", "runs/t1/manifest.json"}
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Fatalf("files after a failed Put = %q, want %q", got, want)
	}
	// A failed Put into a new directory leaves no temporary file; the
	// empty directory it made is harmless and not listed.
	_ = s.Put(ctx, "runs/t2/broken", &failAfter{n: 10}, 5000)
	for _, f := range files(t, dir) {
		if strings.Contains(f, ".loraft-tmp-") {
			t.Fatalf("failed Put left %s", f)
		}
	}
}

var errFail = errors.New("reader failed")

type failAfter struct{ n int }

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errFail
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// TestDirStoreHidesTempFiles: temporary files a crash left behind are never
// listed and cannot be read as objects.
func TestDirStoreHidesTempFiles(t *testing.T) {
	ctx := context.Background()
	s, dir := newDirStore(t)
	if err := checkpoint.PutBytes(ctx, s, "runs/t1/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".loraft-tmp-123", "runs/t1/.loraft-tmp-456", "runs/.loraft-tmp-789"} {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(p)), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, prefix := range []string{"", "runs/", "runs/t1/", ".", "runs/t1/."} {
		objs, err := s.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		for _, o := range objs {
			if o.Key != "runs/t1/a" {
				t.Fatalf("List(%q) shows %q", prefix, o.Key)
			}
		}
	}
	if _, err := s.Stat(ctx, "runs/t1/.loraft-tmp-456"); !errors.Is(err, checkpoint.ErrBadKey) {
		t.Fatalf("Stat of a temporary file = %v, want ErrBadKey", err)
	}
	// Files that are not valid keys are not listed either.
	if err := os.WriteFile(filepath.Join(dir, "runs", `back\slash`), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(ctx, "")
	if err != nil || len(objs) != 1 {
		t.Fatalf("List = %+v, %v; want only runs/t1/a", objs, err)
	}
}

// TestDirStoreDeletePrunesDirs: Delete removes the directories it empties,
// never the root or a directory that still holds objects.
func TestDirStoreDeletePrunesDirs(t *testing.T) {
	ctx := context.Background()
	s, dir := newDirStore(t)
	for _, k := range []string{"runs/t1/ckpt/1/a", "runs/t1/ckpt/2/a", "runs/t1/manifest.json"} {
		if err := checkpoint.PutBytes(ctx, s, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		del  string
		want []string
	}{
		{"runs/t1/ckpt/1/a", []string{"runs/", "runs/t1/", "runs/t1/ckpt/", "runs/t1/ckpt/2/", "runs/t1/ckpt/2/a", "runs/t1/manifest.json"}},
		{"runs/t1/ckpt/2/a", []string{"runs/", "runs/t1/", "runs/t1/manifest.json"}},
		{"runs/t1/manifest.json", nil},
	}
	for _, st := range steps {
		if err := s.Delete(ctx, st.del); err != nil {
			t.Fatalf("Delete(%q): %v", st.del, err)
		}
		if got := files(t, dir); !slices.Equal(got, st.want) {
			t.Fatalf("after Delete(%q) files = %q, want %q", st.del, got, st.want)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("root gone after deleting every object: %v", err)
	}
}

// TestDirStoreKeyUnderObject: a key cannot name an object and a directory
// of others; the conflicting Put fails and changes nothing.
func TestDirStoreKeyUnderObject(t *testing.T) {
	ctx := context.Background()
	s, _ := newDirStore(t)
	if err := checkpoint.PutBytes(ctx, s, "a", []byte("object")); err != nil {
		t.Fatal(err)
	}
	err := checkpoint.PutBytes(ctx, s, "a/b", []byte("x"))
	if err == nil || errors.Is(err, checkpoint.ErrBadKey) || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("Put under an object = %v, want an error naming \"a\"", err)
	}
	if err := checkpoint.PutBytes(ctx, s, "d/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.PutBytes(ctx, s, "d", []byte("x")); err == nil {
		t.Fatal("Put of a key that is a directory of objects succeeded")
	}
	if b, err := checkpoint.GetBytes(ctx, s, "a"); err != nil || string(b) != "object" {
		t.Fatalf("after the failed Puts a = %q, %v", b, err)
	}
	objs, err := s.List(ctx, "")
	if err != nil || len(objs) != 2 {
		t.Fatalf("List = %+v, %v; want a and d/x", objs, err)
	}
}

// TestDirStoreConcurrentPutDelete puts and deletes keys that share a
// directory from several goroutines at once: Delete prunes the directory it
// empties, and a concurrent Put into it must not fail. (Not part of the
// storetest suite: MinIO itself fails such a Put now and then with "Access
// Denied", a server-side race between its rename and its own pruning of
// empty prefixes; see minio/minio#15157.)
func TestDirStoreConcurrentPutDelete(t *testing.T) {
	ctx := context.Background()
	s, dir := newDirStore(t)
	const workers, rounds = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("shared/dir/%d", w)
			for range rounds {
				if err := checkpoint.PutBytes(ctx, s, key, []byte(key)); err != nil {
					errs <- err
					return
				}
				if err := s.Delete(ctx, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := files(t, dir); len(got) != 0 {
		t.Fatalf("files after put/delete rounds = %q, want none", got)
	}
}
