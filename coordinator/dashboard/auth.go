package dashboard

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/loraft/loraft/internal/pki"
)

// CookieName is the cookie the login form sets; it carries the token.
const CookieName = "loraft_token"

// ErrBadToken is wrapped by every refusal of a presented token.
var ErrBadToken = errors.New("unknown or malformed token")

// Tokens are the bearer tokens browsers and scripts may present. Only the
// SHA-256 of each token is kept, so a leaked tokens file grants nothing.
type Tokens struct {
	roles map[[sha256.Size]byte]pki.Role
}

func tokenRole(s string) (pki.Role, error) {
	role, err := pki.ParseRole(s)
	if err != nil {
		return "", err
	}
	if role != pki.RoleViewer && role != pki.RoleOperator {
		return "", fmt.Errorf("role %s: a token is for a viewer or an operator (coordinators and trainers use certificates)", role)
	}
	return role, nil
}

// ParseTokens reads a tokens file: one `<role> <sha256-hex of the token>`
// per line; blank lines and lines starting with # are ignored. name names
// the file in errors, which give the line but never its hash.
func ParseTokens(r io.Reader, name string) (*Tokens, error) {
	t := &Tokens{roles: map[[sha256.Size]byte]pki.Role{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("tokens file %s line %d: %d fields, want `<role> <sha256-hex>`", name, line, len(fields))
		}
		role, err := tokenRole(fields[0])
		if err != nil {
			return nil, fmt.Errorf("tokens file %s line %d: %w", name, line, err)
		}
		var h [sha256.Size]byte
		// The length first: hex.Decode writes past a short destination.
		if len(fields[1]) != 2*sha256.Size {
			return nil, fmt.Errorf("tokens file %s line %d: the hash is %d characters, want 64 hex digits (a SHA-256; store hashes, never tokens)", name, line, len(fields[1]))
		}
		if _, err := hex.Decode(h[:], []byte(fields[1])); err != nil {
			return nil, fmt.Errorf("tokens file %s line %d: the hash is not 64 hex digits (a SHA-256; store hashes, never tokens)", name, line)
		}
		if prev, ok := t.roles[h]; ok && prev != role {
			return nil, fmt.Errorf("tokens file %s line %d: the same token is listed as %s and %s", name, line, prev, role)
		}
		t.roles[h] = role
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tokens file %s: %w", name, err)
	}
	return t, nil
}

// LoadTokens reads the tokens file at path (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening tokens file: %w", err)
	}
	defer f.Close()
	return ParseTokens(f, path)
}

// NewToken returns a fresh random token for role and the tokens-file line
// that admits it (the token's hash, not the token).
func NewToken(role string) (token, line string, err error) {
	r, err := tokenRole(role)
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

// lookup returns the role of token and a name for the audit log (a short
// prefix of its hash: enough to tell tokens apart, useless to an attacker).
func (t *Tokens) lookup(token string) (pki.Role, string, bool) {
	if t == nil || token == "" {
		return "", "", false
	}
	sum := sha256.Sum256([]byte(token))
	role, ok := t.roles[sum]
	return role, "token:" + hex.EncodeToString(sum[:4]), ok
}

// caller is who made a request.
type caller struct {
	// who names the caller in logs and the page footer.
	who  string
	role pki.Role
	// how says how the role was decided, for the footer.
	how string
}

func (c caller) canRead() bool {
	return c.role == pki.RoleViewer || c.role == pki.RoleOperator || c.role == pki.RoleCoordinator
}

func (c caller) canWrite() bool { return c.role == pki.RoleOperator }

// errNoCredentials: nothing identifies the caller.
var errNoCredentials = errors.New("no credentials: present a bearer token or a client certificate")

// identify decides the caller's role. A presented token wins (so a viewer
// token is a viewer even on loopback); then a verified client
// certificate; then a loopback connection without TLS, which is the
// user's own machine (loraft local): an operator; then a plain connection
// from elsewhere to a coordinator without tokens (--insecure): an operator,
// as on its gRPC API. Anything else is unidentified.
func (h *Handler) identify(r *http.Request) (caller, error) {
	token, fromCookie := bearer(r)
	if token != "" {
		role, name, ok := h.cfg.Tokens.lookup(token)
		if !ok {
			if fromCookie {
				return caller{}, fmt.Errorf("the login cookie's token: %w", ErrBadToken)
			}
			return caller{}, fmt.Errorf("the bearer token: %w", ErrBadToken)
		}
		return caller{who: name, role: role, how: "token"}, nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		id, err := pki.FromConnectionState(*r.TLS)
		if err != nil {
			return caller{}, fmt.Errorf("client certificate: %w", err)
		}
		return caller{who: id.String(), role: id.Role, how: "certificate"}, nil
	}
	if r.TLS == nil && loopback(r.RemoteAddr) {
		return caller{who: "local", role: pki.RoleOperator, how: "loopback"}, nil
	}
	if r.TLS == nil && h.cfg.Tokens == nil {
		// A plain listener off loopback exists only with --insecure, where
		// the gRPC API lets everyone do everything too.
		return caller{who: "insecure", role: pki.RoleOperator, how: "insecure"}, nil
	}
	return caller{}, errNoCredentials
}

// bearer returns the token from the Authorization header or else the login cookie.
func bearer(r *http.Request) (token string, fromCookie bool) {
	if a := r.Header.Get("Authorization"); a != "" {
		if t, ok := strings.CutPrefix(a, "Bearer "); ok {
			return strings.TrimSpace(t), false
		}
		return a, false // not a bearer token: refused as malformed
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value, true
	}
	return "", false
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
