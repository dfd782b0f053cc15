package allreduce

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRankDialsOnlyItsPeer: with PeerIDs, a rank accepts from the address
// of rank i only rank i's certificate. Ranks 1 and 2 hold each other's
// certificates (both trainers of the ring, so the servers admit them):
// the step fails, as rank 0's handshake with rank 1 does, naming the
// certificate it got and the one it wanted, instead of all-reducing with
// the ranks swapped.
func TestRankDialsOnlyItsPeer(t *testing.T) {
	ca := testpki.New(t)
	ids := []string{"t0", "t1", "t2"}
	holds := []string{"t0", "t2", "t1"}
	c := newCluster(t, 3, func(cfg *Config) {
		cert := ca.IssueAs(t, pki.RoleTrainer, holds[cfg.Rank])
		cfg.ServerTLS, cfg.ClientTLS, cfg.PeerIDs = ca.ServerConfig(cert), ca.ClientConfig(cert), ids
		cfg.StepTimeout = 3 * time.Second
	})
	bufs := [][]float32{{1, 2}, {10, 20}, {100, 200}}
	errs, _ := c.reduce(nil, func(r *Ring) error {
		return r.AllReduce(context.Background(), 1, bufs[r.Rank()])
	})
	if errs[0] == nil {
		t.Fatalf("rank 0 all-reduced with a rank 1 that holds t2's certificate: %v", bufs)
	}
	// Why: rank 0's dial options for rank 1 refuse the handshake (the step
	// itself waits for a first contact until its deadline).
	conn, err := grpc.NewClient(c.rings[0].cfg.Peers[1], c.rings[0].dialOptions(1)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewAllReduceClient(conn).Exchange(ctx)
	if want := "peer loraft://trainer/t2: certificate id not the one expected here (want trainer t1)"; status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
		t.Fatalf("rank 0 dialing rank 1: %v, want Unavailable with %q", err, want)
	}
}
