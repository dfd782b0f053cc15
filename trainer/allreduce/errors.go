package allreduce

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors, for errors.Is. An error from AllReduce wraps one of
// ErrStaleGeneration, ErrWrongRun, ErrPeerLost, ErrTimeout, ErrProtocol,
// ErrClosed or ErrStepOrder, or, when the caller cancelled ctx, ctx's error.
var (
	// ErrInvalidConfig is wrapped by Config.Validate and Listen for a bad Config.
	ErrInvalidConfig = errors.New("invalid all-reduce config")
	// ErrStaleGeneration means two ranks disagree on the ring's generation:
	// one of them was re-assigned. The rank with the older generation must
	// stop using the ring.
	ErrStaleGeneration = errors.New("stale ring generation")
	// ErrWrongRun means a chunk of another training run reached this ring.
	ErrWrongRun = errors.New("chunk of another run")
	// ErrPeerLost means a rank or a connection of the ring went away during
	// the step (it closed, crashed, gave up, or its stream broke).
	ErrPeerLost = errors.New("ring peer lost")
	// ErrTimeout means the step did not finish within Config.StepTimeout or
	// the caller's deadline.
	ErrTimeout = errors.New("all-reduce step timed out")
	// ErrProtocol means a peer sent a chunk that does not fit this rank's step:
	// another buffer length, or a segment, offset or order the algorithm
	// does not produce.
	ErrProtocol = errors.New("all-reduce protocol mismatch")
	// ErrClosed means the Ring was closed.
	ErrClosed = errors.New("ring closed")
	// ErrStepOrder means AllReduce was called with a step that is not after
	// the ring's previous step in this generation.
	ErrStepOrder = errors.New("all-reduce step out of order")
)

// RemoteError is a failure another rank saw first and sent along the ring:
// the stream from the left neighbour ended with an abort, or a peer refused
// this rank's chunks. It unwraps to Reason, so errors.Is sees the sentinel.
type RemoteError struct {
	// Rank is the rank that saw the failure first.
	Rank int
	// Reason is ErrStaleGeneration, ErrWrongRun, ErrPeerLost, ErrTimeout or
	// ErrProtocol.
	Reason error
	// Message is that rank's description of the failure.
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("rank %d reported: %s", e.Rank, e.Message)
}

// Unwrap returns Reason.
func (e *RemoteError) Unwrap() error { return e.Reason }

// reasonOf maps a step error to the reason that crosses the wire.
func reasonOf(err error) pb.AbortReason {
	switch {
	case errors.Is(err, ErrStaleGeneration):
		return pb.AbortReason_ABORT_REASON_STALE_GENERATION
	case errors.Is(err, ErrWrongRun):
		return pb.AbortReason_ABORT_REASON_WRONG_RUN
	case errors.Is(err, ErrTimeout):
		return pb.AbortReason_ABORT_REASON_TIMEOUT
	case errors.Is(err, ErrProtocol):
		return pb.AbortReason_ABORT_REASON_PROTOCOL
	default:
		return pb.AbortReason_ABORT_REASON_PEER_LOST
	}
}

// sentinelOf is the inverse of reasonOf; unknown reasons read as ErrPeerLost.
func sentinelOf(r pb.AbortReason) error {
	switch r {
	case pb.AbortReason_ABORT_REASON_STALE_GENERATION:
		return ErrStaleGeneration
	case pb.AbortReason_ABORT_REASON_WRONG_RUN:
		return ErrWrongRun
	case pb.AbortReason_ABORT_REASON_TIMEOUT:
		return ErrTimeout
	case pb.AbortReason_ABORT_REASON_PROTOCOL:
		return ErrProtocol
	default:
		return ErrPeerLost
	}
}

// abortOf describes err, seen by rank self, for the wire. A RemoteError keeps
// the rank and message of its origin, so the first failure travels unchanged.
func abortOf(self int, err error) *pb.Abort {
	if re, ok := errors.AsType[*RemoteError](err); ok {
		return &pb.Abort{Reason: reasonOf(re.Reason), OriginRank: uint32(re.Rank), Message: re.Message}
	}
	return &pb.Abort{Reason: reasonOf(err), OriginRank: uint32(self), Message: err.Error()}
}

// remoteOf turns an Abort from the wire back into an error.
func remoteOf(a *pb.Abort) *RemoteError {
	return &RemoteError{Rank: int(a.GetOriginRank()), Reason: sentinelOf(a.GetReason()), Message: a.GetMessage()}
}

// statusOf is the gRPC status a server ends a stream with when err, seen by
// rank self, stops it. Its details carry the Abort so the sender can rebuild
// the sentinel.
func statusOf(self int, err error) error {
	a := abortOf(self, err)
	code := codes.Aborted
	switch a.GetReason() {
	case pb.AbortReason_ABORT_REASON_STALE_GENERATION, pb.AbortReason_ABORT_REASON_WRONG_RUN:
		code = codes.FailedPrecondition
	case pb.AbortReason_ABORT_REASON_PROTOCOL:
		code = codes.InvalidArgument
	}
	st, derr := status.New(code, a.GetMessage()).WithDetails(a)
	if derr != nil {
		return status.Error(code, a.GetMessage())
	}
	return st.Err()
}

// sendError maps an error from a stream to rank peer to a step error. A status
// with an Abort in its details becomes a RemoteError; otherwise the code
// decides: FailedPrecondition is a stale generation (the fencing answer),
// DeadlineExceeded a timeout, anything else a lost peer.
func sendError(peer int, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: stream to rank %d: %w", ErrPeerLost, peer, err)
	}
	for _, d := range st.Details() {
		if a, ok := d.(*pb.Abort); ok {
			return remoteOf(a)
		}
	}
	switch st.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: rank %d refused the stream: %s", ErrStaleGeneration, peer, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: stream to rank %d: %w", ErrTimeout, peer, err)
	default:
		return fmt.Errorf("%w: stream to rank %d: %w", ErrPeerLost, peer, err)
	}
}

// contextError maps the end of a step's context to a step error.
func contextError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
	return fmt.Errorf("step canceled: %w", ctx.Err())
}
