package allreduce

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestMutualTLS runs a 3-rank all-reduce over mutual TLS, then checks that
// clients without a certificate, or without TLS, are refused.
func TestMutualTLS(t *testing.T) {
	pki := testpki.New(t)
	c := newCluster(t, 3, func(cfg *Config) {
		cert := pki.Issue(t, "rank")
		cfg.ServerTLS = &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pki.Pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
		}
		cfg.ClientTLS = &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      pki.Pool,
			MinVersion:   tls.VersionTLS13,
		}
	})
	bufs := [][]float32{{1, 2, 3, 4}, {10, 20, 30, 40}, {100, 200, 300, 400}}
	c.allReduce(t, 1, bufs)
	for r := range bufs {
		if bufs[r][3] != 444 {
			t.Fatalf("rank %d: %v, want [111 222 333 444]", r, bufs[r])
		}
	}

	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"TLS without a client certificate", credentials.NewTLS(&tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS13})},
		{"plaintext", insecure.NewCredentials()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(c.rings[0].Addr(), grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := pb.NewAllReduceClient(conn).Exchange(ctx)
			if err == nil {
				_ = stream.Send(&pb.Chunk{RunId: testRun, Generation: 1, Step: 9, FromRank: 2, Phase: pb.Phase_PHASE_REDUCE_SCATTER, Data: make([]byte, 4), Length: 4})
				_, err = stream.CloseAndRecv()
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("got %v, want Unavailable (refused handshake)", err)
			}
			t.Logf("refused: %v", err)
			if attached(c.rings[0], 9, 2) {
				t.Fatal("the server accepted a chunk from a client it should have refused")
			}
		})
	}
}

// TestRingAdmitsOnlyItsTrainers: with PeerIDs the ranks, whose
// certificates name them loraft://trainer/<id>, all-reduce; a trainer of
// the same CA that is not in the ring, and a viewer, are refused at the
// handshake.
func TestRingAdmitsOnlyItsTrainers(t *testing.T) {
	ca := testpki.New(t)
	ids := []string{"t0", "t1", "t2"}
	c := newCluster(t, 3, func(cfg *Config) {
		cert := ca.IssueAs(t, pki.RoleTrainer, ids[cfg.Rank])
		cfg.ServerTLS, cfg.ClientTLS, cfg.PeerIDs = ca.ServerConfig(cert), ca.ClientConfig(cert), ids
	})
	bufs := [][]float32{{1, 2}, {10, 20}, {100, 200}}
	c.allReduce(t, 1, bufs)
	if bufs[2][1] != 222 {
		t.Fatalf("rank 2: %v, want [111 222]", bufs[2])
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"a trainer outside the ring", ca.IssueAs(t, pki.RoleTrainer, "t9")},
		{"a viewer", ca.IssueAs(t, pki.RoleViewer, "t1")},
		{"no identity", ca.Issue(t, "t1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(c.rings[0].Addr(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(tc.cert))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := pb.NewAllReduceClient(conn).Exchange(ctx)
			if err == nil {
				_ = stream.Send(&pb.Chunk{RunId: testRun, Generation: 1, Step: 9, FromRank: 2, Phase: pb.Phase_PHASE_REDUCE_SCATTER, Data: make([]byte, 4), Length: 4})
				_, err = stream.CloseAndRecv()
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("got %v, want Unavailable (refused handshake)", err)
			}
			if attached(c.rings[0], 9, 2) {
				t.Fatal("the server accepted a chunk from a client it should have refused")
			}
		})
	}
}
