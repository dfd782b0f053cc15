package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/localcluster"
	"github.com/loraft/loraft/internal/proc"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// The test in this file opens the dashboard of a running `loraft local` in
// Debian's chromium, headless, and checks what a person would see there.

// chromiumBinary finds Debian's chromium, or fails the test saying how to
// install it: a browser test that skips itself proves nothing.
func chromiumBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("Debian's chromium is not installed (%v): run `make setup` or `apt-get install --no-install-recommends chromium`", err)
	}
	return p
}

// browser is one headless chromium for one test, its tabs under ctx.
type browser struct {
	t   *testing.T
	ctx context.Context
	// page describes what a failed wait saw (the loraft side of the story).
	why func() string
}

// newBrowser starts chromium with a profile of the test's own. As root it
// needs --no-sandbox; the browser ends with the test.
func newBrowser(t *testing.T, why func() string) *browser {
	t.Helper()
	bin := chromiumBinary(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	b := &browser{t: t, ctx: ctx, why: why}
	b.start(ctx, "starting chromium "+bin)
	return b
}

// start makes the first Run on ctx, which opens its browser or tab for as
// long as ctx lives: a deadline on that Run would close it again, so the
// wait for it is bounded here instead.
func (b *browser) start(ctx context.Context, what string) {
	b.t.Helper()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			b.t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(60 * time.Second):
		b.t.Fatalf("%s: not done in 60s", what)
	}
}

// tab opens a tab. incognito gives it a browser context of its own, with
// its own cookies, as for a second person.
func (b *browser) tab(incognito bool) context.Context {
	b.t.Helper()
	var opts []chromedp.ContextOption
	if incognito {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(b.ctx, opts...)
	b.t.Cleanup(cancel)
	b.start(ctx, "opening a tab")
	return ctx
}

// do runs steps within limit.
func (b *browser) do(tab context.Context, what string, limit time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tab, limit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// pageText is what the tab shows, for failure messages.
func (b *browser) pageText(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return fmt.Sprintf("(page text: %v)", err)
	}
	return s
}

// wait polls the JavaScript expression in the tab until it is truthy,
// within limit (every 100 ms unless opts say otherwise), and returns its
// value; failing, it shows the page and the loraft output.
func wait[T any](b *browser, tab context.Context, what string, limit time.Duration, expr string, opts ...chromedp.PollOption) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(tab, limit+5*time.Second)
	defer cancel()
	if len(opts) == 0 {
		opts = []chromedp.PollOption{chromedp.WithPollingInterval(100 * time.Millisecond)}
	}
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expr, append(opts, chromedp.WithPollingTimeout(limit))...))
	if err != nil {
		b.t.Fatalf("%s: not within %s: %v\npage:\n%s\n%s", what, limit, err, b.pageText(tab), b.why())
	}
	return v
}

// eval evaluates a JavaScript expression (awaiting a promise) in the tab.
func eval[T any](b *browser, tab context.Context, what, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, b.pageText(tab))
	}
	return v
}

