package proc

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
	"time"

	"github.com/loraft/loraft/internal/loopback"
)

// minioReadyTimeout bounds the wait for /minio/health/cluster; MinIO answers
// in about a second on an idle 2-core machine, much later on a loaded one.
const minioReadyTimeout = 60 * time.Second

// MinIO is a MinIO server process on a free loopback port with its data in a
// directory of its own. It is never linked (AGPL): it is the pinned server
// binary that deploy/minio.sh builds once per machine.
type MinIO struct {
	// Endpoint is host:port of the S3 API on 127.0.0.1 (plain HTTP).
	Endpoint string
	// AccessKey and SecretKey are the root credentials, random per server.
	AccessKey, SecretKey string
	// Dir is the server's data directory; it survives Kill and Restart.
	Dir string

	// Proc is the server process; its Pause and Resume apply as they are.
	// Use the server's Restart, which waits until it is ready.
	*Proc
}

// MinIOBinary returns the path of the MinIO server binary, from
// $LORAFT_MINIO (the Makefile sets it) or "minio" on $PATH, or an error
// that says how to build it.
func MinIOBinary() (string, error) {
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

// StartMinIO starts a MinIO server with its data under dir/data and its log
// in dir/minio.log, and waits until it serves S3 requests. The caller stops
// it.
func StartMinIO(dir string) (*MinIO, error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, err
	}
	s := &MinIO{Dir: filepath.Join(dir, "data"), AccessKey: "loraft-" + randomHex(6), SecretKey: randomHex(20)}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	// A port another process takes between our probe and MinIO's bind makes
	// the start fail; try a few fresh ports before giving up.
	for attempt := 0; ; attempt++ {
		addrs, err := loopback.Addrs(2)
		if err != nil {
			return nil, err
		}
		s.Endpoint = addrs[0]
		s.Proc = &Proc{Name: "minio", Log: filepath.Join(dir, "minio.log"),
			Bin:  Binary{Path: bin},
			Args: []string{"server", s.Dir, "--address", addrs[0], "--console-address", addrs[1], "--quiet"},
			// Credentials go through the environment, never argv (visible in ps).
			Env: []string{"MINIO_ROOT_USER=" + s.AccessKey, "MINIO_ROOT_PASSWORD=" + s.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off"}}
		err = s.start()
		if err == nil {
			return s, nil
		}
		if attempt == 2 {
			return nil, err
		}
	}
}

// Restart starts the server again on the same address and data directory
// (killing it first if it runs) and waits until it is ready.
func (s *MinIO) Restart() error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.start()
}

// Stop asks the server to exit and waits for it, killing it after 10 s.
// Stopping a stopped server does nothing.
func (s *MinIO) Stop() error { return s.Proc.Stop(10 * time.Second) }

func (s *MinIO) start() error {
	if err := s.Start(); err != nil {
		return err
	}
	if err := waitMinIOReady(s.Endpoint, s.Done()); err != nil {
		_ = s.Kill()
		log, _ := os.ReadFile(s.Log)
		return fmt.Errorf("minio on %s: %w; its log:\n%s", s.Endpoint, err, log)
	}
	return nil
}

// waitMinIOReady polls the cluster health endpoint until it answers 200,
// the process exits, or minioReadyTimeout passes. /minio/health/ready is
// not enough: it answers 200 as soon as the HTTP server listens, while S3
// requests still fail with "Server not initialized yet" until the object
// layer is up; /minio/health/cluster answers 200 only once it is and has
// write quorum.
func waitMinIOReady(endpoint string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), minioReadyTimeout)
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
			return fmt.Errorf("not ready after %v", minioReadyTimeout)
		case <-tick.C:
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
