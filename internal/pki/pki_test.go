package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		uri     string
		want    Identity
		wantErr error
	}{
		{"loraft://trainer/t-1", Identity{RoleTrainer, "t-1"}, nil},
		{"loraft://operator/alice.ops", Identity{RoleOperator, "alice.ops"}, nil},
		{"loraft://admin/x", Identity{}, ErrUnknownRole},
		{"loraft://viewer/", Identity{}, ErrBadID},
		{"loraft://viewer/a/b", Identity{}, ErrBadID},
		{"loraft://viewer:1/a", Identity{}, ErrNoIdentity},
		{"spiffe://viewer/a", Identity{}, ErrNoIdentity},
	} {
		u, err := url.Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseIdentity(u)
		if !errors.Is(err, tc.wantErr) || got != tc.want {
			t.Errorf("ParseIdentity(%s) = %v, %v; want %v, %v", tc.uri, got, err, tc.want, tc.wantErr)
		}
		if tc.wantErr == nil && got.String() != tc.uri {
			t.Errorf("%v.String() = %s, want %s", got, got.String(), tc.uri)
		}
	}
}

func TestIssueVerifiesAndCarriesIdentity(t *testing.T) {
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue(Identity{RoleCoordinator, "n1"}, []string{"n1.example", "10.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "n1.example", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Cert.VerifyHostname("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	id, err := FromCertificate(l.Cert)
	if err != nil || id != (Identity{RoleCoordinator, "n1"}) {
		t.Fatalf("FromCertificate = %v, %v", id, err)
	}
	if _, err := ca.Issue(Identity{"root", "x"}, nil, 0); !errors.Is(err, ErrUnknownRole) {
		t.Fatalf("issuing an unknown role: %v", err)
	}
}

func TestInitWritesPrivateFilesAndNeverOverwrites(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pki")
	reqs := []Request{{Identity{RoleCoordinator, "n1"}, []string{"localhost"}}, {Identity{RoleTrainer, "t1"}, nil},
		{Identity{RoleOperator, "ops"}, nil}, {Identity{RoleViewer, "view"}, nil}}
	if _, err := Init(out, reqs); err != nil {
		t.Fatal(err)
	}
	check := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	check(filepath.Join(out, "ca"), 0o700)
	check(filepath.Join(out, "ca", CAKeyFile), 0o600)
	for _, r := range reqs {
		dir := LeafDir(out, r.Identity)
		check(dir, 0o700)
		check(filepath.Join(dir, KeyFile), 0o600)
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if id, err := FromCertificate(leaf); err != nil || id != r.Identity {
			t.Errorf("%s: identity %v, %v", dir, id, err)
		}
	}
	if _, err := Init(out, reqs); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v, want ErrExists", err)
	}
	ca, err := LoadCA(filepath.Join(out, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := IssueTo(out, ca, Request{Identity: Identity{RoleTrainer, "t2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueTo(out, ca, Request{Identity: Identity{RoleTrainer, "t2"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("issuing t2 twice: %v, want ErrExists", err)
	}
}

// TestRequireRole runs real handshakes: the server admits only
// coordinators; a viewer, and a coordinator of another CA, are refused.
func TestRequireRole(t *testing.T) {
	ca, _ := NewCA("test", 0)
	other, _ := NewCA("other", 0)
	issue := func(ca *CA, id Identity) tls.Certificate {
		l, err := ca.Issue(id, []string{"127.0.0.1"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l.TLSCertificate()
	}
	server := WithRole(&tls.Config{Certificates: []tls.Certificate{issue(ca, Identity{RoleCoordinator, "n1"})}, ClientCAs: ca.Pool(),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, RoleCoordinator)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{
		{"coordinator", issue(ca, Identity{RoleCoordinator, "n2"}), true},
		{"viewer", issue(ca, Identity{RoleViewer, "v"}), false},
		{"stranger", issue(other, Identity{RoleCoordinator, "n2"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			client := WithRole(&tls.Config{Certificates: []tls.Certificate{tc.cert}, RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}, RoleCoordinator)
			done := make(chan error, 1)
			go func() { done <- tls.Server(b, server).Handshake() }()
			cerr := tls.Client(a, client).Handshake()
			a.Close()
			serr := <-done
			if tc.ok && (cerr != nil || serr != nil) {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			if !tc.ok && serr == nil {
				t.Fatal("server accepted the peer")
			}
		})
	}
}
