// Package hubtest writes fake Hugging Face hub caches for tests.
//
// It lays files out as huggingface_hub does in its cache directory, so that
// hub id resolution runs against the same shape of tree a user's
// `huggingface-cli download` leaves behind, without the network.
package hubtest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Folder is the cache folder huggingface_hub keeps hub id id in:
// models--<org>--<name>, or models--<name> for a bare id.
func Folder(id string) string {
	return "models--" + strings.ReplaceAll(id, "/", "--")
}

// Files maps each of names to its path in dir: the files argument of
// WriteRepo for a snapshot that copies dir's files under the same names.
func Files(dir string, names ...string) map[string]string {
	m := make(map[string]string, len(names))
	for _, n := range names {
		m[n] = filepath.Join(dir, n)
	}
	return m
}

// WriteRepo lays out the cache repository folder (see Folder) in cache as
// huggingface_hub does: blobs/<sha256> holding the bytes,
// snapshots/<rev>/<name> symlinks to them, and refs/main naming rev. files
// maps a snapshot name to the source file whose bytes it holds. It returns
// the snapshot directory and fails tb on any I/O error.
func WriteRepo(tb testing.TB, cache, folder, rev string, files map[string]string) string {
	tb.Helper()
	repo := filepath.Join(cache, folder)
	snap := filepath.Join(repo, "snapshots", rev)
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatalf("creating the cache directory: %v", err)
		}
	}
	for name, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			tb.Fatalf("reading the source of %s: %v", name, err)
		}
		sum := sha256.Sum256(data)
		blob := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(repo, "blobs", blob), data, 0o644); err != nil {
			tb.Fatalf("writing the blob of %s: %v", name, err)
		}
		// Relative, as huggingface_hub links them, so the cache can move.
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snap, name)); err != nil {
			tb.Fatalf("linking the snapshot's %s: %v", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(rev), 0o644); err != nil {
		tb.Fatalf("writing refs/main: %v", err)
	}
	return snap
}
