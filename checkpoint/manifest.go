package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// MaxManifestBytes bounds a manifest object. A real one lists a handful of
// objects and metrics in well under 4 KiB; anything near this size was not
// written by Save, and reading it whole would let whoever can write the
// store make every reader allocate at will.
const MaxManifestBytes = 1 << 20

// maxManifestEntries bounds the objects one manifest may list: Save writes
// four (state, adapter, optimizer, vocab), and an exported adapter a few more.
const maxManifestEntries = 1024

// ParseManifest decodes and validates the manifest stored at key. Any
// problem is an error wrapping ErrCorrupt that names key and the field; it
// never panics, whatever b holds.
func ParseManifest(key string, b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifestBytes {
		return m, fmt.Errorf("%w: manifest %s has %d bytes, more than the %d a manifest may have", ErrCorrupt, key, len(b), MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: manifest %s: %w", ErrCorrupt, key, err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("%w: manifest %s: data after the JSON object", ErrCorrupt, key)
	}
	if err := m.Validate(key); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks the fields Save writes: format 1, a valid run name, a
// step ≥ 0, at least one object (a checkpoint holds at least its adapter),
// each with a safe unique name, a size ≥ 0 and a sha256 of exactly 64
// lowercase hex digits, and finite metrics. The error wraps ErrCorrupt and
// names key and the field.
func (m *Manifest) Validate(key string) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: manifest %s: field %s: %s", ErrCorrupt, key, field, fmt.Sprintf(format, args...))
	}
	if m.Format != 1 {
		return bad("format", "%d, this loraft reads 1", m.Format)
	}
	if !runName.MatchString(m.Run) {
		return bad("run", "%q is not a valid run name", m.Run)
	}
	if m.Step < 0 {
		return bad("step", "%d is negative", m.Step)
	}
	if len(m.Files) == 0 {
		return bad("files", "empty (a checkpoint holds at least its adapter)")
	}
	if len(m.Files) > maxManifestEntries {
		return bad("files", "%d entries, more than %d", len(m.Files), maxManifestEntries)
	}
	seen := make(map[string]bool, len(m.Files))
	for i, e := range m.Files {
		if why := entryNameProblem(e.Name); why != "" {
			return bad(fmt.Sprintf("files[%d].name", i), "%q: %s", e.Name, why)
		}
		if seen[e.Name] {
			return bad(fmt.Sprintf("files[%d].name", i), "%q is listed twice", e.Name)
		}
		seen[e.Name] = true
		if e.Size < 0 {
			return bad(fmt.Sprintf("files[%d].size", i), "%d is negative", e.Size)
		}
		if !sha256Hex.MatchString(e.SHA256) {
			return bad(fmt.Sprintf("files[%d].sha256", i), "%q is not 64 lowercase hex digits", e.SHA256)
		}
	}
	for k, v := range m.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad("metrics."+k, "%v is not finite", v)
		}
	}
	return nil
}

// entryNameProblem says why n cannot name an object of a checkpoint, or ""
// when it can: one key segment (no '/'), not the manifest itself, and a
// valid key.
func entryNameProblem(n string) string {
	switch {
	case n == "":
		return "empty"
	case n == ManifestName:
		return "the manifest's own name"
	}
	for i := 0; i < len(n); i++ {
		if n[i] == '/' {
			return "contains '/'"
		}
	}
	return keyProblem(n)
}

// getLimited reads the object at key, refusing (with ErrCorrupt) one longer
// than limit bytes without reading more than limit+1 of them.
func getLimited(ctx context.Context, s Store, key string, limit int64) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %q from %s: %w", key, s, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is longer than the %d bytes allowed", ErrCorrupt, key, limit)
	}
	return b, nil
}

// Verify checks that every object of c is present with the size and sha256
// its manifest gives, streaming each one (nothing is held in memory). A
// mismatch is an error wrapping ErrCorrupt naming the object.
func Verify(ctx context.Context, s Store, c Checkpoint) error {
	prefix := Prefix(c.Run, c.Step)
	if err := c.Manifest.Validate(prefix + ManifestName); err != nil {
		return err
	}
	for _, e := range c.Manifest.Files {
		if err := verifyObject(ctx, s, prefix+e.Name, e.Size, e.SHA256); err != nil {
			return err
		}
	}
	return nil
}

// verifyObject streams the object at key and checks its size and sha256.
// It reads at most size+1 bytes, so a grown object costs no more than the
// manifest promised.
func verifyObject(ctx context.Context, s Store, key string, size int64, sha string) error {
	rc, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %s is missing", ErrCorrupt, key)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(rc, size+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sha {
		return fmt.Errorf("%w: %s has %d bytes with sha256 %.12s, the manifest says %d bytes with %.12s", ErrCorrupt, key, n, got, size, sha)
	}
	return nil
}
