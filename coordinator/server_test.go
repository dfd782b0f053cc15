package coordinator

import (
	"context"
	"net"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestClientFollowsLeader runs the gRPC API on a 3-node group: a client that
// knows only a follower is redirected to the leader; after the leader stops,
// the client's next write finds the new leader; every node serves the state.
func TestClientFollowsLeader(t *testing.T) {
	nodes, _ := cluster(t, 3)
	leader := leaderOf(t, nodes)
	apiAddrs := map[string]string{}
	var lis []net.Listener
	for _, n := range nodes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		apiAddrs[n.cfg.Addr] = l.Addr().String()
	}
	servers := make([]*grpc.Server, len(nodes))
	for i, n := range nodes {
		servers[i] = grpc.NewServer()
		pb.RegisterCoordinatorServer(servers[i], NewServer(n, ServerConfig{APIAddrs: apiAddrs}))
		go func(i int) { _ = servers[i].Serve(lis[i]) }(i)
	}
	defer func() {
		for i, n := range nodes {
			servers[i].Stop()
			if n != nil {
				n.Close()
			}
		}
	}()
	var follower int
	for i, n := range nodes {
		if n != leader {
			follower = i
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A raw call on a follower is refused with a hint naming the leader.
	conn, err := grpc.NewClient(lis[follower].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pb.NewCoordinatorClient(conn).LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: sweepCmd("x", 1).GetCreateSweep().GetSweep()})
	conn.Close()
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 || st.Details()[0].(*pb.LeaderHint).GetApiAddress() != apiAddrs[leader.cfg.Addr] {
		t.Fatalf("write on a follower: %v, want FailedPrecondition with the leader's API address", err)
	}

	cl, err := NewClient([]string{lis[follower].Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.LaunchSweep(ctx, sweepCmd("sw", 2).GetCreateSweep().GetSweep()); err != nil {
		t.Fatal(err)
	}
	if err := cl.LaunchSweep(ctx, sweepCmd("sw", 2).GetCreateSweep().GetSweep()); err != nil {
		t.Fatalf("a retried launch of the same sweep: %v, want success (launches are idempotent)", err)
	}
	if err := cl.LaunchSweep(ctx, sweepCmd("sw", 3).GetCreateSweep().GetSweep()); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("another sweep under the same name: %v, want AlreadyExists", err)
	}

	// Stop the leader's node and API: the client, given every address, finds the new leader.
	for i, n := range nodes {
		if n == leader {
			servers[i].Stop()
			n.Close()
			nodes[i] = nil
		}
	}
	all, err := NewClient([]string{lis[0].Addr().String(), lis[1].Addr().String(), lis[2].Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if err := all.CancelSweep(ctx, "sw"); err != nil {
		t.Fatalf("cancel after failover: %v", err)
	}
	got, err := all.ConsistentState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Sweeps) != 1 || !got.Sweeps[0].Cancelled {
		t.Fatalf("state after failover: %v", got)
	}
	for _, n := range nodes {
		if n != nil {
			waitState(t, n, got)
			if !proto.Equal(n.State(), got) {
				t.Fatal("nodes disagree")
			}
		}
	}
}
