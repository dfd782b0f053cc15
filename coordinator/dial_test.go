package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
)

// TestClientVerifiesCoordinatorRole: a client dialing with DialTLS reads
// from a coordinator that presents a coordinator's certificate, and fails
// the handshake, naming the certificate it got, against one that presents
// a trainer's or a viewer's certificate of the same CA (an address taken
// over by another role's process).
func TestClientVerifiesCoordinatorRole(t *testing.T) {
	ca := testpki.New(t)
	client := ca.ClientConfig(ca.IssueAs(t, pki.RoleOperator, "ops"))
	for _, tc := range []struct {
		name    string
		server  pki.Identity
		wantErr string // "" for a successful read
	}{
		{"coordinator", pki.Identity{Role: pki.RoleCoordinator, ID: "n1"}, ""},
		{"trainer", pki.Identity{Role: pki.RoleTrainer, ID: "n1"}, "peer loraft://trainer/n1: certificate role not allowed here (want [coordinator])"},
		{"viewer", pki.Identity{Role: pki.RoleViewer, ID: "n1"}, "peer loraft://viewer/n1: certificate role not allowed here (want [coordinator])"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
				cert := ca.IssueAs(t, tc.server.Role, tc.server.ID)
				cfg.ServerTLS, cfg.ClientTLS = ca.ServerConfig(cert), ca.ClientConfig(cert)
			}})
			c.WaitForLeader(10 * time.Second)
			cl, err := coordinator.NewClient(c.APIAddrs, coordinator.DialTLS(client))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			cl.Attempts = 3
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = cl.ConsistentState(ctx)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("reading from a coordinator: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("reading from a %s: %v, want the handshake refused with %q", tc.name, err, tc.wantErr)
			}
		})
	}
}
