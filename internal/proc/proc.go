package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned by the methods of a [Proc] that need a running
// process when it has not been started or has exited.
var ErrNotRunning = errors.New("process not running")

// Binary is an executable to run and the environment it adds to this
// process's own.
type Binary struct {
	// Path of the executable.
	Path string
	// Env entries (KEY=value) added after os.Environ(), e.g. LORAFT_TEST_MAIN=1.
	Env []string
}

// Command is an exec.Cmd that runs b with args and b's environment. The
// caller adds its own entries to Env and starts it.
func (b Binary) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.Path, args...)
	cmd.Env = append(os.Environ(), b.Env...)
	return cmd
}

// Proc is one child process whose output (stdout and stderr) is appended to
// a log file, across restarts. Its methods are safe for concurrent use.
type Proc struct {
	// Name identifies the process in errors and log tails.
	Name string
	// Bin is what runs; Args its arguments; Env entries are added after Bin.Env.
	Bin  Binary
	Args []string
	Env  []string
	// Log is the path of the log file.
	Log string

	mu      sync.Mutex // guards cmd, done and waitErr
	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd has been waited for
	waitErr error         // cmd.Wait's result, set before done closes
}

// Start runs the process. It fails when the process is already running.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	log, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log file: %w", p.Name, err)
	}
	cmd := exec.Command(p.Bin.Path, p.Args...)
	cmd.Env = append(append(os.Environ(), p.Bin.Env...), p.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	// A child must not outlive whoever started it, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s (%s): %w", p.Name, p.Bin.Path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		log.Close()
		p.mu.Lock()
		if p.cmd == cmd {
			p.waitErr = err
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Proc) runningLocked() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Running reports whether the process has been started and has not exited
// (a paused process is running).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

// PID is the process id of the current run, or 0 when it is not running.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the current run exits; nil before the first Start.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is how the last run ended: cmd.Wait's error, nil for exit status
// 0 and while the process still runs.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return nil
	}
	return p.waitErr
}

// Wait waits until the current run exits and returns how it ended (as
// ExitErr). Before the first Start it returns ErrNotRunning.
func (p *Proc) Wait() error {
	done := p.Done()
	if done == nil {
		return fmt.Errorf("%s: wait: %w", p.Name, ErrNotRunning)
	}
	<-done
	return p.ExitErr()
}

// Signal sends sig to the running process and returns without waiting.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, ErrNotRunning)
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Pause stops the process (SIGSTOP): it holds its ports and state but
// answers nothing, like a hung machine, until Resume.
func (p *Proc) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill ends the process at once with SIGKILL, as a crash would, and waits
// until it is gone. Killing a process that is not running does nothing.
func (p *Proc) Kill() error { return p.end(syscall.SIGKILL, 0) }

// Stop asks the process to exit (SIGTERM; a paused one is resumed so that
// it can) and waits for it, killing it after grace. Stopping a process
// that is not running does nothing.
func (p *Proc) Stop(grace time.Duration) error { return p.end(syscall.SIGTERM, grace) }

// Restart kills the process if it runs and starts it again with the same
// arguments, log and state.
func (p *Proc) Restart() error {
	if err := p.Kill(); err != nil {
		return err
	}
	return p.Start()
}

func (p *Proc) end(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	running := p.runningLocked()
	p.mu.Unlock()
	if !running {
		return nil
	}
	_ = cmd.Process.Signal(sig) // os.ErrProcessDone: it exited meanwhile
	if sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		select {
		case <-done:
			return nil
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: pid %d still there 30 s after SIGKILL", p.Name, cmd.Process.Pid)
	}
}

// Tail is the last n lines of the process's log ("" when it has none).
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
