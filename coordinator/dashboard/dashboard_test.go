package dashboard_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/bearer"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// webSweep is a valid 2 × 2 rank × alpha sweep of one trainer per trial.
func webSweep(name string) *pb.Sweep {
	sw := &pb.Sweep{Name: name, DatasetSha256: "web", TrainersPerTrial: 1, Metric: "macro_f1", CreatedUnixMs: time.Now().UnixMilli(),
		Train: &pb.TrainSettings{Epochs: 2, BatchSize: 8, MaxLen: 128, EvalEvery: 5, CheckpointEvery: 5, Quant: "nf4", SplitSeed: 42, SplitRatios: "80/10/10"}}
	i := 0
	for _, rank := range []int32{8, 16} {
		for _, alpha := range []float64{16, 32} {
			sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("%s-t%03d", name, i), Index: int32(i), Rank: rank, Alpha: alpha,
				LearningRate: 2e-4, LoraDropout: 0.05, TargetModules: "query,value", Seed: 42})
			i++
		}
	}
	return sw
}

// fixture is a real coordinator group (one member unless asked) with a
// launched sweep, one trainer running a trial of it with live progress and
// a committed checkpoint, and the dashboard on an httptest server.
type fixture struct {
	cluster *coordinatortest.Cluster
	client  *coordinator.Client
	h       *dashboard.Handler
	srv     *httptest.Server
	logs    *syncbuf.Buffer
	trial   string // the running trial
	gen     uint64
}

type fixtureOpts struct {
	members int
	tokens  *dashboard.Tokens
	// on picks the member that serves the dashboard (default: the leader).
	on  func(leader int) int
	tls *tls.Config
	// maxStreams is Config.MaxStreams.
	maxStreams int
}

func newFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	if o.members == 0 {
		o.members = 1
	}
	// A lease far longer than the test: the trainer's trial stays put
	// unless the test moves it.
	cl := coordinatortest.NewCluster(t, o.members, coordinatortest.Options{Configure: func(_ int, c *coordinator.Config) {
		c.Scheduler = coordinator.SchedulerConfig{Lease: 5 * time.Minute, Tick: 20 * time.Millisecond}
	}})
	leader := cl.WaitForLeader(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := &fixture{cluster: cl, client: cl.Client(), logs: &syncbuf.Buffer{}}
	if err := f.client.LaunchSweep(ctx, webSweep("web")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "tr1", Address: "127.0.0.1:7501"}}); err != nil {
		t.Fatal(err)
	}
	var a *pb.Assignment
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		resp, err := f.client.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "tr1"})
		if err != nil {
			return err
		}
		if a = resp.GetAssignment(); a == nil {
			return fmt.Errorf("tr1 has no assignment yet")
		}
		return nil
	})
	f.trial, f.gen = a.GetTrial().GetName(), a.GetGeneration()
	f.progress(t, 3, 1.5)
	if _, err := f.client.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: f.trial, Generation: f.gen, Step: 5, HasMetric: true, Metric: 0.31}); err != nil {
		t.Fatal(err)
	}
	on := leader
	if o.on != nil {
		on = o.on(leader)
	}
	h, err := dashboard.New(dashboard.Config{Backend: coordinator.DashboardBackend(cl.Members[on]), Tokens: o.tokens,
		Logger: slog.New(slog.NewTextHandler(f.logs, nil)), Interval: 50 * time.Millisecond, Store: "s3://ckpt/runs", MaxStreams: o.maxStreams})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	if o.tls != nil {
		f.srv = httptest.NewUnstartedServer(h)
		f.srv.TLS = o.tls
		f.srv.StartTLS()
	} else {
		f.srv = httptest.NewServer(h)
	}
	t.Cleanup(f.srv.Close)
	t.Cleanup(h.Close) // runs first: ends the event streams the server waits for
	return f
}

// progress reports live progress of the fixture's trial through a heartbeat.
func (f *fixture) progress(t *testing.T, step int64, loss float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := f.client.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "tr1", Trial: f.trial, Generation: f.gen,
		Progress: &pb.Progress{Step: step, Steps: 20, Loss: loss, EtaMs: 4000}})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) sweep(t *testing.T) *pb.Sweep {
	t.Helper()
	for _, sw := range f.cluster.Members[f.cluster.WaitForLeader(10*time.Second)].Node().State().GetSweeps() {
		if sw.GetName() == "web" {
			return sw
		}
	}
	t.Fatal("sweep web is gone")
	return nil
}

