package coordinator_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// blackHole accepts TCP connections and never answers, like a paused
// (SIGSTOPped) process or a black-holed host: the kernel completes the
// handshake, nothing more comes back.
func blackHole(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// TestClientSkipsBlackHole: a coordinator that accepts connections but never
// answers, first in the client's list, costs a read nothing but the hedge
// delay (the read succeeds though its attempt deadline is a minute) and a
// write one attempt, after which it is suspected and skipped.
func TestClientSkipsBlackHole(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	c.WaitForLeader(10 * time.Second)
	cl, err := coordinator.NewClient(append([]string{blackHole(t)}, c.APIAddrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	cl.AttemptTimeout = time.Minute
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.State(rctx); err != nil {
		t.Fatalf("read with a black hole first in the list: %v", err)
	}

	// A write's attempt gets half of what is left of its deadline: the
	// black hole takes one, the leader answers the next.
	wctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := cl.LaunchSweep(wctx, &pb.Sweep{Name: "bh", DatasetSha256: "x"}); err != nil {
		t.Fatalf("write with a black hole first in the list: %v", err)
	}
	// Suspected now: with no leader known, two attempts (a follower's
	// redirect, then the leader) are enough only because the black hole is
	// skipped.
	cl.Attempts = 2
	cl.SetLeaderForTest("")
	wctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := cl.CancelSweep(wctx2, "bh"); err != nil {
		t.Fatalf("write after the black hole was suspected: %v", err)
	}
}

// TestSweepReadIsStaleWithoutLeader: with the leader and another member
// gone, a sweep read answers from the remaining coordinator's applied
// state and says it is stale.
func TestSweepReadIsStaleWithoutLeader(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{})
	leader := c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	if err := cl.LaunchSweep(ctx, testSweep("stale", 2)); err != nil {
		t.Fatal(err)
	}
	st, err := cl.Sweep(ctx, "stale")
	if err != nil || st.GetStale() {
		t.Fatalf("read with a leader: %v (stale %v), want a fresh answer", err, st.GetStale())
	}
	survivor := (leader + 1) % 3
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		if len(c.Members[survivor].Node().State().GetSweeps()) != 1 {
			return errors.New("the survivor has not applied the sweep yet")
		}
		return nil
	})
	c.Stop(leader)
	c.Stop((leader + 2) % 3)
	st, err = cl.Sweep(ctx, "stale")
	if err != nil || !st.GetStale() || st.GetSweep().GetName() != "stale" {
		t.Fatalf("read without a leader: %v %v, want the survivor's state marked stale", st, err)
	}
}
