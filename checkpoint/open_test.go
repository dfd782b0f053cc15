package checkpoint_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
)

// clearS3Env unsets every variable Open reads, for the length of t.
func clearS3Env(t *testing.T) {
	t.Helper()
	for _, k := range []string{checkpoint.EnvS3Endpoint, checkpoint.EnvS3AccessKey, checkpoint.EnvS3SecretKey,
		checkpoint.EnvAWSAccessKey, checkpoint.EnvAWSSecretKey} {
		t.Setenv(k, "")
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTrip writes and reads one object through s.
func roundTrip(t *testing.T, s checkpoint.Store) {
	t.Helper()
	ctx := context.Background()
	if err := checkpoint.PutBytes(ctx, s, "open/probe", []byte("ok")); err != nil {
		t.Fatalf("Put through %s: %v", s, err)
	}
	if b, err := checkpoint.GetBytes(ctx, s, "open/probe"); err != nil || string(b) != "ok" {
		t.Fatalf("Get through %s = %q, %v", s, b, err)
	}
}

func TestOpenDir(t *testing.T) {
	clearS3Env(t)
	dir := filepath.Join(t.TempDir(), "store")
	s, err := checkpoint.Open(context.Background(), dir, checkpoint.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	ds, ok := s.(*checkpoint.DirStore)
	if !ok || ds.Dir() != dir || s.String() != "dir "+dir {
		t.Fatalf("Open(%q) = %T %s, want a DirStore there", dir, s, s)
	}
	roundTrip(t, s)
	if _, err := os.Stat(filepath.Join(dir, "open", "probe")); err != nil {
		t.Fatalf("object file: %v", err)
	}
}

func TestOpen(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	const bogusEndpoint = "127.0.0.1:1" // nothing listens there
	credsFile := "access_key=" + srv.AccessKey + "\nsecret_key=" + srv.SecretKey + "\n"
	awsFile := "# written by aws configure\n[profile other]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n" +
		"[default]\naws_access_key_id = " + srv.AccessKey + "\naws_secret_access_key = " + srv.SecretKey + "\nregion = us-east-1\n"

	for _, tc := range []struct {
		name string
		env  map[string]string
		opt  func(t *testing.T) checkpoint.S3Options
		spec string
	}{
		{
			name: "loraft-env",
			env: map[string]string{checkpoint.EnvS3Endpoint: srv.Endpoint,
				checkpoint.EnvS3AccessKey: srv.AccessKey, checkpoint.EnvS3SecretKey: srv.SecretKey},
			spec: "s3://loraft/runs-a",
		},
		{
			name: "aws-env",
			env: map[string]string{checkpoint.EnvS3Endpoint: "http://" + srv.Endpoint,
				checkpoint.EnvAWSAccessKey: srv.AccessKey, checkpoint.EnvAWSSecretKey: srv.SecretKey},
			spec: "s3://loraft",
		},
		{
			name: "loraft-env-before-aws-env",
			env: map[string]string{checkpoint.EnvS3Endpoint: srv.Endpoint,
				checkpoint.EnvS3AccessKey: srv.AccessKey, checkpoint.EnvS3SecretKey: srv.SecretKey,
				checkpoint.EnvAWSAccessKey: "nobody", checkpoint.EnvAWSSecretKey: "wrong"},
			spec: "s3://loraft/x/y/",
		},
		{
			name: "option-endpoint-before-env",
			env: map[string]string{checkpoint.EnvS3Endpoint: bogusEndpoint,
				checkpoint.EnvS3AccessKey: srv.AccessKey, checkpoint.EnvS3SecretKey: srv.SecretKey},
			opt:  func(t *testing.T) checkpoint.S3Options { return checkpoint.S3Options{Endpoint: srv.Endpoint} },
			spec: "s3://other-bucket/p",
		},
		{
			name: "credentials-file",
			env:  map[string]string{checkpoint.EnvS3Endpoint: srv.Endpoint},
			opt: func(t *testing.T) checkpoint.S3Options {
				return checkpoint.S3Options{CredentialsFile: writeFile(t, "creds", credsFile)}
			},
			spec: "s3://loraft/file",
		},
		{
			name: "credentials-file-aws-style-before-env",
			env: map[string]string{checkpoint.EnvS3Endpoint: srv.Endpoint,
				checkpoint.EnvAWSAccessKey: "nobody", checkpoint.EnvAWSSecretKey: "wrong"},
			opt: func(t *testing.T) checkpoint.S3Options {
				return checkpoint.S3Options{CredentialsFile: writeFile(t, "credentials", awsFile), Region: "us-east-1"}
			},
			spec: "s3://loraft/aws",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearS3Env(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var opt checkpoint.S3Options
			if tc.opt != nil {
				opt = tc.opt(t)
			}
			s, err := checkpoint.Open(ctx, tc.spec, opt)
			if err != nil {
				t.Fatalf("Open(%q): %v", tc.spec, err)
			}
			if _, ok := s.(*checkpoint.S3Store); !ok {
				t.Fatalf("Open(%q) = %T, want *S3Store", tc.spec, s)
			}
			if !strings.Contains(s.String(), srv.Endpoint) || strings.Contains(s.String(), srv.SecretKey) {
				t.Fatalf("String() = %q: want the endpoint and no secret", s)
			}
			roundTrip(t, s)
		})
	}
}

// TestOpenErrors: every failure says what to fix, and no error holds the
// secret key, wherever the secret came from.
func TestOpenErrors(t *testing.T) {
	const secret = "s3cr3t-NEVER-PRINT-me"
	ctx := context.Background()
	withCreds := map[string]string{checkpoint.EnvS3Endpoint: "127.0.0.1:1",
		checkpoint.EnvS3AccessKey: "AKID", checkpoint.EnvS3SecretKey: secret}
	for _, tc := range []struct {
		name string
		spec string
		env  map[string]string
		file string // credentials file content; "-" names a missing file
		want []string
	}{
		{name: "empty-spec", spec: "", want: []string{"empty"}},
		{name: "no-endpoint", spec: "s3://bkt/p",
			env:  map[string]string{checkpoint.EnvS3AccessKey: "AKID", checkpoint.EnvS3SecretKey: secret},
			want: []string{"--s3-endpoint", "LORAFT_S3_ENDPOINT"}},
		{name: "no-credentials", spec: "s3://bkt/p", env: map[string]string{checkpoint.EnvS3Endpoint: "127.0.0.1:1"},
			want: []string{"LORAFT_S3_ACCESS_KEY", "LORAFT_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--s3-credentials-file"}},
		{name: "secret-without-access-key", spec: "s3://bkt/p",
			env:  map[string]string{checkpoint.EnvS3Endpoint: "127.0.0.1:1", checkpoint.EnvAWSSecretKey: secret},
			want: []string{"AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"}},
		{name: "access-key-without-secret", spec: "s3://bkt/p",
			env:  map[string]string{checkpoint.EnvS3Endpoint: "127.0.0.1:1", checkpoint.EnvS3AccessKey: "AKID"},
			want: []string{"LORAFT_S3_ACCESS_KEY is set but LORAFT_S3_SECRET_KEY is not"}},
		{name: "missing-credentials-file", spec: "s3://bkt/p", env: withCreds, file: "-",
			want: []string{"credentials file", "no such file"}},
		{name: "credentials-file-without-keys", spec: "s3://bkt/p", env: withCreds, file: "[other]\naws_access_key_id = x\n",
			want: []string{"access_key=", "aws_access_key_id"}},
		{name: "credentials-file-only-secret", spec: "s3://bkt/p", env: withCreds, file: "secret_key=" + secret + "\n",
			want: []string{"access_key="}},
		{name: "credentials-file-malformed-line", spec: "s3://bkt/p", env: withCreds, file: "access_key=AKID\n" + secret + "\n",
			want: []string{"line 2", "key=value"}},
		{name: "credentials-file-bad-section", spec: "s3://bkt/p", env: withCreds, file: "[default\n",
			want: []string{"line 1", "section"}},
		{name: "dead-endpoint", spec: "s3://bkt/p", env: withCreds, want: []string{"127.0.0.1:1"}},
		{name: "bad-endpoint", spec: "s3://bkt/p", env: map[string]string{checkpoint.EnvS3Endpoint: "ftp://host:1",
			checkpoint.EnvS3AccessKey: "AKID", checkpoint.EnvS3SecretKey: secret}, want: []string{"endpoint", "http(s)://host:port"}},
		{name: "other-scheme", spec: "gs://b/p", env: withCreds, want: []string{`unsupported scheme "gs"`, "s3://bucket/prefix"}},
		{name: "no-bucket", spec: "s3:///p", env: withCreds, want: []string{"no bucket"}},
		{name: "bad-bucket", spec: "s3://Bad_Bucket/p", env: withCreds, want: []string{"Bad_Bucket"}},
		{name: "port", spec: "s3://bkt:9000/p", env: withCreds, want: []string{"port", "--s3-endpoint"}},
		{name: "query", spec: "s3://bkt/p?x=1", env: withCreds, want: []string{"query"}},
		{name: "dotdot-prefix", spec: "s3://bkt/a/../p", env: withCreds, want: []string{"prefix"}},
		{name: "secret-in-url", spec: "s3://AKID:" + secret + "@bkt/p", env: withCreds, want: []string{"credentials do not belong in the URL"}},
		{name: "unparsable", spec: "s3://bkt/%zz" + secret, env: withCreds, want: []string{"not a URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearS3Env(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var opt checkpoint.S3Options
			switch tc.file {
			case "":
			case "-":
				opt.CredentialsFile = filepath.Join(t.TempDir(), "missing")
			default:
				opt.CredentialsFile = writeFile(t, "creds", tc.file)
			}
			s, err := checkpoint.Open(ctx, tc.spec, opt)
			if err == nil {
				t.Fatalf("Open(%q) = %s, want an error", tc.spec, s)
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error holds the secret: %q", msg)
			}
		})
	}
}

// TestOpenCallTimeout: Open hands S3Options.CallTimeout to the store.
func TestOpenCallTimeout(t *testing.T) {
	s, err := checkpoint.Open(context.Background(), t.TempDir(), checkpoint.S3Options{CallTimeout: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := s.(*checkpoint.DirStore); !ok || d.CallTimeout != 7*time.Second {
		t.Fatalf("Open = %#v, want a DirStore with CallTimeout 7s", s)
	}
}
