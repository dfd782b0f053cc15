package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/loraft/loraft/coordinator/authz"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpListener is the coordinator's HTTP side: /metrics and the handlers
// Config.HTTPHandlers mounts.
type httpListener struct {
	srv    *http.Server
	lis    net.Listener
	scheme string
}

// openHTTP listens on cfg.HTTPAddr (HTTPS with cfg.ServerTLS) and builds the
// server; serveHTTP starts it. It is called by Open once c is complete.
func (c *Coordinator) openHTTP() (*httpListener, error) {
	cfg := c.cfg
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator HTTP listener on %s: %w", cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", authz.RequireHTTP(cfg.Logger, promhttp.HandlerFor(c.metrics.reg,
		promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn), Registry: c.metrics.reg}), authz.ReadRoles()...))
	if cfg.HTTPHandlers != nil {
		cfg.HTTPHandlers(c, mux)
	}
	// Long-lived handlers (server-sent events) watch the request's context:
	// it ends when Close starts shutting the listener down.
	base, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
	srv.RegisterOnShutdown(cancel)
	h := &httpListener{srv: srv, lis: lis, scheme: "http"}
	if cfg.ServerTLS != nil {
		tc := cfg.ServerTLS.Clone()
		// Browsers have no client certificate: ask for one, verify it when
		// given, and let authz.HTTPCaller decide what an anonymous caller gets.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		tc.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = tc
		h.lis, h.scheme = tls.NewListener(lis, tc), "https"
	}
	return h, nil
}

// serveHTTP serves h until Close; an early end goes to c.failed.
func (c *Coordinator) serveHTTP(h *httpListener) {
	defer c.wg.Done()
	if err := h.srv.Serve(h.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		c.cfg.Logger.Error("coordinator HTTP listener stopped serving", "id", c.cfg.ID, "addr", h.lis.Addr().String(), "err", err)
		select {
		case c.failed <- fmt.Errorf("coordinator %s HTTP listener on %s: %w", c.cfg.ID, h.lis.Addr(), err):
		default: // the API's failure is already there: one is enough to exit
		}
	}
}

// closeHTTP stops the listener, giving in-flight requests drainTimeout.
func (h *httpListener) close() {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.srv.Close()
	}
}

// HTTPAddr is the address the HTTP listener listens on (with the port
// chosen when the configured one was 0), or "" without one.
func (c *Coordinator) HTTPAddr() string {
	if c.http == nil {
		return ""
	}
	return c.http.lis.Addr().String()
}

// HTTPURL is the HTTP listener's root URL, http:// or https://, or "".
func (c *Coordinator) HTTPURL() string {
	if c.http == nil {
		return ""
	}
	return c.http.scheme + "://" + c.HTTPAddr() + "/"
}
