package serve

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFileBytes bounds a tokens file: it holds a few hashes.
const maxTokenFileBytes = 1 << 20

// ReadTokenHashes reads the bearer tokens a service accepts, as the sha256
// (hex) of each token, one per line, optionally after a role word
// ("viewer 9f86d0…", the dashboard's format; the role is ignored here).
// Blank lines and lines starting with # are skipped. The file holds hashes,
// never tokens, so reading it reveals nothing a caller could present.
func ReadTokenHashes(path string) ([][sha256.Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	return ParseTokenHashes(io.LimitReader(f, maxTokenFileBytes), path)
}

// ParseTokenHashes parses a tokens file's content; name is used in errors.
// An error names the line but never repeats its content.
func ParseTokenHashes(r io.Reader, name string) ([][sha256.Size]byte, error) {
	var out [][sha256.Size]byte
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		fields := strings.Fields(s)
		h := fields[len(fields)-1]
		if len(fields) > 2 {
			return nil, fmt.Errorf("%s:%d: want [role] sha256-hex, got %d fields", name, line, len(fields))
		}
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s:%d: not a sha256 in hex (64 characters); store the token's hash, not the token", name, line)
		}
		out = append(out, [sha256.Size]byte(b))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no token hashes", name)
	}
	return out, nil
}
