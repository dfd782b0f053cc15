// Package miniotest starts a real MinIO server for a test that needs an S3
// object store, and stops it when the test ends. It never mocks S3: the
// server is the pinned MinIO binary that deploy/minio.sh builds (found
// through $LORAFT_MINIO or as "minio" on $PATH); internal/proc runs it, and
// this package only ties it to a test's lifetime.
package miniotest

import (
	"testing"

	"github.com/loraft/loraft/internal/proc"
)

// Server is a running MinIO server: Endpoint, AccessKey, SecretKey, Dir,
// and Stop, Kill, Restart, Pause, Resume, PID.
type Server = proc.MinIO

// Start launches a MinIO server for t and stops it when t ends. It fails t
// when the binary is missing or the server does not become ready.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := proc.StartMinIO(t.TempDir())
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
