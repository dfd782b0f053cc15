package dashboard

import (
	"context"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// Backend is what the dashboard asks of its coordinator. Implementations
// must be safe for concurrent use; values they return belong to the caller.
type Backend interface {
	// State returns this node's applied replicated state.
	State() *pb.State
	// Sweep returns one sweep with the leader's live progress of its
	// running trials, asking the leader when this node does not lead.
	// When no leader answers it returns this node's applied state with
	// Stale set (and no progress). An unknown sweep is a gRPC NotFound
	// status error, as the API's GetSweep returns.
	Sweep(ctx context.Context, name string) (*pb.SweepStatus, error)
	// Trainers returns the leader's soft state about each trainer it has
	// heard from (non-nil, asked of the leader on a follower), or nil when
	// no leader answers.
	Trainers() []TrainerLease
	// Raft returns this node's view of the raft group.
	Raft() RaftStatus
	// CancelSweep and ResumeRun are the API's writes: validated and
	// applied through raft on the leader, forwarded to the leader by a
	// follower for the dashboard's caller (CallerFrom(ctx)); an
	// Unavailable status (with the API's LeaderHint) when no leader takes it.
	CancelSweep(ctx context.Context, name string) error
	ResumeRun(ctx context.Context, trial string) error
}

// TrainerLease is the leader's memory of one trainer.
type TrainerLease struct {
	ID string
	// LastSeen is when its last heartbeat arrived.
	LastSeen time.Time
	// Lease is how long it may stay silent before it is declared lost.
	Lease time.Duration
}

// RaftStatus is one node's view of the group.
type RaftStatus struct {
	// ID is this node's server ID; State its raft state (Leader, Follower, …).
	ID, State string
	// LeaderID and LeaderAddr name the leader as this node knows it ("" when none).
	LeaderID, LeaderAddr      string
	Term                      uint64
	CommitIndex, AppliedIndex uint64
	LastLogIndex              uint64
	// LastContact is the time since this node last heard from the leader
	// (0 on the leader); Contacted is false when it never has.
	LastContact time.Duration
	Contacted   bool
	Members     []RaftMember
}

// RaftMember is a server of the raft configuration.
type RaftMember struct {
	ID, RaftAddr, APIAddr string
	// Suffrage is Voter, Nonvoter or Staging.
	Suffrage string
}
