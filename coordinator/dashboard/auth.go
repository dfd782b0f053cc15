package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/loraft/loraft/internal/bearer"

	"github.com/loraft/loraft/internal/pki"
)

// CookieName is the cookie the login form sets; it carries the token.
const CookieName = "loraft_token"

// ErrBadToken is wrapped by every refusal of a presented token.
var ErrBadToken = errors.New("unknown or malformed token")

// Tokens are the bearer tokens browsers and scripts may present, each with
// its role; internal/bearer owns the file format and keeps only hashes.
type Tokens = bearer.Set

// ParseTokens reads a tokens file (bearer.Parse) in which every line names
// its role: the dashboard never guesses one. name names the file in errors,
// which give the line but never its hash.
func ParseTokens(r io.Reader, name string) (*Tokens, error) {
	t, err := bearer.Parse(r, name)
	if err != nil {
		return nil, err
	}
	if err := t.RequireRoles(name); err != nil {
		return nil, err
	}
	return t, nil
}

// LoadTokens reads the tokens file at path (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	t, err := bearer.Load(path)
	if err != nil {
		return nil, err
	}
	if err := t.RequireRoles(path); err != nil {
		return nil, err
	}
	return t, nil
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
	token, fromCookie := presentedToken(r)
	if token != "" {
		role, name, ok := h.cfg.Tokens.Lookup(token)
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

// presentedToken returns the token from the Authorization header or else the login cookie.
func presentedToken(r *http.Request) (token string, fromCookie bool) {
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

// callerKey keys the caller of a write in its context.
type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns who made the dashboard write whose context ctx is
// (the name the audit log gives them) and their role, as the dashboard
// authorized them: a follower's backend forwards the write to the leader
// on their behalf. ok is false outside a dashboard write.
func CallerFrom(ctx context.Context) (who string, role pki.Role, ok bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c.who, c.role, ok
}
