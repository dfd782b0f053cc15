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
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"unicode/utf8"

	"github.com/loraft/loraft/internal/atomicfile"
)

// A sweep's frozen base (its config.json and weights) lives in the store
// by content, as datasets do: each file is a blob bases/<sha256>, and a
// small JSON base manifest listing them is bases/<manifest-sha256>.json. A
// sweep names its base by the manifest's sha256 alone, so nothing from the
// network names a path on a trainer (DESIGN invariant 9), and every trainer
// reads the same verified bytes.

// Limits on what FetchBase reads from the store, and UploadBase writes.
const (
	// MaxBaseFileBytes bounds one file of a base: bert-large's
	// model.safetensors is 1.3 GB; 4 GiB leaves room without letting a
	// manifest make a trainer download (or a launcher upload) without end.
	MaxBaseFileBytes = 4 << 30
	// MaxBaseManifestBytes bounds a base manifest (a few hundred bytes in
	// practice).
	MaxBaseManifestBytes = 64 << 10
	// MaxBaseFiles bounds the files of one base (a config and a weights
	// file today).
	MaxBaseFiles = 16
	// MaxBaseNameBytes bounds a base manifest's Name.
	MaxBaseNameBytes = 256
)

// Sentinel errors of the base functions, compared with errors.Is.
var (
	// ErrBaseMismatch reports a stored or cached base object whose bytes
	// do not hash to (or are not the size of) what names it.
	ErrBaseMismatch = errors.New("base content does not match its sha256")
	// ErrBadBase reports a base manifest that is not valid, or a file that
	// cannot be part of a base (too large, not a regular file, a bad name).
	ErrBadBase = errors.New("invalid base")
)

// BaseFile is one file of a base.
type BaseFile struct {
	// Name is the file's name in the base ("config.json",
	// "model.safetensors"); see ValidateBaseFileName.
	Name string `json:"name"`
	// SHA256 is the hex sha256 of the file's bytes, which are the store
	// object BaseBlobKey(SHA256).
	SHA256 string `json:"sha256"`
	// Size is the file's length in bytes, at most MaxBaseFileBytes.
	Size int64 `json:"size"`
}

// BaseManifest lists the files of a base; it is stored as
// BaseManifestKey(sha256 of its JSON).
type BaseManifest struct {
	// Name is the base's name for people and the model card: a Hub id or
	// a file name, never a path that anything opens.
	Name string `json:"name"`
	// Files are the base's files, sorted by name, each name once.
	Files []BaseFile `json:"files"`
}

// File returns the file of the base named name.
func (m BaseManifest) File(name string) (BaseFile, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return BaseFile{}, false
}

// BaseBlobKey is the store key of the base file with this sha256.
func BaseBlobKey(sha string) string { return "bases/" + sha }

// BaseManifestKey is the store key of the base manifest with this sha256.
func BaseManifestKey(sha string) string { return "bases/" + sha + ".json" }

// baseFileName is the allow-list of base file names: no '/', no "..", no
// leading '.', nothing a shell or a filesystem reads specially.
var baseFileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// baseManifestFile is the name under which FetchBase keeps a base's
// manifest in its cache directory; the leading '.' keeps it apart from
// every name ValidateBaseFileName allows. It is written last, so its
// presence marks a complete cache entry.
const baseManifestFile = ".base.json"

// ValidateBaseFileName reports whether name may name a file of a base:
// 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or
// digit (so never "..", never a path).
func ValidateBaseFileName(name string) error {
	if !baseFileName.MatchString(name) {
		return fmt.Errorf("%w: file name %q: want 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", ErrBadBase, name)
	}
	return nil
}

