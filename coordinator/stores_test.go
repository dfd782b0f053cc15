package coordinator

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// countFSM is the smallest FSM that shows entries were applied and survive
// a restart: it appends every entry's data.
type countFSM struct {
	mu      sync.Mutex
	entries [][]byte
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, bytes.Clone(l.Data))
	return len(f.entries)
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *countFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

func (f *countFSM) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}

// startNode runs a single-voter raft node over a real TCP transport on
// loopback with stores under dir.
func startNode(t *testing.T, dir string, fsm raft.FSM, bootstrap bool) (*raft.Raft, *Stores) {
	t.Helper()
	stores, err := OpenStores(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := raft.DefaultConfig()
	cfg.LocalID = "n1"
	cfg.Logger = hclog.NewNullLogger()
	r, err := raft.NewRaft(cfg, fsm, stores.Log, stores.Stable, stores.Snapshots, trans)
	if err != nil {
		t.Fatal(err)
	}
	if bootstrap {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: cfg.LocalID, Address: trans.LocalAddr()}}})
		if err := f.Error(); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	waitLeader(t, r)
	return r, stores
}

// TestStoresPersistLog applies entries on a raft node backed by OpenStores,
// restarts the node on the same directory, and sees every entry replayed.
func TestStoresPersistLog(t *testing.T) {
	dir := t.TempDir()
	fsm := &countFSM{}
	r, stores := startNode(t, dir, fsm, true)
	for i := 0; i < 5; i++ {
		if err := r.Apply([]byte{byte(i)}, 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := stores.Close(); err != nil {
		t.Fatal(err)
	}

	replayed := &countFSM{}
	r2, stores2 := startNode(t, dir, replayed, false)
	// A new leader commits a no-op, then applies the replayed log to the FSM.
	if err := r2.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	if got := replayed.len(); got != 5 {
		t.Fatalf("after restart the FSM saw %d entries, want 5", got)
	}
	if err := r2.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := stores2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := stores2.Close(); err == nil {
		t.Fatal("second Close returned no error")
	}
}
