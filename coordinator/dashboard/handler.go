package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

//go:embed static
var staticFS embed.FS

//go:embed templates/*.html
var templateFS embed.FS

// UPlotVersion is the vendored uPlot release (static/vendor/uplot-<version>, MIT licence).
const UPlotVersion = "1.6.32"

// ActionHeader must be set to "1" on every write: a cross-site form cannot
// set a custom header, and the dashboard approves no CORS preflight, so a
// write can only come from its own pages (or a script holding credentials).
const ActionHeader = "X-Loraft-Action"

// Config configures a Handler.
type Config struct {
	// Backend is the coordinator the dashboard shows (required).
	Backend Backend
	// Tokens are the bearer tokens accepted for browsers and scripts (nil: none).
	Tokens *Tokens
	// Logger receives the audit log and refusals (nil: slog.Default()).
	Logger *slog.Logger
	// Store is the checkpoint store the trial page's pull command names
	// ("": the command reads $LORAFT_STORE).
	Store string
	// Interval is how often a sweep's event stream looks for a change, and
	// Run samples live progress (0: 500 ms).
	Interval time.Duration
	// MaxStreams bounds the open event streams (0: DefaultMaxStreams);
	// more are refused with 503 and the page falls back to retrying.
	MaxStreams int
}

// DefaultMaxStreams is Config.MaxStreams's default: each stream looks at
// its sweep every Interval, so streams cost the coordinator CPU.
const DefaultMaxStreams = 64

// Handler serves the dashboard. It is an http.Handler for every path but
// the ones its host mounts beside it (such as /metrics). Close ends its
// event streams and Run.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	watch  *watcher
	pages  *template.Template
	login  *template.Template
	assets map[string]string // file → its URL with a content hash
	static http.Handler

	streams chan struct{} // a slot per open event stream

	done      chan struct{}
	closeOnce sync.Once
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Backend == nil {
		return nil, errors.New("dashboard config: Backend is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard static files: %w", err)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), watch: newWatcher(), assets: map[string]string{},
		static: http.StripPrefix("/static/", http.FileServerFS(sub)), streams: make(chan struct{}, cfg.MaxStreams), done: make(chan struct{})}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.assets[p] = "/static/" + p + "?v=" + hex.EncodeToString(sum[:6])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard static files: %w", err)
	}
	funcs := template.FuncMap{"asset": func(p string) (string, error) {
		u, ok := h.assets[p]
		if !ok {
			return "", fmt.Errorf("no embedded asset %s", p)
		}
		return u, nil
	}}
	if h.pages, err = template.New("page.html").Funcs(funcs).ParseFS(templateFS, "templates/page.html"); err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	if h.login, err = template.New("login.html").Funcs(funcs).ParseFS(templateFS, "templates/login.html"); err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	m := h.mux
	m.HandleFunc("GET /static/", h.serveStatic)
	m.HandleFunc("GET /login", h.loginPage)
	m.HandleFunc("POST /login", h.loginPost)
	m.HandleFunc("POST /logout", h.logout)

	m.HandleFunc("GET /{$}", h.page("sweeps", "Sweeps", false))
	m.HandleFunc("GET /sweeps/{name}", h.page("sweep", "Sweep", true))
	m.HandleFunc("GET /trials/{name}", h.page("trial", "Trial", true))
	m.HandleFunc("GET /trainers", h.page("trainers", "Trainers", false))
	m.HandleFunc("GET /raft", h.page("raft", "Raft group", false))

	m.HandleFunc("GET /api/session", h.read(h.apiSession))
	m.HandleFunc("GET /api/sweeps", h.read(h.apiSweeps))
	m.HandleFunc("GET /api/sweeps/{name}", h.read(h.apiSweep))
	m.HandleFunc("GET /api/sweeps/{name}/events", h.read(h.apiSweepEvents))
	m.HandleFunc("GET /api/trials/{name}", h.read(h.apiTrial))
	m.HandleFunc("GET /api/trainers", h.read(h.apiTrainers))
	m.HandleFunc("GET /api/raft", h.read(h.apiRaft))
	m.HandleFunc("POST /api/sweeps/{name}/cancel", h.write("CancelSweep", "sweep", h.cfg.Backend.CancelSweep))
	m.HandleFunc("POST /api/trials/{name}/resume", h.write("ResumeRun", "trial", h.cfg.Backend.ResumeRun))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
}

