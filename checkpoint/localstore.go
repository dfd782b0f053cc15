package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DirStore is a Store in a local directory: the object at key "a/b/c" is
// the file DIR/a/b/c. Put writes a temporary file (named ".loraft-tmp-…")
// next to the destination, fsyncs it, renames it over the destination and
// fsyncs the directory, so an object appears whole or not at all, even
// across a crash. Temporary files a crash leaves behind are never listed.
//
// Because objects are files, a key cannot name an object and also be a
// directory of others: with "a" stored, a Put of "a/b" fails (and the other
// way round). The checkpoint layout never needs both.
//
// A DirStore is safe for concurrent use, including by several processes
// sharing the directory.
//
// Every call has a deadline (CallTimeout): a Put's copy and a List's walk
// stop at it, though a single system call blocked in the kernel (a hung
// network filesystem) cannot be interrupted.
type DirStore struct {
	// CallTimeout bounds each Put (plus a second per MiB), Stat, List and
	// Delete; zero means DefaultCallTimeout. Set it before first use.
	CallTimeout time.Duration
	// Log receives a WARN line for every failed call, naming the
	// operation, the key and the directory; nil uses slog.Default().
	Log *slog.Logger

	root string // absolute, cleaned
}

var _ Store = (*DirStore)(nil)

// dirPutAttempts bounds Put's retries when a concurrent Delete removes the
// destination's now-empty directory between Put creating it and creating
// the temporary file in it.
const dirPutAttempts = 10

// Modes of a DirStore's directories and objects: owner-only, like the
// caches (CacheDirPerm, CacheFilePerm), since the store holds the datasets
// (statements about people's mental health) and what was trained on them.
const (
	storeDirPerm  = CacheDirPerm
	storeFilePerm = CacheFilePerm
)

// NewDirStore returns a DirStore rooted at dir, creating dir (and its
// parents) when missing.
func NewDirStore(dir string) (*DirStore, error) {
	if dir == "" {
		return nil, errors.New("store directory: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, storeDirPerm); err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store directory %s: not a directory", abs)
	}
	return &DirStore{root: abs}, nil
}

// Dir returns the store's root directory, an absolute path.
func (s *DirStore) Dir() string { return s.root }

// String returns "dir " followed by the root directory.
func (s *DirStore) String() string { return "dir " + s.root }

// path maps a valid key to its file.
func (s *DirStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// Put implements Store.
func (s *DirStore) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	start := time.Now()
	defer func() { logFailure(s.Log, s, "put", key, start, err) }()
	ctx, cancel := context.WithTimeout(ctx, putTimeout(s.CallTimeout, size))
	defer cancel()
	if err := ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %q in %s: negative size %d", key, s, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q in %s: %w", key, s, err)
	}
	if err := s.put(ctx, key, r, size); err != nil {
		return fmt.Errorf("put %q in %s: %w", key, s, err)
	}
	return nil
}

func (s *DirStore) put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	dst := s.path(key)
	dir := filepath.Dir(dst)
	tmp, top, err := s.createTemp(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, newExactReader(ctx, r, size)); err != nil {
		return err
	}
	if err := tmp.Chmod(storeFilePerm); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		if errors.Is(err, syscall.EISDIR) {
			return fmt.Errorf("key is a directory of other objects: %w", err)
		}
		return err
	}
	// Make the rename durable, and the directories Put created: each
	// lives on in its parent's entries.
	for d := dir; ; d = filepath.Dir(d) {
		if err := syncStoreDir(d); err != nil {
			return err
		}
		if top == "" || d == filepath.Dir(top) || d == s.root {
			return nil
		}
	}
}

// createTemp creates the temporary file for an object in dir, creating dir
// and its parents under the root as needed. It also returns the highest
// directory it created, or "" when none.
func (s *DirStore) createTemp(dir string) (f *os.File, top string, err error) {
	for attempt := 1; ; attempt++ {
		var created string
		created, err = s.mkdirs(dir)
		// Every attempt creates ancestors of dir: the shortest is highest.
		if created != "" && (top == "" || len(created) < len(top)) {
			top = created
		}
		if err == nil {
			f, err = os.CreateTemp(dir, storeTmpPrefix+"*")
			if err == nil {
				return f, top, nil
			}
		}
		// A concurrent Delete removed a directory on the way after
		// emptying it: again.
		if !errors.Is(err, fs.ErrNotExist) || attempt == dirPutAttempts {
			return nil, "", err
		}
	}
}

