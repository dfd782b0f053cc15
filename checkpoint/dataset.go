package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/loraft/loraft/internal/atomicfile"
)

// Datasets live in the store once, under their content's sha256, so a sweep
// records only the hash and every trainer reads the same bytes.

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// DatasetKey is the store key of the dataset with this sha256.
func DatasetKey(sha string) string { return "datasets/" + sha + ".csv" }

// MaxDatasetBytes bounds a dataset file: Kaggle's Combined Data.csv is
// about 30 MB, so a gigabyte is room for far larger corpora while a wrong
// object (or path) cannot fill a trainer's disk.
const MaxDatasetBytes = 1 << 30

// ErrDatasetMismatch reports a stored or cached dataset whose bytes do not hash to its name.
var ErrDatasetMismatch = errors.New("dataset content does not match its sha256")

// UploadDataset stores the file at path under DatasetKey(its sha256) unless
// an object with the same content is already there, and returns the hash,
// the size and whether it uploaded. An existing object of the same size is
// streamed and hashed before it is trusted: a damaged or planted object
// under the name is replaced, not passed on to every trainer.
func UploadDataset(ctx context.Context, s Store, path string) (sha string, size int64, uploaded bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, false, fmt.Errorf("dataset %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if size, err = io.Copy(h, io.LimitReader(f, MaxDatasetBytes+1)); err != nil {
		return "", 0, false, fmt.Errorf("hashing dataset %s: %w", path, err)
	}
	if size > MaxDatasetBytes {
		return "", 0, false, fmt.Errorf("dataset %s: %d bytes, more than the %d allowed", path, size, MaxDatasetBytes)
	}
	sha = hex.EncodeToString(h.Sum(nil))
	if info, err := s.Stat(ctx, DatasetKey(sha)); err == nil && info.Size == size {
		switch err := verifyObject(ctx, s, DatasetKey(sha), size, sha); {
		case err == nil:
			return sha, size, false, nil
		case !errors.Is(err, ErrCorrupt):
			return "", 0, false, fmt.Errorf("checking the stored copy of dataset %s: %w", path, err)
		}
		// The stored bytes differ: upload over them.
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, false, fmt.Errorf("dataset %s: %w", path, err)
	}
	if err := s.Put(ctx, DatasetKey(sha), f, size); err != nil {
		return "", 0, false, fmt.Errorf("uploading dataset %s to %s: %w", path, s, err)
	}
	return sha, size, true, nil
}

// Modes of the local caches of datasets and models: readable by their owner
// only. Datasets are statements about people's mental health; base weights
// and adapters are derived from them.
const (
	CacheDirPerm  os.FileMode = 0o700
	CacheFilePerm os.FileMode = 0o600
)

// FetchDataset returns a local copy of the dataset sha256 under dir,
// downloading and verifying it the first time.
func FetchDataset(ctx context.Context, s Store, sha, dir string) (string, error) {
	if !sha256Hex.MatchString(sha) {
		return "", fmt.Errorf("dataset %q: not a sha256", sha)
	}
	path := filepath.Join(dir, sha+".csv")
	if got, err := FileSHA256(path); err == nil && got == sha {
		return path, nil
	}
	rc, err := s.Get(ctx, DatasetKey(sha))
	if err != nil {
		return "", fmt.Errorf("fetching dataset %s: %w", sha, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(dir, CacheDirPerm); err != nil {
		return "", fmt.Errorf("dataset cache %s: %w", dir, err)
	}
	h := sha256.New()
	err = atomicfile.Write(path, CacheFilePerm, func(w io.Writer) error {
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, MaxDatasetBytes+1))
		if err != nil {
			return err
		}
		if n > MaxDatasetBytes {
			return fmt.Errorf("%w: %s in %s is longer than %d bytes", ErrDatasetMismatch, DatasetKey(sha), s, MaxDatasetBytes)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sha {
			return fmt.Errorf("%w: %s in %s hashes to %s", ErrDatasetMismatch, DatasetKey(sha), s, got)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("fetching dataset %s: %w", sha, err)
	}
	return path, nil
}

// FileSHA256 is the hex sha256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
