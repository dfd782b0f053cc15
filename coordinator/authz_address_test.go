package coordinator_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTrainerRegistersOnlyItsOwnAddress runs a coordinator over mutual TLS
// with certificates from `loraft certs`' CA (internal/pki): a trainer may
// register an all-reduce address whose host is one of its certificate's
// DNS or IP names, and no other (another trainer's name, an IP it does not
// hold, loopback when its certificate does not name it). A refusal is
// PermissionDenied naming the address and the certificate's names, and
// leaves the registered address as it was. Without TLS (loopback mode)
// nobody is authenticated and any address registers.
func TestTrainerRegistersOnlyItsOwnAddress(t *testing.T) {
	ca, err := pki.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(role pki.Role, id string, hosts ...string) tls.Certificate {
		l, err := ca.Issue(pki.Identity{Role: role, ID: id}, hosts, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l.TLSCertificate()
	}
	serverTLS := func(c tls.Certificate) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{c}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	}
	clientTLS := func(c tls.Certificate) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{c}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}
	}
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cert := issue(pki.RoleCoordinator, cfg.ID, "127.0.0.1")
		cfg.ServerTLS, cfg.ClientTLS = serverTLS(cert), clientTLS(cert)
	}})
	c.WaitForLeader(10 * time.Second)
	dial := func(cert tls.Certificate) pb.CoordinatorClient {
		t.Helper()
		conn, err := grpc.NewClient(c.APIAddrs[0], coordinator.DialTLS(clientTLS(cert)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewCoordinatorClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	viewer := dial(issue(pki.RoleViewer, "view"))
	registered := func(id string) string {
		t.Helper()
		st, err := viewer.GetState(ctx, &pb.GetStateRequest{Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range st.GetTrainers() {
			if tr.GetId() == id {
				return tr.GetAddress()
			}
		}
		return ""
	}
	t1 := dial(issue(pki.RoleTrainer, "trainer1", "trainer1", "10.1.2.3"))
	t2 := dial(issue(pki.RoleTrainer, "trainer2", "trainer2"))
	for _, tc := range []struct {
		name    string
		cl      pb.CoordinatorClient
		id      string
		addr    string
		wantErr string // "" when allowed
	}{
		{"its DNS name", t1, "trainer1", "trainer1:7500", ""},
		{"its IP", t1, "trainer1", "10.1.2.3:7501", ""},
		{"another trainer's name", t1, "trainer1", "trainer2:7500", `address "trainer2:7500": host is not among the certificate's DNS and IP names [trainer1 10.1.2.3]`},
		{"an IP it does not hold", t1, "trainer1", "10.1.2.4:7500", `address "10.1.2.4:7500"`},
		{"loopback, not in its certificate", t1, "trainer1", "127.0.0.1:7500", `address "127.0.0.1:7500"`},
		{"every interface", t1, "trainer1", "0.0.0.0:7500", `address "0.0.0.0:7500"`},
		{"trainer2 claiming trainer1's address", t2, "trainer2", "trainer1:7500", `address "trainer1:7500": host is not among the certificate's DNS and IP names [trainer2]`},
		{"trainer2 at its own name", t2, "trainer2", "trainer2:7500", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := registered(tc.id)
			_, err := tc.cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: tc.id, Address: tc.addr}})
			after := registered(tc.id)
			if tc.wantErr == "" {
				if err != nil || after != tc.addr {
					t.Fatalf("registering %s: %v, registered address %q", tc.addr, err, after)
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("registering %s: %v, want PermissionDenied with %q", tc.addr, err, tc.wantErr)
			}
			if after != before {
				t.Fatalf("a refused registration changed %s's address from %q to %q", tc.id, before, after)
			}
		})
	}

	t.Run("without TLS", func(t *testing.T) {
		plain := coordinatortest.NewCluster(t, 1, coordinatortest.Options{})
		plain.WaitForLeader(10 * time.Second)
		cl, err := coordinator.NewClient(plain.APIAddrs)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "trainer9", Address: "anywhere.example:7500"}}); err != nil {
			t.Fatalf("registering without TLS: %v", err)
		}
	})
}