// Validate checks the manifest: a printable Name of at most
// MaxBaseNameBytes, 1 to MaxBaseFiles files sorted by name, each with a
// valid name, a sha256 and a size within MaxBaseFileBytes.
func (m BaseManifest) Validate() error {
	if n := len(m.Name); n > MaxBaseNameBytes {
		return fmt.Errorf("%w: name has %d bytes, want at most %d", ErrBadBase, n, MaxBaseNameBytes)
	}
	if !utf8.ValidString(m.Name) {
		return fmt.Errorf("%w: name is not valid UTF-8", ErrBadBase)
	}
	for _, r := range m.Name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: name %q holds a control character", ErrBadBase, m.Name)
		}
	}
	if n := len(m.Files); n == 0 || n > MaxBaseFiles {
		return fmt.Errorf("%w: %d files, want 1..%d", ErrBadBase, n, MaxBaseFiles)
	}
	for i, f := range m.Files {
		if err := ValidateBaseFileName(f.Name); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		if i > 0 && f.Name <= m.Files[i-1].Name {
			return fmt.Errorf("%w: files[%d] %q: names must be sorted and unique", ErrBadBase, i, f.Name)
		}
		if !sha256Hex.MatchString(f.SHA256) {
			return fmt.Errorf("%w: files[%d] %s: sha256 %q, want 64 lowercase hex digits", ErrBadBase, i, f.Name, f.SHA256)
		}
		if f.Size < 0 || f.Size > MaxBaseFileBytes {
			return fmt.Errorf("%w: files[%d] %s: size %d, want 0..%d", ErrBadBase, i, f.Name, f.Size, int64(MaxBaseFileBytes))
		}
	}
	return nil
}

