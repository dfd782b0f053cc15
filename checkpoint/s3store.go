package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// DefaultS3Timeout bounds connecting to an S3 endpoint and waiting for each
// response's headers when S3Config.Timeout is zero.
const DefaultS3Timeout = 10 * time.Second

// s3MaxRetries is how many times the client tries a request whose body can
// be replayed, backing off up to a second between tries (minio-go's default
// is 10, which makes a dead or hung server take long to report).
const s3MaxRetries = 5

// s3NotInitialized is MinIO's error code while it starts up, and
// s3StartupWait how long NewS3Store waits for it to finish.
const (
	s3NotInitialized = "XMinioServerNotInitialized"
	s3StartupWait    = 30 * time.Second
)

// S3Config says where an S3Store keeps its objects and how it connects. It
// holds the secret key: fmt's verbs (%v, %+v, %#v, %s) all print String's
// description, which leaves the credentials out.
type S3Config struct {
	// Endpoint is the S3 server's host:port, or a URL "http://host:port"
	// or "https://host:port" whose scheme then decides Secure. A host:port
	// that is not loopback is reached over HTTPS whatever Secure says:
	// plain HTTP to another machine must be asked for as http://host:port.
	Endpoint string
	// Bucket holds the objects; NewS3Store creates it when missing.
	Bucket string
	// Prefix is prepended to every key (with a '/' between), so several
	// stores can share a bucket; empty uses the bucket's root. Leading
	// and trailing slashes are ignored.
	Prefix string
	// Secure selects HTTPS for a loopback host:port too.
	Secure bool
	// Region is the bucket's region; empty asks the server (MinIO and
	// most S3-compatible servers answer us-east-1).
	Region string
	// AccessKey and SecretKey are the credentials. They never appear in
	// errors or in String.
	AccessKey, SecretKey string
	// Timeout bounds connecting and waiting for a response's headers on
	// each attempt of a request; zero means DefaultS3Timeout.
	Timeout time.Duration
	// CallTimeout bounds each store call as a whole, retries included:
	// a Stat, List or Delete, and a Put (which gets one more second per
	// MiB of its size). A Get's request must answer within it, and its
	// reader then fails when no data arrives for CallTimeout. Zero means
	// DefaultCallTimeout. A paused or black-holed server thus becomes an
	// error within CallTimeout instead of a hang.
	CallTimeout time.Duration
	// Log receives a WARN line for every failed call, naming the
	// operation, the key and the endpoint (never credentials); nil uses
	// slog.Default().
	Log *slog.Logger
}

// String describes the configuration without credentials, as
// "s3://bucket/prefix at http://host:port".
func (c S3Config) String() string {
	scheme := "http"
	if c.Secure {
		scheme = "https"
	}
	host := c.Endpoint
	if u, err := url.Parse(c.Endpoint); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		scheme, host = u.Scheme, u.Host
	} else if !loopbackHost(host) {
		scheme = "https"
	}
	loc := "s3://" + c.Bucket
	if p := strings.Trim(c.Prefix, "/"); p != "" {
		loc += "/" + p
	}
	return loc + " at " + scheme + "://" + host
}

// GoString returns String's description, so %#v leaves the credentials out
// too.
func (c S3Config) GoString() string { return "S3Config(" + c.String() + ")" }

// S3Store is a Store in an S3 bucket (MinIO or any S3-compatible server)
// through minio-go. The object at key K is the S3 object Prefix/K. S3 makes
// an object visible only once its upload completes, so a failed Put leaves
// the previous object, or none.
//
// Objects under the prefix that the store could not have written (keys
// ValidateKey rejects, such as the "dir/" markers some tools create) are
// left out of List. An S3Store is safe for concurrent use.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string        // "" or ending in '/'
	desc   string        // String's result
	call   time.Duration // CallTimeout, defaulted
	log    *slog.Logger  // nil: slog.Default()
}

var _ Store = (*S3Store)(nil)

