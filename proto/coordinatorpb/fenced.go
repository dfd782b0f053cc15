package coordinatorpb

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FencedCode is the status code with which coordinators refuse a trainer's
// report or result because its assignment is over: the trial has a newer
// generation, or it no longer runs (cancelled, stopped early, finished).
// The API uses it for nothing else.
const FencedCode = codes.Aborted

// IsFenced reports whether err is that answer. A trainer that gets it must
// stop the job; nothing else (a follower's redirect, a timeout, a client
// giving up for want of a leader) means that.
func IsFenced(err error) bool { return status.Code(err) == FencedCode }
