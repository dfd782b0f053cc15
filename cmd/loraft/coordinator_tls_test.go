package main

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
)

// TestCoordinatorMutualTLS: three coordinators whose raft transport and
// gRPC API both require certificates from one CA elect a leader and take
// writes; clients without a certificate, or with one from another CA, are
// refused.
func TestCoordinatorMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	caFile, certFile, keyFile := ca.WriteFiles(t, dir, "coordinator")
	serverTLS, clientTLS, err := loadMutualTLS(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	peers, apis := loopbackPeers(3, freePorts(t, 6))
	ctx := context.Background()
	for _, p := range peers {
		m, err := startCoordinator(ctx, coordinatorOptions{id: p.id, raftAddr: p.raft, apiAddr: p.api, dir: filepath.Join(dir, p.id),
			peers: peers, profile: "fast", lease: time.Second, serverTLS: serverTLS, clientTLS: clientTLS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
	}

	cl, err := coordinator.NewClient(apis, transportCredentials(clientTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.LaunchSweep(wctx, &pb.Sweep{Name: "tls", DatasetSha256: "x"}); err != nil {
		t.Fatalf("launch over mutual TLS: %v", err)
	}
	st, err := cl.ConsistentState(wctx)
	if err != nil || len(st.GetSweeps()) != 1 {
		t.Fatalf("consistent read over mutual TLS: %v %v", st, err)
	}

	other := testpki.New(t)
	foreign := other.Issue(t, "intruder")
	refused := map[string]grpc.DialOption{
		"plaintext":         transportCredentials(nil),
		"no client cert":    transportCredentials(&tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS13}),
		"another CA's cert": transportCredentials(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{foreign}, MinVersion: tls.VersionTLS13}),
	}
	for name, opt := range refused {
		t.Run(name, func(t *testing.T) {
			bad, err := coordinator.NewClient(apis[:1], opt)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			bad.Attempts = 1
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if _, err := bad.State(rctx); err == nil {
				t.Fatal("read succeeded without a trusted client certificate")
			}
		})
	}
}
