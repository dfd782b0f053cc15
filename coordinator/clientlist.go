package coordinator

import (
	"context"
	"fmt"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ListSweeps returns one page of sweep summaries (pageToken "" for the
// first; the answer's NextPageToken is "" on the last). Like Sweep, it
// asks the leader for a consistent page and, when no leader answers within
// ReadBudget, settles for one coordinator's applied state, with Stale set.
func (c *Client) ListSweeps(ctx context.Context, pageSize int32, pageToken string) (*pb.ListSweepsResponse, error) {
	req := &pb.ListSweepsRequest{PageSize: pageSize, PageToken: pageToken}
	return consistentRead(ctx, c, "sweeps", func(cl pb.CoordinatorClient, actx context.Context, consistent bool) (*pb.ListSweepsResponse, error) {
		return cl.ListSweeps(actx, &pb.ListSweepsRequest{PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), Consistent: consistent})
	}, func(r *pb.ListSweepsResponse) { r.Stale = true })
}

// ListTrials returns one page of trials, of one sweep when sweep is set
// and in one state when state is not UNSPECIFIED; as ListSweeps.
func (c *Client) ListTrials(ctx context.Context, sweep string, state pb.TrialState, pageSize int32, pageToken string) (*pb.ListTrialsResponse, error) {
	return consistentRead(ctx, c, "trials", func(cl pb.CoordinatorClient, actx context.Context, consistent bool) (*pb.ListTrialsResponse, error) {
		return cl.ListTrials(actx, &pb.ListTrialsRequest{Sweep: sweep, State: state, PageSize: pageSize, PageToken: pageToken, Consistent: consistent})
	}, func(r *pb.ListTrialsResponse) { r.Stale = true })
}

// DeleteSweep removes a finished or cancelled sweep and its trials from
// the coordinators' state (its store objects stay).
func (c *Client) DeleteSweep(ctx context.Context, name string) error {
	_, err := leaderCall(ctx, c, pb.CoordinatorClient.DeleteSweep, &pb.DeleteSweepRequest{Name: name})
	return err
}

// consistentRead asks the leader (consistent) within ReadBudget, then any
// coordinator (stale, marked by markStale). A refusal (InvalidArgument,
// NotFound, PermissionDenied) from the leader is the answer.
func consistentRead[T any](ctx context.Context, c *Client, what string, read func(pb.CoordinatorClient, context.Context, bool) (T, error), markStale func(T)) (T, error) {
	lctx, cancel := context.WithTimeout(ctx, ReadBudget)
	v, err := leaderCall(lctx, c, func(cl pb.CoordinatorClient, actx context.Context, _ struct{}, _ ...grpc.CallOption) (T, error) {
		return read(cl, actx, true)
	}, struct{}{})
	cancel()
	if err == nil || answered(err) {
		return v, err
	}
	v, serr := hedged(ctx, c, func(actx context.Context, cl pb.CoordinatorClient) (T, error) { return read(cl, actx, false) })
	if serr != nil {
		var zero T
		return zero, fmt.Errorf("listing %s: %w (leader: %v)", what, serr, err)
	}
	markStale(v)
	return v, nil
}

// answered reports whether err is a coordinator's answer rather than a
// failure to reach a leader.
func answered(err error) bool {
	switch status.Code(err) {
	case codes.NotFound, codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition:
		return true
	}
	return false
}

// EachSweep calls fn with every sweep summary, a page of pageSize at a
// time (0: DefaultPageSize), in name order, and reports whether any page
// was stale. It stops at fn's first error.
func (c *Client) EachSweep(ctx context.Context, pageSize int32, fn func(*pb.SweepSummary) error) (stale bool, err error) {
	token := ""
	for {
		page, err := c.ListSweeps(ctx, pageSize, token)
		if err != nil {
			return stale, err
		}
		stale = stale || page.GetStale()
		for _, s := range page.GetSweeps() {
			if err := fn(s); err != nil {
				return stale, err
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			return stale, nil
		}
	}
}

// EachTrial calls fn with every trial (of sweep, in state, as ListTrials
// filters them), a page at a time, in name order; as EachSweep.
func (c *Client) EachTrial(ctx context.Context, sweep string, state pb.TrialState, pageSize int32, fn func(*pb.TrialSummary) error) (stale bool, err error) {
	token := ""
	for {
		page, err := c.ListTrials(ctx, sweep, state, pageSize, token)
		if err != nil {
			return stale, err
		}
		stale = stale || page.GetStale()
		for _, t := range page.GetTrials() {
			if err := fn(t); err != nil {
				return stale, err
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			return stale, nil
		}
	}
}
