package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/loraft/loraft/internal/bearer"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPOptions are the HTTP front's limits and credentials.
type HTTPOptions struct {
	// MaxBodyBytes caps a request body; a larger one is answered 413.
	MaxBodyBytes int64
	// Timeout bounds each classification; past it the answer is 504.
	Timeout time.Duration
	// Tokens are the bearer tokens accepted (internal/bearer's tokens
	// file; roles are ignored). When set, /v1/classify and /metrics need
	// one of them or a verified client certificate; /healthz and /readyz
	// stay open for probes.
	Tokens *bearer.Set
}

// DefaultHTTPOptions takes 1 MiB bodies and answers within 30 s.
func DefaultHTTPOptions() HTTPOptions {
	return HTTPOptions{MaxBodyBytes: 1 << 20, Timeout: 30 * time.Second}
}

// Disclaimer is in every answer.
const Disclaimer = "Screening and research aid only, never a diagnosis. Statements marked needs_review must be seen by a person."

// classifyRequest is POST /v1/classify's body.
type classifyRequest struct {
	Texts []string `json:"texts"`
}

type classifyResponse struct {
	Answer
	Disclaimer string `json:"disclaimer"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// Handler serves POST /v1/classify, /healthz, /readyz and /metrics.
func Handler(s *Service, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/classify", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		code := classify(s, o, w, r)
		s.metrics.observeRequest("http", fmt.Sprint(code), time.Since(start))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		m := s.Model()
		if m == nil {
			http.Error(w, "no model loaded yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", m.Name)
	})
	metrics := promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(o, r) {
			unauthorized(w)
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	return mux
}

// classify answers one POST /v1/classify and returns its status code.
func classify(s *Service, o HTTPOptions, w http.ResponseWriter, r *http.Request) int {
	if !authorized(o, r) {
		return unauthorized(w)
	}
	// The body must be JSON whatever its Content-Type says (curl -d sends
	// application/x-www-form-urlencoded).
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", o.MaxBodyBytes))
		}
		return writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
	}
	// encoding/json would turn invalid UTF-8 into U+FFFD and classify that:
	// refuse it instead, naming where it is.
	if !utf8.Valid(body) {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("body: invalid UTF-8 at byte %d", invalidAt(body)))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req classifyRequest
	if err := dec.Decode(&req); err != nil {
		return writeError(w, http.StatusBadRequest, "body: "+err.Error()+` (want {"texts": ["…"]})`)
	}
	if dec.More() {
		return writeError(w, http.StatusBadRequest, "body: more than one JSON value")
	}
	ctx, cancel := context.WithTimeout(r.Context(), o.Timeout)
	defer cancel()
	ans, err := s.Classify(ctx, req.Texts)
	switch {
	case err == nil:
	case errors.Is(err, ErrInvalid):
		return writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrOverloaded):
		w.Header().Set("Retry-After", "1")
		return writeError(w, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, ErrNotReady):
		return writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("not classified within %v", o.Timeout))
	case errors.Is(err, context.Canceled):
		return 499 // the client went away; nobody reads this
	default:
		return writeError(w, http.StatusInternalServerError, err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(classifyResponse{Answer: ans, Disclaimer: Disclaimer})
	return http.StatusOK
}

// invalidAt is the offset of the first byte of b that is not UTF-8.
func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// authorized: no tokens configured, a verified client certificate, or a
// bearer token in the tokens file.
func authorized(o HTTPOptions, r *http.Request) bool {
	if o.Tokens.Len() == 0 {
		return true
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	_, _, known := o.Tokens.Lookup(tok)
	return known
}

func unauthorized(w http.ResponseWriter) int {
	w.Header().Set("WWW-Authenticate", `Bearer realm="loraft serve"`)
	return writeError(w, http.StatusUnauthorized, "a bearer token or a client certificate is required")
}

func writeError(w http.ResponseWriter, code int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorResponse{Error: msg})
	return code
}