type req struct {
	method, path string
	header       map[string]string
}

func (f *fixture) do(t *testing.T, c *http.Client, r req) (int, http.Header, string) {
	t.Helper()
	if c == nil {
		c = f.srv.Client()
	}
	hr, err := http.NewRequest(r.method, f.srv.URL+r.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	// Redirects are answers too: the login redirect is under test.
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cc.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestPagesAndAPIs: each page and API answers 200 with the content its
// page renders from, on loopback without TLS (operator), and unknown
// names answer 404.
func TestPagesAndAPIs(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	cases := []struct {
		path     string
		code     int
		ctype    string
		contains []string
	}{
		{"/", 200, "text/html", []string{`data-page="sweeps"`, "/static/app.js?v=", "everyone on this machine is an operator"}},
		{"/sweeps/web", 200, "text/html", []string{`data-page="sweep"`, `data-name="web"`, "uplot-1.6.32/uPlot.iife.min.js", `data-write="true"`}},
		{"/trials/" + f.trial, 200, "text/html", []string{`data-page="trial"`, f.trial}},
		{"/trainers", 200, "text/html", []string{`data-page="trainers"`}},
		{"/raft", 200, "text/html", []string{`data-page="raft"`}},
		{"/login", 200, "text/html", []string{"accepts no tokens"}},
		{"/sweeps/nope", 404, "text/html", []string{"not found"}},
		{"/trials/nope", 404, "text/html", []string{"not found"}},
		{"/api/sweeps", 200, "application/json", []string{`"name":"web"`, `"trials":4`, `"best":0.31`, `"best_trial":"` + f.trial}},
		{"/api/sweeps/web", 200, "application/json", []string{`"name":"web"`, `"step":3`, `"loss":1.5`, `"eta_ms":4000`, `"trainers":["tr1"]`,
			`"ranks":[8,16]`, `"alphas":[16,32]`, `"metric":[{"step":5,"value":0.31}]`}},
		{"/api/trials/" + f.trial, 200, "application/json", []string{
			`"pull":"loraft adapter pull --store s3://ckpt/runs --run ` + f.trial + ` --out out/` + f.trial + `"`,
			`"checkpoints":[{"step":5,"metric":0.31,"committed":true,"latest":true,"size":null}]`}},
		{"/api/trainers", 200, "application/json", []string{`"id":"tr1"`, `"address":"127.0.0.1:7501"`, `"trial":"` + f.trial + `"`, `"lease_ms":300000`}},
		{"/api/raft", 200, "application/json", []string{`"state":"Leader"`, `"leader_id":"n1"`, `"self":true`, `"api_addr":"` + f.cluster.APIAddrs[0] + `"`}},
		{"/api/session", 200, "application/json", []string{`"role":"operator"`, `"can_write":true`}},
		{"/api/sweeps/nope", 404, "application/json", []string{"not found"}},
		{"/api/trials/nope", 404, "application/json", []string{"not found"}},
		{"/api/nope", 404, "application/json", []string{"no API endpoint"}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.path, "/", "_"), func(t *testing.T) {
			code, hd, body := f.do(t, nil, req{method: "GET", path: c.path})
			if code != c.code || !strings.HasPrefix(hd.Get("Content-Type"), c.ctype) {
				t.Fatalf("GET %s: %d %s, want %d %s\n%s", c.path, code, hd.Get("Content-Type"), c.code, c.ctype, body)
			}
			for _, want := range c.contains {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s: no %q in\n%s", c.path, want, body)
				}
			}
			if csp := hd.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
			}
		})
	}
	// The JSON decodes into what the page needs: every trial, a heat map
	// cell for the reported metric, the loss point the heartbeat carried.
	_, _, body := f.do(t, nil, req{method: "GET", path: "/api/sweeps/web"})
	var v struct {
		Trials []struct{ Name, State string }
		Heat   struct{ Cells [][]*float64 }
		Curves []struct {
			Trial string
			Loss  []struct{ Step int64 }
		}
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Trials) != 4 || len(v.Heat.Cells) != 2 || len(v.Curves) != 4 {
		t.Fatalf("sweep view: %d trials, %d heat rows, %d curves", len(v.Trials), len(v.Heat.Cells), len(v.Curves))
	}
	filled := 0
	for _, row := range v.Heat.Cells {
		for _, c := range row {
			if c != nil {
				filled++
				if *c != 0.31 {
					t.Errorf("heat cell %v, want 0.31", *c)
				}
			}
		}
	}
	if filled != 1 {
		t.Errorf("%d heat cells filled, want 1", filled)
	}
	for _, c := range v.Curves {
		if (c.Trial == f.trial) != (len(c.Loss) == 1) {
			t.Errorf("curve of %s has %d loss points", c.Trial, len(c.Loss))
		}
	}
}

