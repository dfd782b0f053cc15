// Package bearer owns the bearer tokens that browsers and scripts present
// to loraft's HTTP and gRPC fronts (the coordinator's dashboard and
// `loraft serve`): the tokens file both read, making a new token, and
// checking a presented one. Only a token's SHA-256 is ever stored, so a
// leaked tokens file grants nothing, and no error repeats a line's content.
package bearer

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/loraft/loraft/internal/pki"
)

// MaxFileBytes bounds a tokens file: it holds a few hashes.
const MaxFileBytes = 1 << 20

// Set is the tokens a tokens file admits, each with its role.
type Set struct {
	entries map[[sha256.Size]byte]entry
}

type entry struct {
	role pki.Role // "" when its line named none
	line int
}

// Role checks that s names a role a token may have: a viewer or an
// operator (coordinators and trainers use certificates).
func Role(s string) (pki.Role, error) {
	role, err := pki.ParseRole(s)
	if err != nil {
		return "", err
	}
	if role != pki.RoleViewer && role != pki.RoleOperator {
		return "", fmt.Errorf("role %s: a token is for a viewer or an operator (coordinators and trainers use certificates)", role)
	}
	return role, nil
}

// Parse reads a tokens file: one `[role] <sha256-hex of the token>` per
// line, the format `loraft certs token` prints; blank lines and lines
// starting with # are ignored. A line without a role admits its token to a
// front without roles (`loraft serve`); the dashboard refuses such lines
// (RequireRoles). name names the file in errors, which give the line but
// never its content.
func Parse(r io.Reader, name string) (*Set, error) {
	s := &Set{entries: map[[sha256.Size]byte]entry{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) > 2 {
			return nil, fmt.Errorf("tokens file %s line %d: %d fields, want `[role] <sha256-hex>`", name, line, len(fields))
		}
		var role pki.Role
		if len(fields) == 2 {
			var err error
			if role, err = Role(fields[0]); err != nil {
				return nil, fmt.Errorf("tokens file %s line %d: %w", name, line, err)
			}
		}
		hash := fields[len(fields)-1]
		var h [sha256.Size]byte
		// The length first: hex.Decode writes past a short destination.
		if len(hash) != 2*sha256.Size {
			return nil, fmt.Errorf("tokens file %s line %d: the hash is %d characters, want 64 hex digits (a SHA-256; store hashes, never tokens)", name, line, len(hash))
		}
		if _, err := hex.Decode(h[:], []byte(hash)); err != nil {
			return nil, fmt.Errorf("tokens file %s line %d: the hash is not 64 hex digits (a SHA-256; store hashes, never tokens)", name, line)
		}
		if prev, ok := s.entries[h]; ok && prev.role != role {
			return nil, fmt.Errorf("tokens file %s line %d: the same token is listed as %s and %s", name, line, roleName(prev.role), roleName(role))
		}
		s.entries[h] = entry{role: role, line: line}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tokens file %s: %w", name, err)
	}
	if len(s.entries) == 0 {
		return nil, fmt.Errorf("tokens file %s: no token hashes", name)
	}
	return s, nil
}

func roleName(r pki.Role) string {
	if r == "" {
		return "without a role"
	}
	return string(r)
}

// Load reads the tokens file at path (see Parse), at most MaxFileBytes.
func Load(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening tokens file: %w", err)
	}
	defer f.Close()
	return Parse(io.LimitReader(f, MaxFileBytes), path)
}

// RequireRoles fails, naming the first such line, when a token has no
// role: a front with roles must not guess one.
func (s *Set) RequireRoles(name string) error {
	first := 0
	for _, e := range s.entries {
		if e.role == "" && (first == 0 || e.line < first) {
			first = e.line
		}
	}
	if first != 0 {
		return fmt.Errorf("tokens file %s line %d: no role, want `<role> <sha256-hex>` (viewer or operator)", name, first)
	}
	return nil
}

// Len is the number of tokens admitted.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Lookup returns the role of token ("" for a line without one) and a name
// for audit logs: a short prefix of its hash, enough to tell tokens apart
// and useless to an attacker.
func (s *Set) Lookup(token string) (role pki.Role, who string, ok bool) {
	if s == nil || token == "" {
		return "", "", false
	}
	sum := sha256.Sum256([]byte(token))
	e, ok := s.entries[sum]
	return e.role, "token:" + hex.EncodeToString(sum[:4]), ok
}

// New returns a fresh random token for role and the tokens-file line that
// admits it (the token's hash, never the token).
func New(role string) (token, line string, err error) {
	r, err := Role(role)
	if err != nil {
		return "", "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("generating a token: %w", err)
	}
	token = "lrt_" + hex.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	return token, fmt.Sprintf("%s %s", r, hex.EncodeToString(sum[:])), nil
}
