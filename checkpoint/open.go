package checkpoint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Environment variables Open reads. Credentials come only from the
// environment or a file, never from flags, so they never show in ps.
const (
	// EnvS3Endpoint gives the S3 endpoint when S3Options.Endpoint is empty.
	EnvS3Endpoint = "LORAFT_S3_ENDPOINT"
	// EnvS3AccessKey gives the access key of loraft's own S3 credentials.
	EnvS3AccessKey = "LORAFT_S3_ACCESS_KEY"
	// EnvS3SecretKey gives the secret key of loraft's own S3 credentials.
	EnvS3SecretKey = "LORAFT_S3_SECRET_KEY"
	// EnvAWSAccessKey gives the access key of AWS-style credentials, used
	// when loraft's own are not set.
	EnvAWSAccessKey = "AWS_ACCESS_KEY_ID"
	// EnvAWSSecretKey gives the secret key of AWS-style credentials.
	EnvAWSSecretKey = "AWS_SECRET_ACCESS_KEY"
)

// S3Options are the settings for an s3:// store spec that do not fit in the
// URL, as command-line flags give them. The zero value reads everything
// from the environment.
type S3Options struct {
	// Endpoint is the S3 server as host:port or http(s)://host:port;
	// empty reads $LORAFT_S3_ENDPOINT.
	Endpoint string
	// Secure selects HTTPS for an endpoint given as host:port.
	Secure bool
	// Region is the bucket's region; empty asks the server.
	Region string
	// CredentialsFile names a file holding the credentials, either as two
	// lines "access_key=…" and "secret_key=…", or AWS-style, a [default]
	// section with aws_access_key_id and aws_secret_access_key. When set,
	// it is used instead of the environment.
	CredentialsFile string
	// CallTimeout bounds each store call (S3Config.CallTimeout,
	// DirStore.CallTimeout); zero means DefaultCallTimeout.
	CallTimeout time.Duration
}

// Open returns the store that spec names: "s3://bucket" or
// "s3://bucket/prefix" for an S3Store (endpoint and credentials from opt
// and the environment, see S3Options), any other string without "://" for a
// DirStore in that directory (created when missing). Credentials come from
// opt.CredentialsFile when set, else $LORAFT_S3_ACCESS_KEY and
// $LORAFT_S3_SECRET_KEY, else $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY.
func Open(ctx context.Context, spec string, opt S3Options) (Store, error) {
	if spec == "" {
		return nil, errors.New("store: empty spec (want a directory or s3://bucket/prefix)")
	}
	if !strings.Contains(spec, "://") {
		s, err := NewDirStore(spec)
		if err != nil {
			return nil, err
		}
		s.CallTimeout = opt.CallTimeout
		return s, nil
	}
	cfg, err := s3ConfigFor(spec, opt)
	if err != nil {
		return nil, err
	}
	cfg.CallTimeout = opt.CallTimeout
	return NewS3Store(ctx, cfg)
}

// s3ConfigFor builds the S3Config for an s3:// spec.
func s3ConfigFor(spec string, opt S3Options) (S3Config, error) {
	bucket, prefix, err := parseS3Spec(spec)
	if err != nil {
		return S3Config{}, err
	}
	endpoint := opt.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv(EnvS3Endpoint)
	}
	if endpoint == "" {
		return S3Config{}, fmt.Errorf("store %s: no S3 endpoint: set --s3-endpoint or %s", spec, EnvS3Endpoint)
	}
	access, secret, err := s3Credentials(opt.CredentialsFile)
	if err != nil {
		return S3Config{}, fmt.Errorf("store %s: %w", spec, err)
	}
	return S3Config{
		Endpoint:  endpoint,
		Bucket:    bucket,
		Prefix:    prefix,
		Secure:    opt.Secure,
		Region:    opt.Region,
		AccessKey: access,
		SecretKey: secret,
	}, nil
}