// ParseBaseManifest decodes and validates a base manifest; unknown fields
// and trailing data are errors.
func ParseBaseManifest(b []byte) (BaseManifest, error) {
	if len(b) > MaxBaseManifestBytes {
		return BaseManifest{}, fmt.Errorf("%w: manifest has %d bytes, want at most %d", ErrBadBase, len(b), MaxBaseManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m BaseManifest
	if err := dec.Decode(&m); err != nil {
		return BaseManifest{}, fmt.Errorf("%w: decoding manifest: %v", ErrBadBase, err)
	}
	if dec.More() {
		return BaseManifest{}, fmt.Errorf("%w: data after the manifest", ErrBadBase)
	}
	if err := m.Validate(); err != nil {
		return BaseManifest{}, err
	}
	return m, nil
}

// encode is the manifest's canonical JSON, whose sha256 names it.
func (m BaseManifest) encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// UploadBase stores the local files (name in the base → local path) as a
// base called name and returns its manifest's sha256. Each file is uploaded
// unless the store already holds an object of the same sha256 (its bytes
// are read back and hashed: a size is no proof), then the manifest.
// Files must be regular files of at most MaxBaseFileBytes.
func UploadBase(ctx context.Context, s Store, name string, files map[string]string) (string, error) {
	m := BaseManifest{Name: name}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := ValidateBaseFileName(n); err != nil {
			return "", fmt.Errorf("base %s: %w", name, err)
		}
		f, err := uploadBaseFile(ctx, s, files[n])
		if err != nil {
			return "", fmt.Errorf("base %s file %s: %w", name, n, err)
		}
		f.Name = n
		m.Files = append(m.Files, f)
	}
	if err := m.Validate(); err != nil {
		return "", fmt.Errorf("base %s: %w", name, err)
	}
	b, err := m.encode()
	if err != nil {
		return "", fmt.Errorf("encoding base manifest %s: %w", name, err)
	}
	sha := sha256Sum(b)
	key := BaseManifestKey(sha)
	if old, err := readLimitedBase(ctx, s, key, MaxBaseManifestBytes); err == nil && bytes.Equal(old, b) {
		return sha, nil
	}
	if err := PutBytes(ctx, s, key, b); err != nil {
		return "", fmt.Errorf("uploading base manifest %s to %s: %w", key, s, err)
	}
	return sha, nil
}

// uploadBaseFile stores the file at path as a blob, unless a blob with its
// sha256 is already there, and returns its sha256 and size.
func uploadBaseFile(ctx context.Context, s Store, path string) (BaseFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return BaseFile{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return BaseFile{}, err
	}
	// Refuse before reading: a device (/dev/zero) or a huge file must
	// not keep the launcher hashing forever.
	if !info.Mode().IsRegular() {
		return BaseFile{}, fmt.Errorf("%w: %s is not a regular file (%s)", ErrBadBase, path, info.Mode().Type())
	}
	if info.Size() > MaxBaseFileBytes {
		return BaseFile{}, fmt.Errorf("%w: %s has %d bytes, more than the %d a base file may have", ErrBadBase, path, info.Size(), int64(MaxBaseFileBytes))
	}
	h := sha256.New()
	size, err := io.Copy(h, io.LimitReader(&ctxReader{ctx: ctx, r: f}, MaxBaseFileBytes+1))
	if err != nil {
		return BaseFile{}, fmt.Errorf("hashing %s: %w", path, err)
	}
	if size > MaxBaseFileBytes {
		return BaseFile{}, fmt.Errorf("%w: %s grew past %d bytes while being read", ErrBadBase, path, int64(MaxBaseFileBytes))
	}
	bf := BaseFile{SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}
	key := BaseBlobKey(bf.SHA256)
	if ok, err := storedBlobMatches(ctx, s, bf); err != nil {
		return BaseFile{}, err
	} else if ok {
		return bf, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return BaseFile{}, fmt.Errorf("rewinding %s: %w", path, err)
	}
	// Hash what is uploaded too: a file that changed since it was hashed
	// must not leave a blob under another content's name.
	h.Reset()
	if err := s.Put(ctx, key, io.TeeReader(f, h), size); err != nil {
		return BaseFile{}, fmt.Errorf("uploading %s to %s: %w", key, s, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != bf.SHA256 {
		_ = s.Delete(ctx, key) // best effort; FetchBase verifies anyway
		return BaseFile{}, fmt.Errorf("%s changed while it was uploaded (sha256 %s, then %s)", path, bf.SHA256, got)
	}
	return bf, nil
}

// storedBlobMatches reports whether the store holds f's blob with f's
// size and sha256; a missing or different blob is false, a failing store
// an error.
func storedBlobMatches(ctx context.Context, s Store, f BaseFile) (bool, error) {
	key := BaseBlobKey(f.SHA256)
	info, err := s.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s in %s: %w", key, s, err)
	}
	if info.Size != f.Size {
		return false, nil
	}
	rc, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s from %s: %w", key, s, err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(&ctxReader{ctx: ctx, r: rc}, f.Size+1)); err != nil {
		return false, fmt.Errorf("reading %s from %s: %w", key, s, err)
	}
	return hex.EncodeToString(h.Sum(nil)) == f.SHA256, nil
}

// FetchBase returns a local directory holding the base whose manifest has
// this sha256, <cacheDir>/bases/<sha256>/<file name>, and its manifest. It
// downloads what the cache lacks, checking every object's size and sha256
// as it reads (never more than the manifest declares) and writing each
// file atomically, 0600 in 0700 directories. A cached file was verified
// before it was renamed into place; FetchBase checks that it is a regular
// file of the declared size. A cancelled ctx stops a download within one
// read.
func FetchBase(ctx context.Context, s Store, sha, cacheDir string) (string, BaseManifest, error) {
	if !sha256Hex.MatchString(sha) {
		return "", BaseManifest{}, fmt.Errorf("%w: base %q: not a sha256 (64 lowercase hex digits)", ErrBadBase, sha)
	}
	dir := filepath.Join(cacheDir, "bases", sha)
	if m, ok := cachedBase(dir, sha); ok {
		return dir, m, nil
	}
	if err := mkdirPrivate(filepath.Join(cacheDir, "bases"), dir); err != nil {
		return "", BaseManifest{}, fmt.Errorf("base cache %s: %w", dir, err)
	}
	key := BaseManifestKey(sha)
	b, err := readLimitedBase(ctx, s, key, MaxBaseManifestBytes)
	if err != nil {
		return "", BaseManifest{}, fmt.Errorf("fetching base %s: %w", sha, err)
	}
	if got := sha256Sum(b); got != sha {
		return "", BaseManifest{}, fmt.Errorf("fetching base %s: %w: %s in %s hashes to %s", sha, ErrBaseMismatch, key, s, got)
	}
	m, err := ParseBaseManifest(b)
	if err != nil {
		return "", BaseManifest{}, fmt.Errorf("fetching base %s: %s: %w", sha, key, err)
	}
	for _, f := range m.Files {
		path := filepath.Join(dir, f.Name)
		if cachedFileOK(path, f.Size) {
			continue
		}
		if err := fetchBaseFile(ctx, s, f, path); err != nil {
			return "", BaseManifest{}, fmt.Errorf("fetching base %s file %s: %w", sha, f.Name, err)
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, baseManifestFile), b, 0o600); err != nil {
		return "", BaseManifest{}, fmt.Errorf("base cache %s: %w", dir, err)
	}
	return dir, m, nil
}

// fetchBaseFile downloads f's blob to path, refusing it unless it has
// exactly f.Size bytes hashing to f.SHA256.
func fetchBaseFile(ctx context.Context, s Store, f BaseFile, path string) error {
	key := BaseBlobKey(f.SHA256)
	rc, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("reading %s from %s: %w", key, s, err)
	}
	defer rc.Close()
	return atomicfile.Write(path, 0o600, func(w io.Writer) error {
		h := sha256.New()
		// One byte past the declared size tells a longer object apart.
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(&ctxReader{ctx: ctx, r: rc}, f.Size+1))
		if err != nil {
			return fmt.Errorf("reading %s from %s: %w", key, s, err)
		}
		if n != f.Size {
			return fmt.Errorf("%w: %s in %s has %s bytes, the manifest says %d", ErrBaseMismatch, key, s, sizeSeen(n, f.Size), f.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
			return fmt.Errorf("%w: %s in %s hashes to %s", ErrBaseMismatch, key, s, got)
		}
		return nil
	})
}

