package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
)

// handshake runs a real TLS 1.3 handshake between a server presenting
// serverCert (and requiring a client certificate of ca) and client, and
// returns the client's error.
func handshake(t *testing.T, ca *CA, serverCert tls.Certificate, client *tls.Config) error {
	t.Helper()
	server := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.Pool(),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- tls.Server(b, server).Handshake() }()
	err := tls.Client(a, client).Handshake()
	a.Close()
	<-done
	return err
}

// TestClientVerifiesServerIdentity: a client built with WithIdentity
// accepts only a server certificate of the role (and id) it expects, and
// says which identity it got instead.
func TestClientVerifiesServerIdentity(t *testing.T) {
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id Identity) tls.Certificate {
		l, err := ca.Issue(id, []string{"127.0.0.1"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l.TLSCertificate()
	}
	me := issue(Identity{RoleTrainer, "t1"})
	base := &tls.Config{Certificates: []tls.Certificate{me}, RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	for _, tc := range []struct {
		name    string
		server  Identity
		role    Role
		ids     []string
		wantErr string // "" for accepted
	}{
		{"coordinator dialing a coordinator", Identity{RoleCoordinator, "n1"}, RoleCoordinator, nil, ""},
		{"coordinator dialing a viewer", Identity{RoleViewer, "n1"}, RoleCoordinator, nil, "peer loraft://viewer/n1: certificate role not allowed here"},
		{"coordinator dialing a trainer", Identity{RoleTrainer, "n1"}, RoleCoordinator, nil, "peer loraft://trainer/n1: certificate role not allowed here"},
		{"rank dialing its peer", Identity{RoleTrainer, "t2"}, RoleTrainer, []string{"t2"}, ""},
		{"rank dialing another trainer", Identity{RoleTrainer, "t3"}, RoleTrainer, []string{"t2"}, "peer loraft://trainer/t3: certificate id not the one expected here (want trainer t2)"},
		{"rank dialing a coordinator", Identity{RoleCoordinator, "t2"}, RoleTrainer, []string{"t2"}, "certificate role not allowed here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, ca, issue(tc.server), WithIdentity(base, tc.role, tc.ids...))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("handshake: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if WithIdentity(nil, RoleTrainer, "t1") != nil {
		t.Fatal("WithIdentity(nil) is not nil")
	}
}

func TestCheckAddress(t *testing.T) {
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue(Identity{RoleTrainer, "trainer1"}, []string{"trainer1", "*.loraft-trainer", "10.0.0.7"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"trainer1:7500", true},
		{"TRAINER1:7500", true},
		{"10.0.0.7:7500", true},
		{"loraft-trainer-0.loraft-trainer:7500", true},
		{"trainer2:7500", false},
		{"10.0.0.8:7500", false},
		{"a.b.loraft-trainer:7500", false}, // a wildcard covers one label
		{"127.0.0.1:7500", false},          // not in this certificate
		{":7500", false},
		{"0.0.0.0:7500", false},
		{"trainer1", false}, // no port
	} {
		err := CheckAddress(l.Cert, tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("CheckAddress(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err != nil && tc.addr != "trainer1" {
			if !errors.Is(err, ErrHostNotInCertificate) || !strings.Contains(err.Error(), "[trainer1 *.loraft-trainer 10.0.0.7]") || !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("CheckAddress(%q) = %v: want the address and the certificate's names", tc.addr, err)
			}
		}
	}
}
