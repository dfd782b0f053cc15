package coordinator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/loraft/loraft/internal/loopback"
)

// singleNode opens a one-voter raft node on loopback with LAN timeouts,
// bootstraps it and waits until it leads. It is closed when the test ends.
func singleNode(t *testing.T) *Node {
	t.Helper()
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := LANConfig()
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir = "c0", addrs[0], "127.0.0.1:0", t.TempDir()
	n, err := openNode(cfg.withDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(map[string]string{"c0": addrs[0]}); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n.raft)
	return n
}

// waitLeader waits for r's first leadership signal.
func waitLeader(t *testing.T, r *raft.Raft) {
	t.Helper()
	select {
	case <-r.LeaderCh():
	case <-time.After(10 * time.Second):
		t.Fatalf("no leader after 10s (state %v)", r.State())
	}
}

// TestJoinIsIdempotent: joining the same voter twice leaves one entry for
// it in raft's configuration.
func TestJoinIsIdempotent(t *testing.T) {
	leader := singleNode(t)
	// A real, empty node to join (a dead one would cost the leader its quorum).
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := LANConfig()
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir = "c9", addrs[0], "127.0.0.1:0", t.TempDir()
	joiner, err := openNode(cfg.withDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()
	for range 2 {
		if err := leader.Join("c9", addrs[0]); err != nil {
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
	// A member's address is never rewritten, and no other ID takes it.
	if err := leader.Join("c9", "127.0.0.1:1"); !errors.Is(err, ErrMemberConflict) || !strings.Contains(err.Error(), "c9") {
		t.Fatalf("joining c9 at another address: %v, want ErrMemberConflict naming c9", err)
	}
	if err := leader.Join("c8", addrs[0]); !errors.Is(err, ErrMemberConflict) {
		t.Fatalf("joining c8 at c9's address: %v, want ErrMemberConflict", err)
	}
	if cf := leader.raft.GetConfiguration(); len(cf.Configuration().Servers) != 2 || cf.Configuration().Servers[1].Address != raft.ServerAddress(addrs[0]) {
		t.Fatalf("configuration changed by refused joins: %v", cf.Configuration().Servers)
	}
	if err := leader.Remove("c9"); err != nil {
		t.Fatal(err)
	}
}