// sizeSeen describes n bytes read with a limit of size+1: "more than size"
// when the limit was reached.
func sizeSeen(n, size int64) string {
	if n > size {
		return fmt.Sprintf("more than %d", size)
	}
	return fmt.Sprint(n)
}

// cachedBase returns the manifest of a complete cache entry for sha in
// dir: its manifest hashes to sha and every file is there with its size.
func cachedBase(dir, sha string) (BaseManifest, bool) {
	b, err := readFileLimited(filepath.Join(dir, baseManifestFile), MaxBaseManifestBytes)
	if err != nil || sha256Sum(b) != sha {
		return BaseManifest{}, false
	}
	m, err := ParseBaseManifest(b)
	if err != nil {
		return BaseManifest{}, false
	}
	for _, f := range m.Files {
		if !cachedFileOK(filepath.Join(dir, f.Name), f.Size) {
			return BaseManifest{}, false
		}
	}
	return m, true
}

// cachedFileOK reports whether path is a regular file (not a link) of size bytes.
func cachedFileOK(path string, size int64) bool {
	info, err := os.Lstat(path)
	return err == nil && info.Mode().IsRegular() && info.Size() == size
}

// mkdirPrivate creates each directory (parents first) and makes it 0700:
// a base may be someone's private model.
func mkdirPrivate(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// readLimitedBase reads the object at key, refusing one of more than max bytes.
func readLimitedBase(ctx context.Context, s Store, key string, max int64) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(&ctxReader{ctx: ctx, r: rc}, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", key, s, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s in %s has more than %d bytes", ErrBadBase, key, s, max)
	}
	return b, nil
}

// readFileLimited reads a local file of at most max bytes.
func readFileLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s has more than %d bytes", path, max)
	}
	return b, nil
}

func sha256Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ctxReader fails its next Read once ctx ends, so a long copy from a
// reader that ignores ctx (a local file, a slow body) stops promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