// events reads a server-sent event stream, sending each data payload.
func events(t *testing.T, f *fixture, path string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hr, err := http.NewRequestWithContext(ctx, "GET", f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan string, 64)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<22)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				select {
				case out <- d:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// await reads events until one satisfies ok, or fails after within.
func await(t *testing.T, ch <-chan string, within time.Duration, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case d, open := <-ch:
			if !open {
				t.Fatalf("event stream ended before %s", what)
			}
			if ok(d) {
				return
			}
		case <-deadline:
			t.Fatalf("no event with %s within %v", what, within)
		}
	}
}

// TestSweepEventsFollowChanges: the event stream pushes the sweep again
// when a step advances and when the sweep is cancelled.
func TestSweepEventsFollowChanges(t *testing.T) {
	f := newFixture(t, fixtureOpts{maxStreams: 1})
	ch := events(t, f, "/api/sweeps/web/events")
	// One stream is the most this handler serves: a second waits its turn.
	if code, hd, body := f.do(t, nil, req{method: "GET", path: "/api/sweeps/web/events"}); code != 503 || hd.Get("Retry-After") == "" {
		t.Fatalf("a stream past MaxStreams: %d %s", code, body)
	}
	await(t, ch, 10*time.Second, "the first view", func(d string) bool { return strings.Contains(d, `"step":3,`) })
	f.progress(t, 7, 1.1)
	await(t, ch, 10*time.Second, "step 7", func(d string) bool { return strings.Contains(d, `"step":7,`) && strings.Contains(d, `"loss":1.1`) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.client.CancelSweep(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	await(t, ch, 10*time.Second, "the cancellation", func(d string) bool {
		return strings.Contains(d, `"cancelled":true`) && strings.Contains(d, `"states":{"CANCELLED":4}`) &&
			strings.Contains(d, `"kind":"cancelled","text":"sweep cancelled"`)
	})
}

func tokens(t *testing.T) (tok *dashboard.Tokens, viewer, operator string) {
	t.Helper()
	viewer, vline, err := bearer.New("viewer")
	if err != nil {
		t.Fatal(err)
	}
	operator, oline, err := bearer.New("operator")
	if err != nil {
		t.Fatal(err)
	}
	tok, err = dashboard.ParseTokens(strings.NewReader("# dashboard tokens\n"+vline+"\n\n"+oline+"\n"), "tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	return tok, viewer, operator
}

// TestWritesByRole: only an operator's request from the dashboard's own
// origin with the action header cancels or resumes; the refused ones
// change nothing; every attempt is in the audit log.
func TestWritesByRole(t *testing.T) {
	tok, viewer, operator := tokens(t)
	f := newFixture(t, fixtureOpts{tokens: tok})
	auth := func(token string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + token, dashboard.ActionHeader: "1"}
	}
	with := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range h {
			if a != k {
				out[a] = b
			}
		}
		return out
	}
	before := f.sweep(t)
	refused := []struct {
		name   string
		header map[string]string
		code   int
	}{
		{"viewer", auth(viewer), 403},
		{"bad token", auth("lrt_not-a-token"), 401},
		{"not bearer", with(auth(operator), "Authorization", "Basic b3A6b3A="), 401},
		{"no action header", map[string]string{"Authorization": "Bearer " + operator}, 403},
		{"other origin", with(auth(operator), "Origin", "http://evil.example"), 403},
		{"cross-site fetch", with(auth(operator), "Sec-Fetch-Site", "cross-site"), 403},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := f.do(t, nil, req{method: "POST", path: "/api/sweeps/web/cancel", header: c.header})
			if code != c.code {
				t.Fatalf("cancel as %s: %d %s, want %d", c.name, code, body, c.code)
			}
			if after := f.sweep(t); !proto.Equal(before, after) {
				t.Fatalf("a refused cancel changed the sweep:\n%v\n%v", before, after)
			}
		})
	}
	// A viewer reads.
	if code, _, body := f.do(t, nil, req{method: "GET", path: "/api/sweeps/web", header: auth(viewer)}); code != 200 {
		t.Fatalf("viewer GET: %d %s", code, body)
	}
	// A presented token wins over loopback trust; no token on loopback is the machine's operator.
	if _, _, body := f.do(t, nil, req{method: "GET", path: "/api/session", header: auth(viewer)}); !strings.Contains(body, `"role":"viewer"`) {
		t.Fatalf("viewer session: %s", body)
	}
	if code, _, body := f.do(t, nil, req{method: "GET", path: "/api/sweeps", header: map[string]string{"Authorization": "Bearer nope"}}); code != 401 {
		t.Fatalf("bad token GET: %d %s", code, body)
	}
	// The operator cancels (with the page's own Origin, as a browser sends it), then resumes one run.
	if code, _, body := f.do(t, nil, req{method: "POST", path: "/api/sweeps/web/cancel", header: with(auth(operator), "Origin", f.srv.URL)}); code != 200 {
		t.Fatalf("operator cancel: %d %s", code, body)
	}
	for _, tr := range f.sweep(t).GetTrials() {
		if tr.GetState() != pb.TrialState_TRIAL_STATE_CANCELLED {
			t.Errorf("after cancel %s is %s", tr.GetName(), tr.GetState())
		}
	}
	if code, _, body := f.do(t, nil, req{method: "POST", path: "/api/trials/" + f.trial + "/resume", header: auth(operator)}); code != 200 {
		t.Fatalf("operator resume: %d %s", code, body)
	}
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		for _, tr := range f.sweep(t).GetTrials() {
			if tr.GetName() == f.trial && tr.GetState() != pb.TrialState_TRIAL_STATE_CANCELLED {
				return nil
			}
		}
		return fmt.Errorf("%s is still cancelled", f.trial)
	})
	// The backend's refusals keep their meaning.
	if code, _, body := f.do(t, nil, req{method: "POST", path: "/api/sweeps/nope/cancel", header: auth(operator)}); code != 404 {
		t.Fatalf("cancel of an unknown sweep: %d %s", code, body)
	}
	logs := f.logs.String()
	for _, want := range []string{
		"msg=audit who=token:", "method=CancelSweep sweep=web code=PermissionDenied", "method=CancelSweep sweep=web code=Unauthenticated",
		"method=CancelSweep sweep=web code=OK", "method=ResumeRun trial=" + f.trial + " code=OK", "method=CancelSweep sweep=nope code=NotFound",
		"via=dashboard",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, viewer) || strings.Contains(logs, operator) {
		t.Error("a token is in the log")
	}
}

