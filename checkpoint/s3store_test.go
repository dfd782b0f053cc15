package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
	"github.com/loraft/loraft/checkpoint/storetest"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func s3Config(srv *miniotest.Server, bucket, prefix string) checkpoint.S3Config {
	return checkpoint.S3Config{
		Endpoint:  srv.Endpoint,
		Bucket:    bucket,
		Prefix:    prefix,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
	}
}

func newS3Store(t *testing.T, cfg checkpoint.S3Config) *checkpoint.S3Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := checkpoint.NewS3Store(ctx, cfg)
	if err != nil {
		t.Fatalf("NewS3Store(%s): %v", cfg, err)
	}
	return s
}

// rawClient talks to the server directly, to see what the store wrote.
func rawClient(t *testing.T, srv *miniotest.Server) *minio.Client {
	t.Helper()
	c, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSecret fails t when s holds the server's secret key.
func noSecret(t *testing.T, srv *miniotest.Server, what, s string) {
	t.Helper()
	if strings.Contains(s, srv.SecretKey) {
		t.Fatalf("%s holds the secret key: %s", what, s)
	}
}

func TestS3Store(t *testing.T) {
	srv := miniotest.Start(t)
	var n atomic.Int64
	t.Run("prefix", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) checkpoint.Store {
			return newS3Store(t, s3Config(srv, "loraft", fmt.Sprintf("suite/%d", n.Add(1))))
		})
	})
	t.Run("bucket-root", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) checkpoint.Store {
			return newS3Store(t, s3Config(srv, fmt.Sprintf("root-%d", n.Add(1)), ""))
		})
	})
}