// ServeHTTP serves the dashboard.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	// Everything is served from here: no other origin is ever needed.
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'")
	h.mux.ServeHTTP(w, r)
}

// Close ends the open event streams and Run. Pending requests finish.
func (h *Handler) Close() { h.closeOnce.Do(func() { close(h.done) }) }

// Run samples the live progress of every unfinished sweep each Interval,
// so loss curves and events fill in while no page is open, until ctx ends
// or Close is called. It is optional: the pages sample what they load.
func (h *Handler) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	active := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-t.C:
		}
		next := map[string]bool{}
		for _, sw := range h.cfg.Backend.State().GetSweeps() {
			open := unfinished(sw)
			if !open && !active[sw.GetName()] {
				continue // finished before the last look too: nothing new
			}
			next[sw.GetName()] = open
			st, err := h.cfg.Backend.Sweep(ctx, sw.GetName())
			if err == nil {
				h.watch.observe(st, time.Now())
			}
		}
		active = next
	}
}

func unfinished(sw *pb.Sweep) bool {
	for _, t := range sw.GetTrials() {
		if s := t.GetState(); s == pb.TrialState_TRIAL_STATE_PENDING || s == pb.TrialState_TRIAL_STATE_RUNNING {
			return true
		}
	}
	return false
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	// URLs carry a content hash (?v=), so a browser may keep them.
	if r.URL.Query().Get("v") != "" {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	h.static.ServeHTTP(w, r)
}

// pageData fills the shell template.
type pageData struct {
	Page, Title, Name string
	Chart             bool
	CanWrite          bool
	Who, Mode         string
	SignedIn          bool
	Node              string
}

func (h *Handler) page(page, title string, named bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.identify(r)
		if err != nil {
			if errors.Is(err, ErrBadToken) {
				clearCookie(w, r)
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !c.canRead() {
			http.Error(w, fmt.Sprintf("%s (role %s) may not read the dashboard", c.who, c.role), http.StatusForbidden)
			return
		}
		d := pageData{Page: page, Title: title, CanWrite: c.canWrite(), Who: c.who, Mode: mode(c), SignedIn: c.how == "token",
			Chart: page == "sweep" || page == "trial", Node: h.cfg.Backend.Raft().ID}
		if named {
			d.Name = r.PathValue("name")
			d.Title = title + " " + d.Name
			if !h.exists(r.Context(), page, d.Name) {
				w.WriteHeader(http.StatusNotFound)
				d.Title = title + " " + d.Name + " not found"
			}
		}
		var buf bytes.Buffer
		if err := h.pages.Execute(&buf, d); err != nil {
			h.log.Error("rendering a dashboard page", "page", page, "err", err)
			http.Error(w, "rendering the page failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	}
}

func (h *Handler) exists(ctx context.Context, page, name string) bool {
	if page == "sweep" {
		_, err := h.cfg.Backend.Sweep(ctx, name)
		return err == nil
	}
	_, _, ok := findTrial(h.cfg.Backend.State(), name)
	return ok
}

func findTrial(st *pb.State, name string) (*pb.Sweep, *pb.Trial, bool) {
	for _, sw := range st.GetSweeps() {
		for _, t := range sw.GetTrials() {
			if t.GetName() == name {
				return sw, t, true
			}
		}
	}
	return nil, nil, false
}

// mode says in the footer how the caller's role was decided.
func mode(c caller) string {
	switch c.how {
	case "loopback":
		return "loopback without TLS: everyone on this machine is an operator (it is your own machine)"
	case "insecure":
		return "plain HTTP without tokens (--insecure): everyone who can reach this port is an operator"
	case "token":
		return fmt.Sprintf("signed in with a %s token (%s)", c.role, c.who)
	}
	return fmt.Sprintf("client certificate %s (%s)", c.who, c.role)
}

// read wraps an API read: the caller must be identified and may read.
func (h *Handler) read(fn func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.identify(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="loraft"`)
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		if !c.canRead() {
			writeError(w, http.StatusForbidden, fmt.Errorf("%s (role %s) may not read the dashboard", c.who, c.role))
			return
		}
		fn(w, r, c)
	}
}

func (h *Handler) apiSession(w http.ResponseWriter, _ *http.Request, c caller) {
	writeJSON(w, map[string]any{"who": c.who, "role": c.role, "can_write": c.canWrite(), "mode": mode(c)})
}

func (h *Handler) apiSweeps(w http.ResponseWriter, _ *http.Request, _ caller) {
	v := sweepsView{Sweeps: []sweepSummary{}}
	for _, sw := range h.cfg.Backend.State().GetSweeps() {
		v.Sweeps = append(v.Sweeps, summarize(sw))
	}
	writeJSON(w, v)
}

func (h *Handler) sweep(ctx context.Context, name string) (sweepView, error) {
	st, err := h.cfg.Backend.Sweep(ctx, name)
	if err != nil {
		return sweepView{}, err
	}
	h.watch.observe(st, time.Now())
	return h.watch.sweepView(st, !st.GetStale()), nil
}

func (h *Handler) apiSweep(w http.ResponseWriter, r *http.Request, _ caller) {
	v, err := h.sweep(r.Context(), r.PathValue("name"))
	if err != nil {
		writeStatusError(w, err)
		return
	}
	writeJSON(w, v)
}

// keepAlive is how long an unchanged event stream stays silent before a
// comment line keeps proxies from closing it.
const keepAlive = 15 * time.Second

// curvesEvery is how often at most the event stream sends a sweep's
// curves: they are most of its bytes and change with every heartbeat.
const curvesEvery = 5 * time.Second

// apiSweepEvents streams the sweep view as server-sent events: one "data:"
// line of JSON (the view without its curves) whenever it changes, looked
// at every Interval, and a "curves" event with the curves when they
// changed, at most every curvesEvery.
func (h *Handler) apiSweepEvents(w http.ResponseWriter, r *http.Request, _ caller) {
	name := r.PathValue("name")
	ctx := r.Context()
	if _, err := h.cfg.Backend.Sweep(ctx, name); err != nil {
		writeStatusError(w, err)
		return
	}
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%d event streams are open, the most this coordinator serves", cap(h.streams)))
		return
	}
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	var last, lastCurves []byte
	var curvesAt time.Time
	quiet := time.Now()
	for {
		v, err := h.sweep(ctx, name)
		var msg []byte
		switch {
		case err != nil:
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			msg = append(append([]byte("event: problem\ndata: "), b...), "\n\n"...)
		default:
			curves := v.Curves
			v.Curves = nil
			b, merr := json.Marshal(v)
			if merr != nil {
				return
			}
			if !bytes.Equal(b, last) {
				last = b
				msg = append(append([]byte("data: "), b...), "\n\n"...)
			}
			if time.Since(curvesAt) >= curvesEvery {
				if c, _ := json.Marshal(curves); !bytes.Equal(c, lastCurves) {
					lastCurves, curvesAt = c, time.Now()
					msg = append(append(append(msg, "event: curves\ndata: "...), c...), "\n\n"...)
				}
			}
		}
		if msg == nil && time.Since(quiet) > keepAlive {
			msg = []byte(": keep-alive\n\n")
		}
		if msg != nil {
			if _, err := w.Write(msg); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			quiet = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-t.C:
		}
	}
}

func (h *Handler) apiTrial(w http.ResponseWriter, r *http.Request, _ caller) {
	name := r.PathValue("name")
	sw, _, ok := findTrial(h.cfg.Backend.State(), name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("trial %s: not found", name))
		return
	}
	st, err := h.cfg.Backend.Sweep(r.Context(), sw.GetName())
	if err != nil {
		writeStatusError(w, err)
		return
	}
	h.watch.observe(st, time.Now())
	for _, t := range st.GetSweep().GetTrials() {
		if t.GetName() == name {
			writeJSON(w, h.watch.trialView(st, t, !st.GetStale(), h.cfg.Store))
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("trial %s: not found", name))
}

func (h *Handler) apiTrainers(w http.ResponseWriter, _ *http.Request, _ caller) {
	writeJSON(w, trainersFrom(h.cfg.Backend.State(), h.cfg.Backend.Trainers(), h.watch, time.Now()))
}

func (h *Handler) apiRaft(w http.ResponseWriter, _ *http.Request, _ caller) {
	writeJSON(w, raftFrom(h.cfg.Backend.Raft(), h.cfg.Backend.State()))
}

// maxAuditField bounds a name in the audit log (the backend validates it).
const maxAuditField = 128

// write wraps an operator's action on the named object: the caller must
// be an operator, the request must come from the dashboard's own origin
// and carry ActionHeader; every attempt is audited like a gRPC write.
func (h *Handler) write(method, key string, do func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		name := r.PathValue("name")
		audit := func(who string, code codes.Code) {
			h.log.Info("audit", "who", who, "method", method, key, cut(name), "code", code.String(),
				"duration", time.Since(start), "via", "dashboard")
		}
		c, err := h.identify(r)
		if err != nil {
			h.log.Warn("permission denied", "who", "unidentified", "method", method, "why", err.Error(), "via", "dashboard")
			audit("unidentified", codes.Unauthenticated)
			w.Header().Set("WWW-Authenticate", `Bearer realm="loraft"`)
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		if why := forged(r); why != "" {
			h.log.Warn("permission denied", "who", c.who, "method", method, "why", why, "via", "dashboard")
			audit(c.who, codes.PermissionDenied)
			writeError(w, http.StatusForbidden, errors.New(why))
			return
		}
		if !c.canWrite() {
			why := fmt.Sprintf("role %s, want operator", c.role)
			h.log.Warn("permission denied", "who", c.who, "method", method, "why", why, "via", "dashboard")
			audit(c.who, codes.PermissionDenied)
			writeError(w, http.StatusForbidden, fmt.Errorf("%s may not call %s: %s", c.who, method, why))
			return
		}
		err = do(withCaller(r.Context(), c), name)
		audit(c.who, status.Code(err))
		if err != nil {
			writeStatusError(w, err)
			return
		}
		writeJSON(w, map[string]any{"ok": true})
	}
}

func cut(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	return s[:maxAuditField] + "…"
}

// forged says why a write does not look like it came from the dashboard's
// own page ("" when it does): ActionHeader missing, or a browser's Origin
// or Sec-Fetch-Site naming another site.
func forged(r *http.Request) string {
	if r.Header.Get(ActionHeader) != "1" {
		return "missing the " + ActionHeader + ": 1 header"
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		return "cross-origin request from " + cut(o)
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return "cross-site request (Sec-Fetch-Site: " + cut(s) + ")"
	}
	return ""
}

func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && u.Host == r.Host
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.renderLogin(w, http.StatusOK, safeNext(r.URL.Query().Get("next")), "")
}

func (h *Handler) renderLogin(w http.ResponseWriter, code int, next, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := h.login.Execute(w, map[string]any{"Next": next, "Problem": problem, "Tokens": h.cfg.Tokens != nil}); err != nil {
		h.log.Error("rendering the login page", "err", err)
	}
}

// loginPost checks a token and keeps it in an HttpOnly, SameSite=Strict
// cookie, so scripts cannot read it and other sites cannot send it.
func (h *Handler) loginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10) // a token and a path
	next := safeNext(r.FormValue("next"))
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		h.renderLogin(w, http.StatusForbidden, next, "cross-origin sign-in refused")
		return
	}
	token := strings.TrimSpace(r.FormValue("token"))
	role, who, ok := h.cfg.Tokens.Lookup(token)
	if !ok {
		h.log.Warn("dashboard sign-in refused", "why", "unknown token", "remote", r.RemoteAddr)
		h.renderLogin(w, http.StatusUnauthorized, next, "That token is not in this coordinator's tokens file.")
		return
	}
	h.log.Info("dashboard sign-in", "who", who, "role", role, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int((7 * 24 * time.Hour).Seconds())})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		http.Error(w, "cross-origin sign-out refused", http.StatusForbidden)
		return
	}
	clearCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// safeNext keeps a redirect target on this site: a local absolute path.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	if p := path.Clean(strings.SplitN(next, "?", 2)[0]); p == "/login" {
		return "/"
	}
	return next
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("encoding the answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeErrorJSON(w, code, map[string]string{"error": err.Error()})
}

func writeErrorJSON(w http.ResponseWriter, code int, v map[string]string) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeStatusError answers a backend's gRPC status error with the HTTP
// code that means the same; a refusal for want of a leader names the
// leader's API address when one is known, as the gRPC API's LeaderHint does.
func writeStatusError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		code = http.StatusConflict
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	case codes.Canceled:
		code = 499 // the client went away
	}
	body := map[string]string{"error": st.Message(), "code": st.Code().String()}
	for _, d := range st.Details() {
		if hint, ok := d.(*pb.LeaderHint); ok {
			body["leader_api"] = hint.GetApiAddress()
			if hint.GetApiAddress() != "" {
				body["error"] += " (the leader's API is " + hint.GetApiAddress() + ")"
			}
		}
	}
	writeErrorJSON(w, code, body)
}
