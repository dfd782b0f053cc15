package coordinator

import "errors"

// Errors an applied command can return (as the raft.ApplyFuture's response).
// The API maps each to its own gRPC code (see Server.status):
//
//	not the leader             Unavailable, with a LeaderHint detail: retry there
//	ErrStaleGeneration,
//	ErrNotRunning              Aborted: the caller's assignment is over (fenced;
//	                           coordinatorpb.IsFenced)
//	ErrNotPending,
//	ErrNothingToResume,
//	ErrMemberConflict,
//	ErrSweepActive,
//	ErrTrainerBusy             FailedPrecondition: refused by the state machine
//	                           (or, for a member, by the membership check)
//	ErrNotFound                NotFound
//	ErrExists                  AlreadyExists
//	ErrBadCommand,
//	ErrUnknownVersion,
//	ErrInvalidArgument         InvalidArgument: a field out of bounds; an
//	                           *ArgumentError names it (validate.go). The
//	                           server checks every request before proposing
//	                           it, and the FSM checks every command again.
var (
	ErrUnknownVersion  = errors.New("unknown command version")
	ErrBadCommand      = errors.New("malformed command")
	ErrStaleGeneration = errors.New("stale generation")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrNotPending      = errors.New("only a pending trial can be assigned")
	ErrNotRunning      = errors.New("the trial is not running")
	ErrNothingToResume = errors.New("nothing to resume")
	// ErrSweepActive: DeleteSweep of a sweep with a pending or running trial.
	ErrSweepActive = errors.New("the sweep has pending or running trials (cancel it first)")
	// ErrTrainerBusy: ForgetTrainer of a trainer a running trial names.
	ErrTrainerBusy = errors.New("the trainer holds an assignment")
	// ErrMemberConflict: AddVoter for an id (or raft address) the group
	// already has with other addresses. Membership never rewrites a
	// member's addresses; the operator removes it, then adds it again.
	ErrMemberConflict = errors.New("already a member with other addresses (remove it first, then add it)")
)

// NotLeaderError is returned for writes on a follower; Leader is the
// leader's raft address when known, so clients can retry there.
type NotLeaderError struct {
	Leader string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the leader (no leader elected yet)"
	}
	return "not the leader; the leader is " + e.Leader
}

// ErrNotLeader is what a *NotLeaderError matches with errors.Is.
var ErrNotLeader = errors.New("not the leader")

// Is lets errors.Is(err, ErrNotLeader) match.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// ErrNoLeader is returned by a Client that found no leader to answer
// within its attempts or its context; it is never a refusal.
var ErrNoLeader = errors.New("no coordinator leader answered")
