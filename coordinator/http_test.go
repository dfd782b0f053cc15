package coordinator_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
)

// get fetches url with client and returns the status and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestHTTPListenerPlain serves /metrics and a mounted handler over plain
// HTTP on loopback, to anyone, and stops serving on Close.
func TestHTTPListenerPlain(t *testing.T) {
	mounted := make(chan *coordinator.Coordinator, 1)
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(i int, cfg *coordinator.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.HTTPHandlers = func(co *coordinator.Coordinator, mux *http.ServeMux) {
			mounted <- co
			mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from "+co.ID()) })
		}
	}})
	m := c.Members[0]
	if co := <-mounted; co != m {
		t.Fatalf("HTTPHandlers got coordinator %p, want the one Open returned (%p)", co, m)
	}
	if !strings.HasPrefix(m.HTTPURL(), "http://127.0.0.1:") || strings.HasSuffix(m.HTTPAddr(), ":0") {
		t.Fatalf("HTTPURL %q, HTTPAddr %q: want http://127.0.0.1:<chosen port>/", m.HTTPURL(), m.HTTPAddr())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"metrics", "go_goroutines", http.StatusOK},
		{"metrics", "process_resident_memory_bytes", http.StatusOK},
		{"hello", "hello from n1", http.StatusOK},
		{"nothing-here", "404 page not found", http.StatusNotFound},
	} {
		code, body := get(t, client, m.HTTPURL()+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET /%s: %d %.200q, want %d containing %q", tc.path, code, body, tc.code, tc.want)
		}
	}
	url := m.HTTPURL()
	c.Stop(0)
	if resp, err := client.Get(url + "metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /metrics after Close answered %s, want a refused connection", resp.Status)
	}
}

// TestHTTPListenerTLS serves HTTPS with the API's certificate: /metrics
// admits the read roles' client certificates, answers 401 without one and
// 403 for a trainer's or a foreign CA's.
func TestHTTPListenerTLS(t *testing.T) {
	ca := testpki.New(t)
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(i int, cfg *coordinator.Config) {
		cert := ca.IssueAs(t, pki.RoleCoordinator, cfg.ID)
		cfg.ServerTLS, cfg.ClientTLS = ca.ServerConfig(cert), ca.ClientConfig(cert)
		cfg.HTTPAddr = "127.0.0.1:0"
	}})
	url := c.Members[0].HTTPURL()
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("HTTPURL %q with TLS, want https://", url)
	}
	other := testpki.New(t)
	with := func(certs ...tls.Certificate) *http.Client {
		tc := &tls.Config{RootCAs: ca.Pool, Certificates: certs, MinVersion: tls.VersionTLS13}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
		code   int
		want   string
	}{
		{"viewer", with(ca.IssueAs(t, pki.RoleViewer, "grafana")), http.StatusOK, "go_goroutines"},
		{"operator", with(ca.IssueAs(t, pki.RoleOperator, "ops")), http.StatusOK, "go_goroutines"},
		{"coordinator", with(ca.IssueAs(t, pki.RoleCoordinator, "n9")), http.StatusOK, "go_goroutines"},
		{"no certificate", with(), http.StatusUnauthorized, "no credentials"},
		{"trainer", with(ca.IssueAs(t, pki.RoleTrainer, "t1")), http.StatusForbidden, "role trainer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.client, url+"metrics")
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("GET /metrics as %s: %d %.200q, want %d containing %q", tc.name, code, body, tc.code, tc.want)
			}
		})
	}
	// A certificate from another CA fails the handshake: VerifyClientCertIfGiven
	// verifies every certificate it is given.
	if resp, err := with(other.IssueAs(t, pki.RoleViewer, "stranger")).Get(url + "metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /metrics with a foreign CA's certificate answered %s, want a failed handshake", resp.Status)
	}
}

// TestHTTPAddrValidated refuses an HTTPAddr that is not host:port, naming the field.
func TestHTTPAddrValidated(t *testing.T) {
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir, cfg.HTTPAddr = "n1", "127.0.0.1:1", "127.0.0.1:2", t.TempDir(), "localhost"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "HTTPAddr: localhost") {
		t.Fatalf("Validate with HTTPAddr \"localhost\": %v, want an HTTPAddr error", err)
	}
}
