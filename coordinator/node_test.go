package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/loopback"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := loopback.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// cluster starts n nodes on loopback with fast timeouts and bootstraps them.
func cluster(t *testing.T, n int) ([]*Node, []NodeConfig) {
	t.Helper()
	addrs := freeAddrs(t, n)
	servers := map[string]string{}
	var cfgs []NodeConfig
	for i, a := range addrs {
		id := fmt.Sprintf("c%d", i)
		servers[id] = a
		cfgs = append(cfgs, NodeConfig{ID: id, Addr: a, Dir: t.TempDir(), HeartbeatTimeout: 200 * time.Millisecond,
			ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond})
	}
	var nodes []*Node
	for _, c := range cfgs {
		node, err := OpenNode(c)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, node)
	}
	if err := nodes[0].Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	return nodes, cfgs
}

func leaderOf(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n != nil && n.IsLeader() {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 10 s")
	return nil
}

// waitState polls until node's state equals want.
func waitState(t *testing.T, n *Node, want *pb.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !proto.Equal(n.State(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s state %v, want %v", n.cfg.ID, n.State(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestThreeNodeFailover: writes go through the leader and reach every node;
// a follower refuses writes naming the leader; after the leader stops, a
// new one is elected, keeps the state and takes writes; the old node
// restarts and catches up.
func TestThreeNodeFailover(t *testing.T) {
	ctx := context.Background()
	nodes, cfgs := cluster(t, 3)
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	}()
	leader := leaderOf(t, nodes)
	if err := leader.Apply(ctx, sweepCmd("sw", 2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n == leader {
			continue
		}
		err := n.Apply(ctx, sweepCmd("other", 1))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || nl.Leader != leader.cfg.Addr {
			t.Fatalf("write on follower %s: %v, want NotLeaderError naming %s", n.cfg.ID, err, leader.cfg.Addr)
		}
		waitState(t, n, leader.State())
	}

	// Stop the leader: a new one takes over with the same state.
	old := leader
	idx := 0
	for i, n := range nodes {
		if n == old {
			idx = i
		}
	}
	want := old.State()
	start := time.Now()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	nodes[idx] = nil
	leader = leaderOf(t, nodes)
	t.Logf("new leader %s after %v", leader.cfg.ID, time.Since(start).Round(time.Millisecond))
	if !proto.Equal(leader.State(), want) {
		t.Fatalf("new leader lost state")
	}
	assign := &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"tr1"}}}}
	if err := leader.Apply(ctx, assign); err != nil {
		t.Fatal(err)
	}

	// The stopped node restarts on its directory and catches up.
	back, err := OpenNode(cfgs[idx])
	if err != nil {
		t.Fatal(err)
	}
	nodes[idx] = back
	waitState(t, back, leader.State())
	if back.State().Sweeps[0].Trials[0].Generation != 1 {
		t.Fatal("restarted node did not apply the assignment")
	}
}

func TestJoinIsIdempotent(t *testing.T) {
	nodes, _ := cluster(t, 1)
	defer nodes[0].Close()
	leader := leaderOf(t, nodes)
	// A real, empty node to join (a dead one would cost the leader its quorum).
	extra := freeAddrs(t, 1)[0]
	joiner, err := OpenNode(NodeConfig{ID: "c9", Addr: extra, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()
	for range 2 {
		if err := leader.Join("c9", extra); err != nil {
			t.Fatal(err)
		}
	}
	cf := leader.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	if n := len(cf.Configuration().Servers); n != 2 {
		t.Fatalf("%d servers after joining c9 twice, want 2", n)
	}
	if err := leader.Remove("c9"); err != nil {
		t.Fatal(err)
	}
}

// TestAdvertisesConfiguredNames: raft advertises a member's address as
// configured, so a DNS name (as in Compose or Kubernetes) comes back in
// leader hints as that name, matching --peers, not as a resolved IP.
func TestAdvertisesConfiguredNames(t *testing.T) {
	servers := map[string]string{}
	var nodes []*Node
	for i, a := range freeAddrs(t, 3) {
		_, port, _ := net.SplitHostPort(a)
		id, name := fmt.Sprintf("c%d", i), "localhost:"+port
		servers[id] = name
		n, err := OpenNode(NodeConfig{ID: id, Addr: name, Dir: t.TempDir(), HeartbeatTimeout: 200 * time.Millisecond,
			ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		nodes = append(nodes, n)
	}
	if err := nodes[0].Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(t, nodes)
	for _, n := range nodes {
		if n == leader {
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for n.Leader() == "" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		var nl *NotLeaderError
		err := n.Apply(context.Background(), sweepCmd("x", 1))
		if !errors.As(err, &nl) || nl.Leader != leader.Addr() || !strings.HasPrefix(nl.Leader, "localhost:") {
			t.Fatalf("a follower names the leader %v (err %v), want %s", nl, err, leader.Addr())
		}
	}
	if _, err := OpenNode(NodeConfig{ID: "z", Addr: "0.0.0.0:0", Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "0.0.0.0") {
		t.Fatalf("an unspecified raft address was accepted: %v", err)
	}
}