// screenshot saves the tab as name.png in $LORAFT_DASHBOARD_SHOTS, when
// set (for experiments/dashboard.md); otherwise it does nothing.
func (b *browser) screenshot(tab context.Context, name string) {
	b.t.Helper()
	dir := os.Getenv("LORAFT_DASHBOARD_SHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

// shownTrial is a row of the sweep page's trials table as the browser shows it.
type shownTrial struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Step  int64  `json:"step"` // -1: none shown
}

// rowsJS reads the trials table: each row's id is "t-<trial>", and its
// data attributes hold the state and step it shows.
const rowsJS = `Array.from(document.querySelectorAll("#trials tbody tr")).map(function (tr) {
  var step = parseInt(tr.dataset.step, 10);
  return { name: tr.id.replace(/^t-/, ""), state: tr.dataset.state, step: isNaN(step) ? -1 : step };
})`

// TestDashboardInBrowser runs `loraft local` with a viewer token and opens
// its printed dashboard URL in headless chromium: the sweep page lists
// every trial and its steps advance without a reload, the uPlot chart
// draws coloured curves, a viewer signed in with the token has no cancel
// button and is refused when it posts one anyway, and the local operator's
// cancel button (past its confirm dialog) cancels the sweep, after which
// loraft local ends saying so.
func TestDashboardInBrowser(t *testing.T) {
	chromiumBinary(t) // fail before starting anything
	dir := t.TempDir()
	// A viewer token, made as an operator would make one.
	out, err := run(t, "certs", "token", "--role", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	var viewer, line string
	for l := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "token: "); ok {
			viewer = v
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "tokens-file line: "); ok {
			line = v
		}
	}
	if viewer == "" || line == "" {
		t.Fatalf("certs token printed no token and line:\n%s", out)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Three trials on one trainer: one runs, two wait, and none finishes
	// before the test cancels the sweep (a step takes tens of ms).
	spec := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(spec, []byte(`name: browser
space:
  rank: [4, 8, 16]
  alpha: [16]
  learning_rate: [2.0e-3]
train:
  config: tiny
  epochs: 400
  batch_size: 16
  max_len: 16
  checkpoint_every: 100000
`), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	bin := testBinary(t)
	local := &proc.Proc{Name: "loraft local", Bin: bin, Log: filepath.Join(dir, "local.log"), Env: []string{"LORAFT_CACHE=" + filepath.Join(dir, "cache")},
		Args: []string{"local", "--spec", spec, "--data", "../../experiments/data/demo.csv", "--trainers", "1", "--state-dir", state,
			"--out", filepath.Join(dir, "best"), "--http-tokens-file", tokens}}
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Kill() })
	why := func() string {
		trainer, _ := os.ReadFile(filepath.Join(state, "logs", "local-t1.log"))
		return fmt.Sprintf("loraft local output:\n%s\ntrainer log (end):\n%s", local.Tail(30), lastLines(string(trainer), 15))
	}

	// The URL it prints, as a person would open it.
	dashURL := regexp.MustCompile(`(?m)^dashboard: (http://\S+)$`)
	var base string
	coordinatortest.Eventually(t, 60*time.Second, func() error {
		if !local.Running() {
			t.Fatalf("loraft local exited: %v\n%s", local.ExitErr(), why())
		}
		printed, _ := os.ReadFile(local.Log)
		m := dashURL.FindSubmatch(printed)
		if m == nil {
			return fmt.Errorf("no dashboard URL printed yet:\n%s", local.Tail(20))
		}
		base = strings.TrimSuffix(string(m[1]), "/")
		return nil
	})
	var ports localcluster.Ports
	b, err := os.ReadFile(filepath.Join(state, "ports.json"))
	if err == nil {
		err = json.Unmarshal(b, &ports)
	}
	if err != nil || len(ports.HTTP) != 3 {
		t.Fatalf("ports.json: %v, HTTP listeners %v", err, ports.HTTP)
	}
	cl, err := coordinator.NewClient(ports.API)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sweep := func() (*pb.Sweep, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cl.ConsistentState(ctx)
		if err != nil {
			return nil, err
		}
		if sw := sweepOf(st, "browser"); sw != nil {
			return sw, nil
		}
		return nil, errors.New("sweep browser not launched yet")
	}
	var trials []string
	coordinatortest.Eventually(t, 60*time.Second, func() error {
		sw, err := sweep()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, why())
		}
		trials = nil
		for _, tr := range sw.GetTrials() {
			trials = append(trials, tr.GetName())
		}
		return nil
	})
	if len(trials) != 3 {
		t.Fatalf("sweep browser has trials %v, want 3", trials)
	}

	br := newBrowser(t, why)
	sweepURL := base + "/sweeps/browser"

	// The operator: this machine's own user, on loopback without a token.
	op := br.tab(false)
	if err := br.do(op, "opening "+sweepURL, 30*time.Second, chromedp.Navigate(sweepURL)); err != nil {
		t.Fatalf("%v\n%s", err, why())
	}
	// A mark on the window: a reload would wipe it.
	eval[bool](br, op, "marking the page", `window.loraftMark = true`)

	// Every trial is listed, and nothing else.
	rows := wait[[]shownTrial](br, op, "the trials table lists 3 trials", 30*time.Second, `(function () { var r = `+rowsJS+`; return r.length === 3 && r; })()`)
	var listed []string
	for _, r := range rows {
		listed = append(listed, r.Name)
	}
	slices.Sort(listed)
	slices.Sort(trials)
	if !slices.Equal(listed, trials) {
		t.Fatalf("the table lists %v, the sweep has %v", listed, trials)
	}

	// A running trial's step, then a later one, with the page never reloaded.
	first := wait[shownTrial](br, op, "a running trial shows a step", 90*time.Second,
		`(function () { return (`+rowsJS+`).filter(function (r) { return r.state === "RUNNING" && r.step > 0; })[0]; })()`)
	later := wait[shownTrial](br, op, fmt.Sprintf("trial %s advances past step %d", first.Name, first.Step), 60*time.Second,
		fmt.Sprintf(`(function () { return (`+rowsJS+`).filter(function (r) { return r.name === %q && r.step > %d; })[0]; })()`, first.Name, first.Step))
	if !eval[bool](br, op, "reading the mark", `window.loraftMark === true`) {
		t.Fatalf("the page reloaded while %s went from step %d to %d", first.Name, first.Step, later.Step)
	}
	t.Logf("%s: step %d, then %d, on the same page", first.Name, first.Step, later.Step)

	// The curves: uPlot drew on its canvas, in the series' colours (axes
	// and grid are grey, so coloured pixels are the curves).
	coloured := wait[int](br, op, "the chart draws curves", 60*time.Second, `(function () {
  var c = document.querySelector("#chart canvas");
  if (!c || !c.width || !c.height) return 0;
  var d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, n = 0;
  for (var i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 80) n++;
  }
  return n > 50 && n;
})()`)
	t.Logf("the chart has %d coloured pixels", coloured)
	br.screenshot(op, "sweep-operator")

	// The viewer signs in with the token, in a browser context of its own,
	// on another coordinator's dashboard: whichever leads, one of the two
	// pages comes from a follower, and both must show the same.
	other := "http://" + ports.HTTP[1]
	if strings.TrimPrefix(base, "http://") == ports.HTTP[1] {
		other = "http://" + ports.HTTP[0]
	}
	vw := br.tab(true)
	if err := br.do(vw, "opening the sign-in page", 30*time.Second, chromedp.Navigate(other+"/login?next=/sweeps/browser")); err != nil {
		t.Fatalf("%v\n%s", err, br.pageText(vw))
	}
	// The form posts, and the answer redirects to the sweep: wait for
	// that page to load, not only for the submit.
	lctx, lcancel := context.WithTimeout(vw, 30*time.Second)
	resp, err := chromedp.RunResponse(lctx, chromedp.SendKeys(chromedp.ID("token"), viewer, chromedp.NodeVisible),
		chromedp.Submit(chromedp.ID("token"), chromedp.NodeVisible))
	lcancel()
	if err != nil || resp.Status != 200 || !strings.HasSuffix(resp.URL, "/sweeps/browser") {
		t.Fatalf("signing in as a viewer: %v (response %+v)\n%s", err, resp, br.pageText(vw))
	}
	wait[bool](br, vw, "the viewer sees the trials", 30*time.Second,
		`location.pathname === "/sweeps/browser" && document.querySelectorAll("#trials tbody tr").length === 3`)
	wait[shownTrial](br, vw, "the viewer sees a running trial's step", 60*time.Second,
		`(function () { return (`+rowsJS+`).filter(function (r) { return r.state === "RUNNING" && r.step > 0; })[0]; })()`)
	eval[bool](br, vw, "marking the viewer's page", `window.loraftMark = true`)
	if got := eval[string](br, vw, "reading the footer", `document.body.dataset.write + " | " + document.getElementById("mode").textContent`); !strings.HasPrefix(got, "false | signed in with a viewer token") {
		t.Errorf("the viewer's page: write permission and mode %q, want false and a viewer token", got)
	}
	if eval[bool](br, vw, "looking for the cancel button", `document.getElementById("cancel") !== null`) {
		t.Errorf("the viewer's page has a cancel button")
	}
	// The button's own request, made by hand: the answer is a refusal.
	type answer struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	refused := eval[answer](br, vw, "posting a cancel as the viewer", `fetch("/api/sweeps/browser/cancel", {method: "POST", credentials: "same-origin", headers: {"X-Loraft-Action": "1"}})
  .then(function (r) { return r.json().then(function (b) { return {status: r.status, error: b.error || ""}; }); })`)
	if refused.Status != 403 || !strings.Contains(refused.Error, "may not call CancelSweep") {
		t.Errorf("a viewer's cancel: %d %q, want 403 and a refusal", refused.Status, refused.Error)
	}
	if sw, err := sweep(); err != nil || sw.GetCancelled() {
		t.Fatalf("after the viewer's refused cancel: sweep cancelled %v (%v)", sw.GetCancelled(), err)
	}
	br.screenshot(vw, "sweep-viewer")

	// The operator cancels from the page, accepting its confirm dialog.
	dctx, dcancel := context.WithTimeout(op, 60*time.Second)
	defer dcancel()
	dialogs := chromedp.Events(dctx, page.JavascriptDialogOpening)
	// The dialog blocks the page until it is answered, so a goroutine
	// answers it and reports to the test, which alone may fail.
	type dialog struct {
		message string
		err     error
	}
	answered := make(chan dialog, 1)
	go func() {
		for ev, err := range dialogs {
			if err == nil {
				_, err = chromedp.Call(dctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}
			answered <- dialog{ev.Message, err}
			return
		}
	}()
	if err := br.do(op, "clicking Cancel sweep", 30*time.Second, chromedp.Click(chromedp.ID("cancel"), chromedp.NodeEnabled)); err != nil {
		t.Fatalf("%v\n%s", err, br.pageText(op))
	}
	select {
	case d := <-answered:
		if d.err != nil {
			t.Fatalf("accepting the confirm dialog: %v", d.err)
		}
		if !strings.Contains(d.message, "Cancel every pending and running trial of browser") {
			t.Errorf("the confirm dialog asks %q", d.message)
		}
	case <-dctx.Done():
		t.Fatalf("no confirm dialog opened\npage:\n%s", br.pageText(op))
	}
	// The answer shows at once; loraft local then ends (its sweep is over),
	// taking the dashboard with it, so the note is caught as it changes.
	note := wait[string](br, op, "the page answers the cancel", 30*time.Second,
		`(function () { var n = document.getElementById("note"); return n && n.textContent; })()`, chromedp.WithPollingMutation())
	if note != "cancel browser: done" {
		t.Fatalf("after the cancel the page says %q\n%s", note, why())
	}
	select {
	case <-local.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("loraft local still runs 60s after its sweep was cancelled\n%s", why())
	}
	printed, err := os.ReadFile(local.Log)
	if err != nil {
		t.Fatal(err)
	}
	// The results table after that line: one CANCELLED row per trial.
	_, results, ok := strings.Cut(string(printed), "sweep browser was cancelled after")
	if rows := regexp.MustCompile(`(?m)^browser-t00[0-2] .*CANCELLED`).FindAllString(results, -1); !ok || len(rows) != 3 {
		t.Errorf("loraft local's results do not show the sweep cancelled with its 3 trials:\n%s", lastLines(string(printed), 12))
	}
	if err := local.ExitErr(); err == nil || !strings.Contains(string(printed), "was cancelled before any trial reported a metric") {
		t.Errorf("loraft local ended with %v, want an error saying the cancelled sweep has no adapter:\n%s", err, lastLines(string(printed), 5))
	}
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
