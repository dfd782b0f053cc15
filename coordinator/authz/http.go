package authz

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/loraft/loraft/internal/pki"
)

// ReadRoles returns the roles that may read the cluster's state, the same
// as for the read RPCs: over HTTP, /metrics and the dashboard's pages.
func ReadRoles() []pki.Role { return slices.Clone(reads) }

// ErrUnauthenticated means an HTTPS request carried no credentials (no
// client certificate). It is answered 401, a refusal (ErrDenied) 403.
var ErrUnauthenticated = errors.New("no credentials (present a client certificate)")

// HTTPCaller decides who sent an HTTP request to a loraft listener and
// whether it may go on: the single place the coordinator's and trainers'
// HTTP endpoints take that decision.
//
//   - Plain HTTP (no TLS): the listener is loopback-only or was opened with
//     --insecure, so every caller may do everything, named Insecure.
//   - HTTPS: the client certificate, verified by the listener's
//     tls.VerifyClientCertIfGiven, names the role; it must be one of roles.
//     No certificate is ErrUnauthenticated, a wrong role or a certificate
//     without a loraft identity wraps ErrDenied.
//
// who names the caller for logs either way.
func HTTPCaller(r *http.Request, roles ...pki.Role) (who string, err error) {
	if r.TLS == nil {
		return Insecure, nil
	}
	if len(r.TLS.PeerCertificates) == 0 {
		return "anonymous", ErrUnauthenticated
	}
	id, err := pki.FromConnectionState(*r.TLS)
	if err != nil {
		return "unidentified (CN " + r.TLS.PeerCertificates[0].Subject.CommonName + ")", fmt.Errorf("%w: %w", ErrDenied, err)
	}
	if !slices.Contains(roles, id.Role) {
		return id.String(), fmt.Errorf("%w: role %s, want %s", ErrDenied, id.Role, roleList(roles))
	}
	return id.String(), nil
}

// RequireHTTP wraps h so that only callers HTTPCaller admits with roles
// reach it; the others get 401 or 403 and a WARN line in log (nil:
// slog.Default()).
func RequireHTTP(log *slog.Logger, h http.Handler, roles ...pki.Role) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	roles = slices.Clone(roles)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := HTTPCaller(r, roles...)
		if err != nil {
			log.Warn("permission denied", "who", who, "method", r.Method, "path", r.URL.Path, "why", err.Error())
			code := http.StatusForbidden
			if errors.Is(err, ErrUnauthenticated) {
				code = http.StatusUnauthorized
			}
			http.Error(w, fmt.Sprintf("%s may not %s %s: %v", who, r.Method, r.URL.Path, err), code)
			return
		}
		h.ServeHTTP(w, r)
	})
}
