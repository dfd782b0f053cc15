package coordinator

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// snapshotsRetained is how many FSM snapshots a node keeps on disk.
const snapshotsRetained = 2

// Stores are the durable parts of one raft node, all under one directory:
// the log and stable store in raft.db (bbolt) and file snapshots in snapshots/.
type Stores struct {
	Log       raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore

	bolt *raftboltdb.BoltStore
}

// OpenStores opens (creating when needed) the raft stores under dir.
// logOutput receives the snapshot store's messages; nil discards them.
func OpenStores(dir string, logOutput io.Writer) (*Stores, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft data directory: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("raft log store %s: %w", filepath.Join(dir, "raft.db"), err)
	}
	if logOutput == nil {
		logOutput = io.Discard
	}
	snaps, err := raft.NewFileSnapshotStore(dir, snapshotsRetained, logOutput)
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("raft snapshot store in %s: %w", dir, err)
	}
	return &Stores{Log: bolt, Stable: bolt, Snapshots: snaps, bolt: bolt}, nil
}

// Close releases the log and stable store; raft must be shut down first.
func (s *Stores) Close() error {
	if s.bolt == nil {
		return errors.New("raft stores: already closed")
	}
	err := s.bolt.Close()
	s.bolt = nil
	return err
}
