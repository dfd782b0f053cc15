package proc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
)

// shell is a process that logs its start, exits 3 on SIGTERM and otherwise
// runs until killed.
func shell(t *testing.T) *Proc {
	return &Proc{Name: "sh", Bin: Binary{Path: "/bin/sh", Env: []string{"GREETING=hello"}}, Env: []string{"WHO=proc"},
		Args: []string{"-c", `echo "$GREETING $WHO"; trap 'echo term; exit 3' TERM; while :; do sleep 0.05; done`},
		Log:  filepath.Join(t.TempDir(), "sh.log")}
}

// state is the process state letter of pid in /proc (R, S, T, …).
func state(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return fields[0]
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		if !cond() {
			return errors.New(what)
		}
		return nil
	})
}

func TestProcLifecycle(t *testing.T) {
	p := shell(t)
	if err := p.Pause(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Pause before Start: %v, want ErrNotRunning", err)
	}
	if err := p.Wait(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Wait before Start: %v, want ErrNotRunning", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if err := p.Start(); err == nil {
		t.Fatal("a second Start of a running process succeeded")
	}
	waitFor(t, "greeting in the log", func() bool { return p.Tail(1) == "hello proc" })

	pid := p.PID()
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stopped state after Pause", func() bool { return state(t, pid) == "T" })
	if !p.Running() {
		t.Fatal("a paused process is not Running")
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "running state after Resume", func() bool { return state(t, pid) != "T" })

	// Kill ends a paused process too, and waits for it.
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || p.PID() != 0 {
		t.Fatal("running after Kill")
	}
	var ee *exec.ExitError
	if err := p.ExitErr(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("ExitErr after Kill = %v, want killed by SIGKILL", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill of a dead process: %v", err)
	}

	// Restart appends to the same log; Stop of a paused process lets it
	// handle SIGTERM.
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second greeting in the log", func() bool { return strings.Count(p.Tail(10), "hello proc") == 2 })
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 || p.Tail(1) != "term" {
		t.Fatalf("after Stop: exit %v, log %q; want exit status 3 from the TERM trap", err, p.Tail(1))
	}
}

func TestProcStopKillsAfterGrace(t *testing.T) {
	p := &Proc{Name: "stubborn", Bin: Binary{Path: "/bin/sh"}, Log: filepath.Join(t.TempDir(), "log"),
		Args: []string{"-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready", func() bool { return p.Tail(1) == "ready" })
	start := time.Now()
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if p.Running() || time.Since(start) > 5*time.Second {
		t.Fatalf("Stop of a process that ignores SIGTERM: running %v after %v", p.Running(), time.Since(start))
	}
}