// TestS3StorePrefix: keys live under the prefix; stores with neighbouring
// prefixes in one bucket do not see each other's objects.
func TestS3StorePrefix(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	a := newS3Store(t, s3Config(srv, "shared", "/team/a/"))
	ab := newS3Store(t, s3Config(srv, "shared", "team/ab"))
	if err := checkpoint.PutBytes(ctx, a, "x", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.PutBytes(ctx, ab, "x", []byte("from ab")); err != nil {
		t.Fatal(err)
	}
	if _, err := rawClient(t, srv).StatObject(ctx, "shared", "team/a/x", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object for key x of prefix team/a: %v", err)
	}
	for _, s := range []*checkpoint.S3Store{a, ab} {
		objs, err := s.List(ctx, "")
		if err != nil || len(objs) != 1 || objs[0].Key != "x" {
			t.Fatalf("%s List = %+v, %v; want just x", s, objs, err)
		}
	}
	if b, err := checkpoint.GetBytes(ctx, a, "x"); err != nil || string(b) != "from a" {
		t.Fatalf("%s x = %q, %v", a, b, err)
	}
	// Objects under the prefix that no Store could have written (a
	// console's "dir/" marker) are not listed.
	if _, err := rawClient(t, srv).PutObject(ctx, "shared", "team/a/folder/", bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if objs, err := a.List(ctx, ""); err != nil || len(objs) != 1 {
		t.Fatalf("List with a folder marker = %+v, %v; want just x", objs, err)
	}
	if got, want := a.String(), "s3://shared/team/a at http://"+srv.Endpoint; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

// TestNewS3Store: the bucket is created once and reused; bad settings fail
// with errors that never hold the secret key.
func TestNewS3Store(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	s1 := newS3Store(t, s3Config(srv, "fresh", "p"))
	if ok, err := rawClient(t, srv).BucketExists(ctx, "fresh"); err != nil || !ok {
		t.Fatalf("bucket after NewS3Store: exists %v, %v", ok, err)
	}
	if err := checkpoint.PutBytes(ctx, s1, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s2 := newS3Store(t, s3Config(srv, "fresh", "p"))
	if b, err := checkpoint.GetBytes(ctx, s2, "k"); err != nil || string(b) != "v" {
		t.Fatalf("second store over an existing bucket reads %q, %v", b, err)
	}

	withURL := s3Config(srv, "fresh", "p")
	withURL.Endpoint = "http://" + srv.Endpoint
	if _, err := checkpoint.NewS3Store(ctx, withURL); err != nil {
		t.Fatalf("endpoint as an http URL: %v", err)
	}

	for _, tc := range []struct {
		name   string
		change func(c *checkpoint.S3Config)
		want   string
	}{
		{"no-endpoint", func(c *checkpoint.S3Config) { c.Endpoint = "" }, "endpoint"},
		{"endpoint-path", func(c *checkpoint.S3Config) { c.Endpoint = "http://" + srv.Endpoint + "/x" }, "endpoint"},
		{"endpoint-scheme", func(c *checkpoint.S3Config) { c.Endpoint = "ftp://" + srv.Endpoint }, "endpoint"},
		{"no-bucket", func(c *checkpoint.S3Config) { c.Bucket = "" }, "bucket"},
		{"bad-bucket", func(c *checkpoint.S3Config) { c.Bucket = "Bad_Bucket" }, "Bad_Bucket"},
		{"bad-prefix", func(c *checkpoint.S3Config) { c.Prefix = "a/../b" }, "prefix"},
		{"no-secret", func(c *checkpoint.S3Config) { c.SecretKey = "" }, "secret key"},
		{"wrong-secret", func(c *checkpoint.S3Config) { c.SecretKey = srv.SecretKey + "-wrong" }, srv.Endpoint},
		{"wrong-access-key", func(c *checkpoint.S3Config) { c.AccessKey = "nobody" }, srv.Endpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config(srv, "fresh", "p")
			tc.change(&cfg)
			_, err := checkpoint.NewS3Store(ctx, cfg)
			if err == nil {
				t.Fatal("NewS3Store succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			noSecret(t, srv, "error", err.Error())
			if cfg.SecretKey != "" && strings.Contains(err.Error(), cfg.SecretKey) {
				t.Fatalf("error holds the configured secret: %v", err)
			}
		})
	}
}

// TestS3ConfigFormatting: every fmt verb prints the description, never the
// secret key.
func TestS3ConfigFormatting(t *testing.T) {
	cfg := checkpoint.S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b", Prefix: "p", AccessKey: "AKID", SecretKey: "very-secret-value"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, cfg)
		if strings.Contains(out, cfg.SecretKey) || !strings.Contains(out, "s3://b/p at http://127.0.0.1:9000") {
			t.Errorf("Sprintf(%q, cfg) = %q", verb, out)
		}
	}
	cfg.Endpoint, cfg.Prefix = "https://s3.example.com", ""
	if got, want := cfg.String(), "s3://b at https://s3.example.com"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestS3DeadServer: with the server killed, Put fails fast with an error
// that names the endpoint and not the secret; after a restart it works.
func TestS3DeadServer(t *testing.T) {
	srv := miniotest.Start(t)
	s := newS3Store(t, s3Config(srv, "loraft", "dead"))
	ctx := context.Background()
	if err := checkpoint.PutBytes(ctx, s, "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	err := checkpoint.PutBytes(ctx, s, "during", []byte("v"))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Put to a killed server succeeded")
	}
	// Connections are refused at once; only retries' backoff (about 1 s
	// each) takes time, well under the 10 s timeout times the retries.
	if limit := 3 * checkpoint.DefaultS3Timeout; elapsed > limit {
		t.Fatalf("Put to a killed server took %v, want under %v", elapsed, limit)
	}
	if !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("error %q does not name the endpoint %s", err, srv.Endpoint)
	}
	noSecret(t, srv, "Put error", err.Error())
	if errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("dead server error %v is ErrNotFound", err)
	}
	_, err = s.Stat(ctx, "before")
	if err == nil || errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Stat on a dead server = %v, want a connection error", err)
	}
	noSecret(t, srv, "Stat error", err.Error())
	if _, err := s.List(ctx, ""); err == nil {
		t.Fatal("List on a dead server succeeded")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.PutBytes(ctx, s, "after", []byte("v")); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	for _, k := range []string{"before", "after"} {
		if b, err := checkpoint.GetBytes(ctx, s, k); err != nil || string(b) != "v" {
			t.Fatalf("%s after restart = %q, %v", k, b, err)
		}
	}
	mustMissing(t, s, "during")
}

// TestS3HungServer: a server that accepts connections but never answers
// (stopped with SIGSTOP) makes Put fail after the configured timeout, not
// hang.
func TestS3HungServer(t *testing.T) {
	srv := miniotest.Start(t)
	cfg := s3Config(srv, "loraft", "hung")
	cfg.Timeout = time.Second
	s := newS3Store(t, cfg)
	ctx := context.Background()
	pid := srv.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	start := time.Now()
	err := checkpoint.PutBytes(ctx, s, "k", []byte("v"))
	elapsed := time.Since(start)
	resume()
	if err == nil {
		t.Fatal("Put to a stopped server succeeded")
	}
	// One try per retry, each bounded by the timeout, plus backoff.
	if elapsed > 15*time.Second {
		t.Fatalf("Put to a stopped server took %v", elapsed)
	}
	if !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("error %q does not name the endpoint", err)
	}
	noSecret(t, srv, "error", err.Error())
}

func mustMissing(t *testing.T, s checkpoint.Store, key string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), key); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Stat(%q) = %v, want ErrNotFound", key, err)
	}
}

