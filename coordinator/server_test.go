package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// testSweep is a sweep of n trials named name-t000…
func testSweep(name string, n int) *pb.Sweep {
	s := &pb.Sweep{Name: name, DatasetSha256: "abc"}
	for i := range n {
		s.Trials = append(s.Trials, &pb.Trial{Name: name + "-t00" + string(rune('0'+i)), Index: int32(i), Rank: 8, Alpha: 16})
	}
	return s
}

// TestClientFollowsLeader runs the gRPC API on a 3-node group: a client that
// knows only a follower is redirected to the leader; after the leader stops,
// the client's next write finds the new leader; every node serves the state.
func TestClientFollowsLeader(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	leader := c.WaitForLeader(10 * time.Second)
	follower := (leader + 1) % 3
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A raw call on a follower is refused with a hint naming the leader
	// (once the follower has heard from it).
	conn, err := grpc.NewClient(c.APIAddrs[follower], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		_, err := pb.NewCoordinatorClient(conn).LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: testSweep("x", 1)})
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || len(st.Details()) != 1 || st.Details()[0].(*pb.LeaderHint).GetApiAddress() != c.APIAddrs[leader] {
			return fmt.Errorf("write on a follower: %v, want Unavailable with the leader's API address", err)
		}
		return nil
	})

	cl, err := coordinator.NewClient([]string{c.APIAddrs[follower]})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.LaunchSweep(ctx, testSweep("sw", 2)); err != nil {
		t.Fatal(err)
	}
	if err := cl.LaunchSweep(ctx, testSweep("sw", 2)); err != nil {
		t.Fatalf("a retried launch of the same sweep: %v, want success (launches are idempotent)", err)
	}
	if err := cl.LaunchSweep(ctx, testSweep("sw", 3)); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("another sweep under the same name: %v, want AlreadyExists", err)
	}

	// Stop the leader: the client, given every address, finds the new leader.
	c.Stop(leader)
	all := c.Client()
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
	for _, m := range c.Members {
		if m != nil {
			coordinatortest.Eventually(t, 10*time.Second, func() error {
				if !proto.Equal(m.Node().State(), got) {
					return errors.New("coordinator " + m.ID() + " disagrees with the leader's state")
				}
				return nil
			})
		}
	}
}
