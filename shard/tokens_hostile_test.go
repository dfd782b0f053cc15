package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestTokenCacheModes: the cache directory is created 0700 and the cache
// file written 0600, since the ids spell out the statements.
func TestTokenCacheModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	tok, _, err := LoadOrTokenize(context.Background(), dir, tokensFixture(t), &spaceEncoder{}, 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, tok.Key+".tokens"): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
}

// cacheBytes builds a cache file as writeTokens lays it out, with a valid
// checksum over whatever rows hold: full length, then ids.
func cacheBytes(maxLen uint32, rows [][]uint32) []byte {
	var buf bytes.Buffer
	le := binary.LittleEndian
	buf.Write(tokensMagic)
	buf.Write(le.AppendUint32(nil, maxLen))
	buf.Write(le.AppendUint32(nil, uint32(len(rows))))
	for _, r := range rows {
		buf.Write(le.AppendUint32(nil, r[0]))
		buf.Write(le.AppendUint32(nil, uint32(len(r)-1)))
		for _, id := range r[1:] {
			buf.Write(le.AppendUint32(nil, id))
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	return buf.Bytes()
}

// TestTokenCacheHostile: files with a valid checksum but impossible
// contents, and files larger than any valid one, are refused as corrupt
// (and rebuilt by LoadOrTokenize), never handed to the model.
func TestTokenCacheHostile(t *testing.T) {
	tests := []struct {
		name       string
		data       []byte
		want       string
		decodeOnly bool
	}{
		{"negative id", cacheBytes(6, [][]uint32{{3, 101, 0xFFFFFFFF, 102}}), "out of range", false},
		{"full length below the ids", cacheBytes(6, [][]uint32{{1, 101, 5, 102}}), "full length", false},
		{"more ids than max length", cacheBytes(6, [][]uint32{{9, 1, 2, 3, 4, 5, 6, 7}}), "more than the max length", true},
		{"row count claims more than the file holds", func() []byte {
			b := cacheBytes(6, nil)
			binary.LittleEndian.PutUint32(b[len(tokensMagic)+4:], 1)
			return b
		}(), "checksum", false},
		{"larger than any valid file", append(cacheBytes(6, [][]uint32{{3, 101, 5, 102}}), make([]byte, 1<<20)...), "more than the", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.tokens")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := readTokens(path, "x", 6, 1)
			if tc.decodeOnly { // the size check would refuse it first
				_, err = decodeTokens(path, tc.data, "x", 6, 1)
			}
			if !errors.Is(err, ErrCorruptCache) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readTokens = %v, want ErrCorruptCache mentioning %q", err, tc.want)
			}
		})
	}
	// The same layout with sound values reads back.
	path := filepath.Join(t.TempDir(), "ok.tokens")
	if err := os.WriteFile(path, cacheBytes(6, [][]uint32{{8, 101, 5, 102}}), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readTokens(path, "ok", 6, 1)
	if err != nil || !reflect.DeepEqual(got.IDs, [][]int32{{101, 5, 102}}) || got.FullLen[0] != 8 {
		t.Fatalf("readTokens of a sound file = %+v, %v", got, err)
	}
	// A directory where the cache file should be is refused, not read.
	if _, err := readTokens(t.TempDir(), "d", 6, 1); err == nil {
		t.Fatal("a directory was read as a token cache")
	}
}

// FuzzDecodeTokens feeds arbitrary bytes to the token cache decoder: it
// never panics, fails only with ErrCorruptCache, and what it accepts obeys
// the layout's bounds and re-encodes to the same bytes.
func FuzzDecodeTokens(f *testing.F) {
	f.Add(cacheBytes(6, [][]uint32{{5, 101, 11, 12, 102}, {3, 101, 13, 102}}), 6, 2)
	f.Add(cacheBytes(6, [][]uint32{{3, 101, 0xFFFFFFFF, 102}}), 6, 1)
	f.Add(cacheBytes(2, nil), 2, 0)
	f.Add([]byte("LRFTTOK1"), 1, 1)
	f.Add([]byte{}, 0, 0)
	f.Fuzz(func(t *testing.T, data []byte, maxLen, rows int) {
		if maxLen > 1<<12 || rows > 1<<12 {
			return // the caller's own values, bounded by its dataset; not the file's
		}
		tok, err := decodeTokens("fuzz.tokens", data, "k", maxLen, rows)
		if err != nil {
			if !errors.Is(err, ErrCorruptCache) {
				t.Fatalf("error does not wrap ErrCorruptCache: %v", err)
			}
			return
		}
		if len(tok.IDs) != rows || len(tok.FullLen) != rows || tok.MaxLen != maxLen {
			t.Fatalf("accepted %d rows (%d lengths) of max %d, asked for %d of max %d", len(tok.IDs), len(tok.FullLen), tok.MaxLen, rows, maxLen)
		}
		for i, ids := range tok.IDs {
			if len(ids) > maxLen || int(tok.FullLen[i]) < len(ids) {
				t.Fatalf("row %d: %d ids, full length %d, max %d", i, len(ids), tok.FullLen[i], maxLen)
			}
			for _, id := range ids {
				if id < 0 {
					t.Fatalf("row %d: negative id %d", i, id)
				}
			}
		}
		if int64(len(data)) > tokensFileMax(maxLen, rows) {
			t.Fatalf("accepted %d bytes, more than a valid file's %d", len(data), tokensFileMax(maxLen, rows))
		}
		path := filepath.Join(t.TempDir(), "re.tokens")
		if err := writeTokens(path, tok); err != nil {
			t.Fatal(err)
		}
		again, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs (%v)", err)
		}
	})
}
