// Package progress reports long work: a bar with rate and ETA
// (schollz/progressbar) on a terminal, and a plain line every few seconds
// (and at the end) when stderr is not a TTY, so logs of CI and services stay
// readable.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar reports one piece of long work on stderr. Its methods are safe for
// concurrent use.
type Bar struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar // nil when not a terminal
	w     io.Writer
	what  string
	unit  string
	start time.Time
	last  time.Time
	total int
	done  bool
}

// New starts reporting work on total units (rows, steps, …).
func New(what, unit string, total int) *Bar {
	now := time.Now()
	p := &Bar{w: os.Stderr, what: what, unit: unit, total: total, start: now, last: now}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(unit),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// Set records that n of total units are done.
func (p *Bar) Set(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if p.bar != nil {
		_ = p.bar.Set(n)
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 5*time.Second && n < p.total {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(n) / max(el, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(p.total-n) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "%s: %d/%d %s (%.0f %s/s, ETA %s)\n", p.what, n, p.total, p.unit, rate, p.unit, eta)
}

// Describe changes the bar's label (plain lines show it too).
func (p *Bar) Describe(what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.what = what
	if p.bar != nil {
		p.bar.Describe(what)
	}
}

// Note prints a line above the bar (or among the plain lines).
func (p *Bar) Note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintln(p.w, line)
}

// Finish ends the bar and prints the total time.
func (p *Bar) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if p.bar != nil {
		_ = p.bar.Finish()
	}
	fmt.Fprintf(p.w, "%s: %d %s in %s\n", p.what, p.total, p.unit, time.Since(p.start).Round(time.Millisecond))
}