// parseS3Spec splits "s3://bucket/prefix" into bucket and prefix.
func parseS3Spec(spec string) (bucket, prefix string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("store URL %q: %s (want s3://bucket or s3://bucket/prefix)", redactURL(spec), why)
	}
	u, err := url.Parse(spec)
	if err != nil {
		return "", "", bad("not a URL")
	}
	switch {
	case u.Scheme != "s3":
		return "", "", bad(fmt.Sprintf("unsupported scheme %q", u.Scheme))
	case u.User != nil:
		return "", "", bad("credentials do not belong in the URL")
	case u.Host == "":
		return "", "", bad("no bucket")
	case u.Port() != "" || strings.HasSuffix(u.Host, ":"):
		return "", "", bad("a bucket has no port (give the endpoint with --s3-endpoint)")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", "", bad("no query or fragment allowed")
	}
	if err := s3utils.CheckValidBucketNameStrict(u.Host); err != nil {
		return "", "", bad(fmt.Sprintf("bucket %q: %v", u.Host, err))
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if reason := keyProblem(prefix); reason != "" {
			return "", "", bad("prefix " + reason)
		}
	}
	return u.Host, prefix, nil
}

// redactURL hides the user information of a URL-like string.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if i := strings.Index(s, "://"); i >= 0 {
		return s[:i] + "://…"
	}
	return s
}

// s3Credentials returns the access and secret key from file when it is
// set, or else from the environment.
func s3Credentials(file string) (access, secret string, err error) {
	if file != "" {
		return readCredentialsFile(file)
	}
	for _, pair := range [][2]string{{EnvS3AccessKey, EnvS3SecretKey}, {EnvAWSAccessKey, EnvAWSSecretKey}} {
		access, secret := os.Getenv(pair[0]), os.Getenv(pair[1])
		switch {
		case access != "" && secret != "":
			return access, secret, nil
		case access != "":
			return "", "", fmt.Errorf("s3 credentials: %s is set but %s is not", pair[0], pair[1])
		case secret != "":
			return "", "", fmt.Errorf("s3 credentials: %s is set but %s is not", pair[1], pair[0])
		}
	}
	return "", "", fmt.Errorf("no S3 credentials: set %s and %s (or %s and %s), or give a credentials file with --s3-credentials-file",
		EnvS3AccessKey, EnvS3SecretKey, EnvAWSAccessKey, EnvAWSSecretKey)
}

// readCredentialsFile parses a credentials file: "key=value" lines (spaces
// around '=' allowed, '#' and ';' start comments) outside any section or in
// a [default] section; other sections are ignored. The keys are access_key
// and secret_key, or aws_access_key_id and aws_secret_access_key. Errors
// name lines by number and never quote them, since a line may hold a secret.
func readCredentialsFile(path string) (access, secret string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials file: %w", err)
	}
	defer f.Close()
	// A credentials file is a few lines; reading at most one byte past the
	// limit keeps a wrong path (a device, a huge file) from costing more.
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialsFileBytes+1))
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials file %s: %w", path, err)
	}
	if len(b) > maxCredentialsFileBytes {
		return "", "", fmt.Errorf("s3 credentials file %s: longer than %d bytes", path, maxCredentialsFileBytes)
	}
	return parseCredentials(bytes.NewReader(b), path)
}

// maxCredentialsFileBytes bounds a credentials file.
const maxCredentialsFileBytes = 64 << 10

// parseCredentials parses the content of the credentials file path (see
// readCredentialsFile); path only names it in errors, which never quote a
// line or a value.
func parseCredentials(r io.Reader, path string) (access, secret string, err error) {
	section := ""
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return "", "", fmt.Errorf("s3 credentials file %s: line %d: malformed section header", path, n)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if section != "" && section != "default" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return "", "", fmt.Errorf("s3 credentials file %s: line %d: want key=value", path, n)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.ToLower(k) {
		case "access_key", "aws_access_key_id":
			access = v
		case "secret_key", "aws_secret_access_key":
			secret = v
		}
	}
	if err := sc.Err(); err != nil {
		// The scanner's errors (a line too long) quote nothing of the file.
		return "", "", fmt.Errorf("s3 credentials file %s: %w", path, err)
	}
	if access == "" || secret == "" {
		return "", "", fmt.Errorf("s3 credentials file %s: want access_key= and secret_key= lines, or a [default] section with aws_access_key_id and aws_secret_access_key", path)
	}
	return access, secret, nil
}
