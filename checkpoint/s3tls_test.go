package checkpoint_test

import (
	"testing"

	"github.com/loraft/loraft/checkpoint"
)

// TestS3HTTPSByDefault: a host:port endpoint on another machine is reached
// over HTTPS whether or not Secure is set; plain HTTP needs a loopback host
// or an explicit http:// endpoint.
func TestS3HTTPSByDefault(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		secure   bool
		want     string
	}{
		{"minio:9000", false, "https://minio:9000"},
		{"10.0.0.5:9000", false, "https://10.0.0.5:9000"},
		{"s3.example.com", false, "https://s3.example.com"},
		{"http://minio:9000", false, "http://minio:9000"},
		{"http://minio:9000", true, "http://minio:9000"}, // the URL's scheme decides
		{"https://minio:9000", false, "https://minio:9000"},
		{"127.0.0.1:9000", false, "http://127.0.0.1:9000"},
		{"localhost:9000", false, "http://localhost:9000"},
		{"[::1]:9000", false, "http://[::1]:9000"},
		{"127.0.0.1:9000", true, "https://127.0.0.1:9000"},
	} {
		cfg := checkpoint.S3Config{Endpoint: tc.endpoint, Secure: tc.secure, Bucket: "b"}
		if got, want := cfg.String(), "s3://b at "+tc.want; got != want {
			t.Errorf("endpoint %q, secure %v: %q, want %q", tc.endpoint, tc.secure, got, want)
		}
	}
}