// TestLoginCookie: the login form checks the token and keeps it in an
// HttpOnly SameSite=Strict cookie that then identifies the browser; a bad
// token is refused, and pages send an unidentified browser to the form.
func TestLoginCookie(t *testing.T) {
	tok, viewer, _ := tokens(t)
	f := newFixture(t, fixtureOpts{tokens: tok})
	client := f.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	post := func(token string) *http.Response {
		resp, err := client.PostForm(f.srv.URL+"/login", url.Values{"token": {token}, "next": {"/sweeps/web"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("lrt_wrong"); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("bad token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp := post(viewer)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/sweeps/web" {
		t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || cookies[0].Name != dashboard.CookieName || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in cookie: %+v", cookies)
	}
	cookie := cookies[0].Name + "=" + cookies[0].Value
	code, _, body := f.do(t, nil, req{method: "GET", path: "/sweeps/web", header: map[string]string{"Cookie": cookie}})
	if code != 200 || !strings.Contains(body, "signed in with a viewer token") || !strings.Contains(body, `data-write="false"`) || !strings.Contains(body, "Sign out") {
		t.Fatalf("page with the cookie: %d\n%s", code, body)
	}
	// The cookie alone (no action header) writes nothing, and a viewer's not at all.
	code, _, _ = f.do(t, nil, req{method: "POST", path: "/api/sweeps/web/cancel", header: map[string]string{"Cookie": cookie, dashboard.ActionHeader: "1"}})
	if code != 403 {
		t.Fatalf("viewer cookie cancel: %d", code)
	}
	code, hd, _ := f.do(t, nil, req{method: "GET", path: "/sweeps/web", header: map[string]string{"Cookie": dashboard.CookieName + "=stale"}})
	if code != http.StatusSeeOther || !strings.HasPrefix(hd.Get("Location"), "/login?next=") {
		t.Fatalf("page with a stale cookie: %d to %q", code, hd.Get("Location"))
	}
}

// TestCertificateRoles: over TLS the client certificate names the role;
// a browser without one needs a token.
func TestCertificateRoles(t *testing.T) {
	ca := testpki.New(t)
	srvCfg := ca.ServerConfig(ca.IssueAs(t, pki.RoleCoordinator, "n1"))
	srvCfg.ClientAuth = tls.VerifyClientCertIfGiven
	tok, _, _ := tokens(t)
	f := newFixture(t, fixtureOpts{tokens: tok, tls: srvCfg})
	as := func(role pki.Role) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS13}
		if role != "" {
			cfg = ca.ClientConfig(ca.IssueAs(t, role, "someone"))
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	action := map[string]string{dashboard.ActionHeader: "1"}
	before := f.sweep(t)
	cases := []struct {
		role      pki.Role
		get, post int
	}{
		{"", 401, 401},
		{pki.RoleTrainer, 403, 403},
		{pki.RoleViewer, 200, 403},
		{pki.RoleOperator, 200, 200},
	}
	for _, c := range cases {
		cl := as(c.role)
		if code, _, body := f.do(t, cl, req{method: "GET", path: "/api/sweeps"}); code != c.get {
			t.Errorf("GET as %q: %d %s, want %d", c.role, code, body, c.get)
		}
		code, _, body := f.do(t, cl, req{method: "POST", path: "/api/sweeps/web/cancel", header: action})
		if code != c.post {
			t.Errorf("cancel as %q: %d %s, want %d", c.role, code, body, c.post)
		}
		if c.post != 200 && !proto.Equal(before, f.sweep(t)) {
			t.Fatalf("a refused cancel as %q changed the sweep", c.role)
		}
	}
	if !f.sweep(t).GetCancelled() {
		t.Error("the operator's cancel did not cancel the sweep")
	}
	if !strings.Contains(f.logs.String(), "who=loraft://operator/someone method=CancelSweep sweep=web code=OK") {
		t.Errorf("audit log:\n%s", f.logs.String())
	}
}

// TestFollowerAsksTheLeader: a follower's dashboard (plain HTTP on
// loopback, with coordinators speaking plaintext gRPC as loraft local's do)
// shows the leader's live progress and trainer leases, and forwards an
// operator's cancel to the leader.
func TestFollowerAsksTheLeader(t *testing.T) {
	f := newFixture(t, fixtureOpts{members: 3, on: func(l int) int { return (l + 1) % 3 }})
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		_, _, body := f.do(t, nil, req{method: "GET", path: "/api/sweeps/web"})
		if !strings.Contains(body, `"live":true`) || !strings.Contains(body, `"step":3`) || !strings.Contains(body, `"trainers":["tr1"]`) {
			return fmt.Errorf("follower's sweep view: %s", body)
		}
		if _, _, body := f.do(t, nil, req{method: "GET", path: "/api/trainers"}); !strings.Contains(body, `"live":true`) || !strings.Contains(body, `"lease_age_ms":`) {
			return fmt.Errorf("follower's trainers: %s", body)
		}
		return nil
	})
	code, _, body := f.do(t, nil, req{method: "POST", path: "/api/sweeps/web/cancel", header: map[string]string{dashboard.ActionHeader: "1"}})
	if code != 200 {
		t.Fatalf("cancel on a follower: %d %s, want 200", code, body)
	}
	if !f.sweep(t).GetCancelled() {
		t.Fatal("the cancel forwarded by the follower did not cancel the sweep")
	}
}