// NewS3Store connects to the S3 server cfg names, creates the bucket when it
// is missing, and returns the store. It fails when the server cannot be
// reached or rejects the credentials.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	host, secure, err := parseS3Endpoint(cfg.Endpoint, cfg.Secure)
	if err != nil {
		return nil, err
	}
	cfg.Endpoint, cfg.Secure = host, secure
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 bucket %q: %w", cfg.Bucket, err)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if reason := keyProblem(prefix); reason != "" {
			return nil, fmt.Errorf("s3 prefix %q: %s", cfg.Prefix, reason)
		}
		prefix += "/"
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3 credentials: access key and secret key are both required")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultS3Timeout
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = timeout
	tr.ResponseHeaderTimeout = timeout
	tr.ExpectContinueTimeout = timeout
	client, err := minio.New(host, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     secure,
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", cfg, err)
	}
	s := &S3Store{client: client, bucket: cfg.Bucket, prefix: prefix, desc: cfg.String(),
		call: callTimeout(cfg.CallTimeout), log: cfg.Log}
	if err := s.ensureBucket(ctx, cfg.Region); err != nil {
		return nil, err
	}
	return s, nil
}

// loopbackHost reports whether a host:port endpoint names this machine
// (localhost or a loopback IP): only there is plain HTTP the default.
func loopbackHost(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		host = endpoint
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseS3Endpoint splits an endpoint given as host:port or as an http(s)
// URL into minio-go's host:port and whether to use TLS: the URL's scheme,
// else HTTPS unless secure is false and the host is loopback (credentials
// and checkpoints cross a network only encrypted unless http:// says
// otherwise).
func parseS3Endpoint(endpoint string, secure bool) (string, bool, error) {
	if endpoint == "" {
		return "", false, errors.New("s3 endpoint: empty")
	}
	if !strings.Contains(endpoint, "://") {
		if strings.ContainsAny(endpoint, "/?#@") {
			return "", false, fmt.Errorf("s3 endpoint %q: want host:port or http(s)://host:port", endpoint)
		}
		return endpoint, secure || !loopbackHost(endpoint), nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("s3 endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("s3 endpoint %q: want host:port or http(s)://host:port", u.Redacted())
	}
	return u.Host, u.Scheme == "https", nil
}

// ensureBucket creates the bucket when it does not exist. A server that
// answers that it is still starting (MinIO right after launch) is asked
// again until it is up, for at most s3StartupWait or until ctx ends.
func (s *S3Store) ensureBucket(ctx context.Context, region string) error {
	deadline := time.Now().Add(s3StartupWait)
	var ok bool
	for {
		var err error
		cctx, cancel := context.WithTimeout(ctx, s.call)
		ok, err = s.client.BucketExists(cctx, s.bucket)
		cancel()
		if err == nil {
			break
		}
		if minio.ToErrorResponse(err).Code != s3NotInitialized || time.Now().After(deadline) {
			return fmt.Errorf("s3 bucket check for %s: %w", s, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("s3 bucket check for %s: %w (%w)", s, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if ok {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.call)
	defer cancel()
	err := s.client.MakeBucket(cctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil {
		code := minio.ToErrorResponse(err).Code
		if code == minio.BucketAlreadyOwnedByYou || code == minio.BucketAlreadyExists {
			return nil // created concurrently; access is checked by the first use
		}
		return fmt.Errorf("s3 bucket creation for %s: %w", s, err)
	}
	return nil
}

// String returns "s3://bucket/prefix at http(s)://endpoint".
func (s *S3Store) String() string { return s.desc }

// objectName maps a key to the S3 object name.
func (s *S3Store) objectName(key string) string { return s.prefix + key }

// wrap adds op, key and the store to err, mapping S3's "no such key" to
// ErrNotFound.
func (s *S3Store) wrap(op, key string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey:
		return fmt.Errorf("%s %q in %s: %w", op, key, s, ErrNotFound)
	case minio.NoSuchBucket:
		return fmt.Errorf("%s %q in %s: bucket %q is gone: %w", op, key, s, s.bucket, err)
	}
	return fmt.Errorf("%s %q in %s: %w", op, key, s, err)
}

// Put implements Store with one PutObject of the known size (multipart for
// large objects); S3 makes the object visible only when the upload
// completes. Readers that can seek and read at offsets (bytes.Reader,
// os.File) are checked against size up front and replayed when a request
// is retried; other readers are streamed once.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	start := time.Now()
	defer func() { logFailure(s.log, s, "put", key, start, err) }()
	ctx, cancel := context.WithTimeout(ctx, putTimeout(s.call, size))
	defer cancel()
	if err := ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %q in %s: negative size %d", key, s, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q in %s: %w", key, s, err)
	}
	body, err := s3Body(ctx, r, size)
	if err != nil {
		return fmt.Errorf("put %q in %s: %w", key, s, err)
	}
	_, err = s.client.PutObject(ctx, s.bucket, s.objectName(key), body, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

// s3Body returns the reader to upload. A reader that minio-go can replay
// (io.ReaderAt and io.Seeker) is checked to hold exactly size bytes from
// its current offset and passed on as is; any other reader is wrapped so it
// fails the upload when it yields fewer or more than size bytes.
func s3Body(ctx context.Context, r io.Reader, size int64) (io.Reader, error) {
	type readSeekerAt interface {
		io.ReaderAt
		io.Seeker
	}
	if rs, ok := r.(readSeekerAt); ok {
		cur, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, fmt.Errorf("reader length: %w", err)
			}
			if _, err := rs.Seek(cur, io.SeekStart); err != nil {
				return nil, fmt.Errorf("reader length: %w", err)
			}
			if end-cur != size {
				return nil, fmt.Errorf("reader holds %d bytes, not the declared %d", end-cur, size)
			}
			return r, nil
		}
		// Not seekable after all (a pipe as an *os.File): stream it.
	}
	er := newExactReader(ctx, r, size)
	if size == 0 {
		// minio-go sends an empty body without reading: check r now.
		if err := er.checkEnd(); err != nil {
			return nil, err
		}
		return strings.NewReader(""), nil
	}
	return er, nil
}

// Get implements Store. It makes the request before returning, so a
// missing key fails here rather than at the first Read.
func (s *S3Store) Get(ctx context.Context, key string) (_ io.ReadCloser, err error) {
	start := time.Now()
	defer func() { logFailure(s.log, s, "get", key, start, err) }()
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	// The timer ends the call when the request, or later the body, makes
	// no progress for the call timeout.
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(s.call, cancel)
	obj, err := s.client.GetObject(ctx, s.bucket, s.objectName(key), minio.GetObjectOptions{})
	if err == nil {
		if _, err = obj.Stat(); err != nil {
			obj.Close()
		}
	}
	if err != nil {
		timer.Stop()
		cancel()
		return nil, s.wrap("get", key, err)
	}
	timer.Reset(s.call)
	return &stallReader{ReadCloser: obj, timer: timer, timeout: s.call, cancel: cancel}, nil
}

// Stat implements Store.
func (s *S3Store) Stat(ctx context.Context, key string) (_ ObjectInfo, err error) {
	start := time.Now()
	defer func() { logFailure(s.log, s, "stat", key, start, err) }()
	ctx, cancel := context.WithTimeout(ctx, s.call)
	defer cancel()
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.objectName(key), minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.wrap("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: info.Size, Modified: info.LastModified}, nil
}

// List implements Store.
func (s *S3Store) List(ctx context.Context, prefix string) (_ []ObjectInfo, err error) {
	start := time.Now()
	defer func() { logFailure(s.log, s, "list", prefix, start, err) }()
	ctx, cancel := context.WithTimeout(ctx, s.call)
	defer cancel()
	if err := validateListPrefix(prefix); err != nil {
		return nil, err
	}
	var out []ObjectInfo
	for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.prefix + prefix,
		Recursive: true,
	}) {
		if info.Err != nil {
			return nil, fmt.Errorf("list %q in %s: %w", prefix, s, info.Err)
		}
		key, ok := strings.CutPrefix(info.Key, s.prefix)
		if !ok || keyProblem(key) != "" {
			continue
		}
		out = append(out, ObjectInfo{Key: key, Size: info.Size, Modified: info.LastModified})
	}
	// S3 lists in UTF-8 byte order already; sorting keeps the contract
	// for servers that do not.
	slices.SortFunc(out, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) (err error) {
	start := time.Now()
	defer func() { logFailure(s.log, s, "delete", key, start, err) }()
	ctx, cancel := context.WithTimeout(ctx, s.call)
	defer cancel()
	if err := ValidateKey(key); err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.bucket, s.objectName(key), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.wrap("delete", key, err)
	}
	return nil
}
