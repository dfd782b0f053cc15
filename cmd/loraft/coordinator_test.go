package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// TestCoordinatorJoinAndRemove: a fourth coordinator started without
// --peers joins the group through `loraft coordinator join`, receives the
// replicated state and serves it; `coordinator remove` takes it out again
// and the group keeps taking writes.
func TestCoordinatorJoinAndRemove(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 8)
	peers, apis := loopbackPeers(3, ports)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func(o coordinatorOptions) {
		t.Helper()
		m, err := startCoordinator(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
	}
	for _, p := range peers {
		start(coordinatorOptions{id: p.id, raftAddr: p.raft, apiAddr: p.api, dir: filepath.Join(dir, p.id), peers: peers, profile: "fast", lease: time.Second})
	}
	cl, err := coordinator.NewClient(apis)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "before-join", DatasetSha256: "x"}); err != nil {
		t.Fatal(err)
	}

	start(coordinatorOptions{id: "n4", raftAddr: ports[6], apiAddr: ports[7], dir: filepath.Join(dir, "n4"), profile: "fast", lease: time.Second})
	t.Setenv("LORAFT_COORDINATORS", strings.Join(apis, ","))
	if out, err := run(t, "coordinator", "join", "--id", "n4", "--raft-addr", ports[6], "--api-addr", ports[7]); err != nil || !strings.Contains(out, "joined") {
		t.Fatalf("coordinator join: %v\n%s", err, out)
	}
	n4, err := coordinator.NewClient([]string{ports[7]})
	if err != nil {
		t.Fatal(err)
	}
	defer n4.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := n4.State(ctx)
		if err == nil && len(st.GetSweeps()) == 1 && len(st.GetMembers()) == 1 && st.GetMembers()[0].GetApiAddress() == ports[7] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the joined coordinator never served the replicated state: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := run(t, "coordinator", "join", "--id", "n4", "--raft-addr", ports[6], "--api-addr", ports[7]); err != nil {
		t.Fatalf("joining again is not idempotent: %v\n%s", err, out)
	}
	if out, err := run(t, "coordinator", "remove", "--id", "n4"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("coordinator remove: %v\n%s", err, out)
	}
	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "after-remove", DatasetSha256: "x"}); err != nil {
		t.Fatalf("write after removing a member: %v", err)
	}
	st, err := cl.ConsistentState(ctx)
	if err != nil || len(st.GetSweeps()) != 2 || len(st.GetMembers()) != 0 {
		t.Fatalf("state after remove: %v %v", st, err)
	}
}

// loopbackPeers names n coordinators n1…nN on pairs of ports (raft, API)
// and returns them with their API addresses.
func loopbackPeers(n int, ports []string) ([]peerSpec, []string) {
	var peers []peerSpec
	var apis []string
	for i := range n {
		peers = append(peers, peerSpec{fmt.Sprintf("n%d", i+1), ports[2*i], ports[2*i+1]})
		apis = append(apis, ports[2*i+1])
	}
	return peers, apis
}
