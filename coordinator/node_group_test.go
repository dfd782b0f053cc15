package coordinator_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

func createSweep(name string, n int) *pb.Command {
	return &pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: testSweep(name, n)}}}
}

// sameState waits until node's applied state equals want.
func sameState(t *testing.T, m *coordinator.Coordinator, want *pb.State) {
	t.Helper()
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		if got := m.Node().State(); !proto.Equal(got, want) {
			return errors.New("coordinator " + m.ID() + " has not applied the leader's state")
		}
		return nil
	})
}

// TestThreeNodeFailover: writes go through the leader and reach every node;
// a follower refuses writes naming the leader; after the leader stops, a
// new one is elected, keeps the state and takes writes; the old node
// restarts on its directory and catches up.
func TestThreeNodeFailover(t *testing.T) {
	ctx := context.Background()
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	li := c.WaitForLeader(10 * time.Second)
	leader := c.Members[li].Node()
	if err := leader.Apply(ctx, createSweep("sw", 2)); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.Members {
		if i == li {
			continue
		}
		err := m.Node().Apply(ctx, createSweep("other", 1))
		var nl *coordinator.NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, coordinator.ErrNotLeader) || nl.Leader != c.Configs[li].RaftAddr {
			t.Fatalf("write on follower %s: %v, want NotLeaderError naming %s", m.ID(), err, c.Configs[li].RaftAddr)
		}
		sameState(t, m, leader.State())
	}

	// Stop the leader: a new one takes over with the same state.
	want := leader.State()
	start := time.Now()
	c.Stop(li)
	ni := c.WaitForLeader(10 * time.Second)
	t.Logf("new leader %s after %v", c.Configs[ni].ID, time.Since(start).Round(time.Millisecond))
	leader = c.Members[ni].Node()
	if !proto.Equal(leader.State(), want) {
		t.Fatalf("new leader lost state")
	}
	assign := &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"tr1"}}}}
	if err := leader.Apply(ctx, assign); err != nil {
		t.Fatal(err)
	}

	// The stopped node restarts on its directory and catches up.
	c.Start(li)
	sameState(t, c.Members[li], leader.State())
	if c.Members[li].Node().State().Sweeps[0].Trials[0].Generation != 1 {
		t.Fatal("restarted node did not apply the assignment")
	}
}

// TestAdvertisesConfiguredNames: raft advertises a member's address as
// configured, so a DNS name (as in Compose or Kubernetes) comes back in
// leader hints as that name, matching the peers list, not as a resolved IP.
func TestAdvertisesConfiguredNames(t *testing.T) {
	byName := func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		return "localhost:" + port
	}
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.RaftAddr = byName(cfg.RaftAddr)
		peers := append([]coordinator.Peer(nil), cfg.Peers...)
		for i := range peers {
			peers[i].RaftAddr = byName(peers[i].RaftAddr)
		}
		cfg.Peers = peers
	}})
	li := c.WaitForLeader(10 * time.Second)
	for i, m := range c.Members {
		if i == li {
			continue
		}
		var nl *coordinator.NotLeaderError
		coordinatortest.Eventually(t, 10*time.Second, func() error {
			err := m.Node().Apply(context.Background(), createSweep("x", 1))
			if !errors.As(err, &nl) || nl.Leader == "" {
				return errors.New("the follower does not know the leader yet")
			}
			return nil
		})
		if want := c.Configs[li].RaftAddr; nl.Leader != want || !strings.HasPrefix(nl.Leader, "localhost:") {
			t.Fatalf("a follower names the leader %s, want %s", nl.Leader, want)
		}
	}
}
