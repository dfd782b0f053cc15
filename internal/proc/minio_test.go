package proc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint/miniotest"
	"github.com/loraft/loraft/internal/proc"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func minioClient(t *testing.T, s *miniotest.Server) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure: false,
	})
	if err != nil {
		t.Fatalf("minio client: %v", err)
	}
	return c
}

// TestMinIORoundTrip starts a real server, writes an object through minio-go and
// reads the same bytes back.
func TestMinIORoundTrip(t *testing.T) {
	s := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := minioClient(t, s)
	if err := c.MakeBucket(ctx, "loraft", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	payload := bytes.Repeat([]byte("adapter-bytes "), 50_000) // 700 kB
	if _, err := c.PutObject(ctx, "loraft", "runs/t1/ckpt/10/adapter.safetensors", bytes.NewReader(payload), int64(len(payload)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	obj, err := c.GetObject(ctx, "loraft", "runs/t1/ckpt/10/adapter.safetensors", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes back, want the %d bytes written", len(got), len(payload))
	}
	if _, err := c.StatObject(ctx, "loraft", "runs/t1/missing", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("stat of a missing key: %v, want NoSuchKey", err)
	}
}

// TestMinIOStopAndRestart checks the server's lifecycle: Stop ends the process by
// PID, Kill then Restart keeps the data directory's objects.
func TestMinIOStopAndRestart(t *testing.T) {
	s := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := minioClient(t, s)
	if err := c.MakeBucket(ctx, "keep", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	if _, err := c.PutObject(ctx, "keep", "a", strings.NewReader("survives"), 8, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}

	pid := s.PID()
	if pid == 0 {
		t.Fatal("running server has no PID")
	}
	if err := s.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Kill (signal 0: %v)", pid, err)
	}
	if _, err := http.Get("http://" + s.Endpoint + "/minio/health/live"); err == nil {
		t.Fatal("health endpoint still answers after Kill")
	}

	if err := s.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	obj, err := c.GetObject(ctx, "keep", "a", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || string(got) != "survives" {
		t.Fatalf("after restart got %q, %v; want %q", got, err, "survives")
	}

	pid = s.PID()
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Stop (signal 0: %v)", pid, err)
	}
}

// TestMinIOSecretsNotInArgv guards the rule that credentials never appear in a
// command line that ps shows.
func TestMinIOSecretsNotInArgv(t *testing.T) {
	s := miniotest.Start(t)
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(s.PID()) + "/cmdline")
	if err != nil {
		t.Fatalf("reading minio's command line: %v", err)
	}
	if bytes.Contains(cmdline, []byte(s.SecretKey)) || bytes.Contains(cmdline, []byte(s.AccessKey)) {
		t.Fatalf("minio's command line holds a credential: %q", cmdline)
	}
}

func TestMinIOBinaryMissing(t *testing.T) {
	t.Setenv("LORAFT_MINIO", "/nonexistent/minio")
	_, err := proc.MinIOBinary()
	if err == nil || !strings.Contains(err.Error(), "deploy/minio.sh") {
		t.Fatalf("MinIOBinary() with a bad LORAFT_MINIO = %v, want an error naming deploy/minio.sh", err)
	}
}