// TestS3StorePausedServer pauses MinIO (SIGSTOP: it keeps its sockets but
// never answers) and checks that every store call fails within its call
// timeout instead of hanging, and is logged at WARN with the key and the
// endpoint but not the credentials. After a resume the store works again.
func TestS3StorePausedServer(t *testing.T) {
	srv := miniotest.Start(t)
	var logs syncbuf.Buffer
	const callTimeout = 2 * time.Second
	cfg := s3Config(srv, "paused", "p")
	// The per-attempt header timeout alone would let retries run for a minute.
	cfg.Timeout, cfg.CallTimeout = 20*time.Second, callTimeout
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := newS3Store(t, cfg)
	ctx := context.Background()
	if err := checkpoint.PutBytes(ctx, s, "a/b", []byte("before")); err != nil {
		t.Fatal(err)
	}
	// Signalled by PID, which every version of miniotest's Server has.
	pid := srv.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	calls := []struct {
		op, key string
		call    func() error
	}{
		{"put", "a/new", func() error { return checkpoint.PutBytes(ctx, s, "a/new", []byte("during")) }},
		{"get", "a/b", func() error { _, err := checkpoint.GetBytes(ctx, s, "a/b"); return err }},
		{"stat", "a/b", func() error { _, err := s.Stat(ctx, "a/b"); return err }},
		{"list", "a/", func() error { _, err := s.List(ctx, "a/"); return err }},
		{"delete", "a/b", func() error { return s.Delete(ctx, "a/b") }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s %s on a paused server succeeded", c.op, c.key)
		}
		// The deadline plus time to unwind; a hang would take minutes.
		if took > callTimeout+3*time.Second {
			t.Errorf("%s %s failed after %v, want within about %v: %v", c.op, c.key, took, callTimeout, err)
		}
		noSecret(t, srv, c.op+" error", err.Error())
		line := ""
		for l := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(l, "op="+c.op) && strings.Contains(l, "key="+c.key) {
				line = l
			}
		}
		if !strings.Contains(line, "level=WARN") || !strings.Contains(line, srv.Endpoint) {
			t.Errorf("no WARN log line for %s %s naming the endpoint %s; logs:\n%s", c.op, c.key, srv.Endpoint, logs.String())
		}
	}
	noSecret(t, srv, "log", logs.String())
	if strings.Contains(logs.String(), srv.AccessKey) {
		t.Errorf("the log shows the access key:\n%s", logs.String())
	}

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	if b, err := checkpoint.GetBytes(ctx, s, "a/b"); err != nil || string(b) != "before" {
		t.Fatalf("after resume: get = %q, %v", b, err)
	}
}