// mkdirs creates dir and its missing parents below the root, returning the
// highest directory it created, or "", also when it fails part way.
func (s *DirStore) mkdirs(dir string) (string, error) {
	rel, err := filepath.Rel(s.root, dir)
	if err != nil || rel == "." {
		return "", err
	}
	top := ""
	d := s.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		d = filepath.Join(d, seg)
		err := os.Mkdir(d, storeDirPerm)
		switch {
		case err == nil:
			if top == "" {
				top = d
			}
		case errors.Is(err, fs.ErrExist):
			if fi, serr := os.Stat(d); serr == nil && !fi.IsDir() {
				key := filepath.ToSlash(strings.TrimPrefix(d, s.root+string(filepath.Separator)))
				return top, fmt.Errorf("parent %q is an object", key)
			}
		default:
			return top, err
		}
	}
	return top, nil
}

// Get implements Store.
func (s *DirStore) Get(ctx context.Context, key string) (_ io.ReadCloser, err error) {
	start := time.Now()
	defer func() { logFailure(s.Log, s, "get", key, start, err) }()
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %q from %s: %w", key, s, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, s.notFound("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %q from %s: %w", key, s, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("get %q from %s: %w", key, s, ErrNotFound)
	}
	return f, nil
}

// Stat implements Store.
func (s *DirStore) Stat(ctx context.Context, key string) (_ ObjectInfo, err error) {
	start := time.Now()
	defer func() { logFailure(s.Log, s, "stat", key, start, err) }()
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, err)
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return ObjectInfo{}, s.notFound("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("stat %q in %s: %w", key, s, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// notFound wraps a filesystem error of op on key, mapping a missing file
// (or a file where a parent directory should be) to ErrNotFound.
func (s *DirStore) notFound(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s %q in %s: %w", op, key, s, ErrNotFound)
	}
	return fmt.Errorf("%s %q in %s: %w", op, key, s, err)
}

// List implements Store. It walks the directory that the prefix's last
// '/' names, skipping temporary files, files that are not regular and names
// that are not valid keys.
func (s *DirStore) List(ctx context.Context, prefix string) (_ []ObjectInfo, err error) {
	began := time.Now()
	defer func() { logFailure(s.Log, s, "list", prefix, began, err) }()
	ctx, cancel := context.WithTimeout(ctx, callTimeout(s.CallTimeout))
	defer cancel()
	if err := validateListPrefix(prefix); err != nil {
		return nil, err
	}
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = s.path(prefix[:i])
	}
	var out []ObjectInfo
	err = filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			// Gone since its directory was read (a concurrent Delete),
			// or the start is missing or a file: nothing to list there.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil
			}
			return err
		}
		if p == s.root {
			return nil
		}
		key := filepath.ToSlash(p[len(s.root)+1:])
		if d.IsDir() {
			// Descend only where keys can start with prefix.
			if strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				return nil
			}
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), storeTmpPrefix) || !d.Type().IsRegular() ||
			!strings.HasPrefix(key, prefix) || keyProblem(key) != "" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q in %s: %w", prefix, s, err)
	}
	slices.SortFunc(out, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements Store. It also removes the directories the deletion
// leaves empty, up to (not including) the root.
func (s *DirStore) Delete(ctx context.Context, key string) (err error) {
	start := time.Now()
	defer func() { logFailure(s.Log, s, "delete", key, start, err) }()
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	p := s.path(key)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	if fi.IsDir() {
		return nil // a directory of other objects is not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	// Remove emptied directories; the first that stays (not empty, or
	// the root) records the removal durably.
	d := filepath.Dir(p)
	for d != s.root && os.Remove(d) == nil {
		d = filepath.Dir(d)
	}
	if err := syncStoreDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q from %s: %w", key, s, err)
	}
	return nil
}

// syncStoreDir fsyncs a directory so the entries created, renamed or removed in
// it survive a crash.
func syncStoreDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
