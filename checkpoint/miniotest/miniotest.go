// Package miniotest starts a real MinIO server on a free loopback port with a
// temporary data directory, for tests that need an S3 object store. It never
// mocks S3: the server is the pinned MinIO binary that deploy/minio.sh builds
// once per machine into a versioned cache directory.
//
// The binary is found through $LORAFT_MINIO (the Makefile sets it) or as
// "minio" on $PATH. When neither exists, Start fails the test with the command
// that builds it.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/loopback"
)

// readyTimeout bounds the wait for /minio/health/cluster; MinIO answers in
// about a second on an idle 2-core machine, much later on a loaded one.
const readyTimeout = 60 * time.Second

// Server is a running MinIO server owned by one test.
type Server struct {
	// Endpoint is host:port of the S3 API on 127.0.0.1 (plain HTTP).
	Endpoint string
	// AccessKey and SecretKey are the root credentials, random per server.
	AccessKey, SecretKey string
	// Dir is the server's data directory; it survives Kill and Restart.
	Dir string

	bin     string
	console string
	logPath string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Binary returns the path of the MinIO server binary, or an error that says
// how to build it.
func Binary() (string, error) {
	if p := os.Getenv("LORAFT_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("minio binary from LORAFT_MINIO: %w (build it with deploy/minio.sh)", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New("minio server binary not found: run the tests through 'make test', or export LORAFT_MINIO=$(deploy/minio.sh)")
}

// Start launches a MinIO server for t and stops it when t ends. It fails t
// when the binary is missing or the server does not become ready.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping minio: %v", err)
		}
	})
	return s
}

// Launch starts a MinIO server with its data under dir (benchmarks use it;
// tests use Start). The caller stops it.
func Launch(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Dir:       filepath.Join(dir, "data"),
		AccessKey: "loraft-" + randomHex(6),
		SecretKey: randomHex(20),
		bin:       bin,
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	s.logPath = filepath.Join(dir, "minio.log")
	// A port another process takes between our probe and MinIO's bind makes
	// the start fail; try a few fresh ports before giving up.
	for attempt := 0; ; attempt++ {
		addrs, err := loopback.Addrs(2)
		if err != nil {
			return nil, err
		}
		s.Endpoint, s.console = addrs[0], addrs[1]
		err = s.start()
		if err == nil || attempt == 2 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin, "server", s.Dir, "--address", s.Endpoint, "--console-address", s.console, "--quiet")
	// Credentials go through the environment, never argv (visible in ps).
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("minio log file: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test process even when the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting minio %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	if err := waitReady(s.Endpoint, done); err != nil {
		_ = s.Kill()
		log, _ := os.ReadFile(s.logPath)
		return fmt.Errorf("minio on %s: %w; its log:\n%s", s.Endpoint, err, log)
	}
	return nil
}

// waitReady polls the cluster health endpoint until it answers 200, the
// process exits, or readyTimeout passes. /minio/health/ready is not enough:
// it answers 200 as soon as the HTTP server listens, while S3 requests still
// fail with "Server not initialized yet" until the object layer is up;
// /minio/health/cluster answers 200 only once it is and has write quorum.
func waitReady(endpoint string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + endpoint + "/minio/health/cluster"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("server exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v", readyTimeout)
		case <-tick.C:
		}
	}
}

// PID returns the server's process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop asks the server to exit (SIGTERM to its PID) and waits for it,
// killing it after 10 seconds. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	return s.signal(syscall.SIGTERM, 10*time.Second)
}

// Kill ends the server at once with SIGKILL, as a crash would, and waits for
// the process to be gone. The data directory stays for Restart.
func (s *Server) Kill() error {
	return s.signal(syscall.SIGKILL, 10*time.Second)
}

// Restart starts the server again on the same address and data directory
// after Stop or Kill.
func (s *Server) Restart() error {
	if s.PID() != 0 {
		return errors.New("minio restart: server is still running")
	}
	return s.start()
}

func (s *Server) signal(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(cmd.Process.Pid, sig) // ESRCH: already gone, Wait has reaped it
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.mu.Lock()
	if s.cmd == cmd {
		s.cmd, s.done = nil, nil
	}
	s.mu.Unlock()
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
