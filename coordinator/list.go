package coordinator

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Page sizes of ListSweeps and ListTrials. A page of MaxPageSize trials
// without their histories stays far below MaxResponseBytes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Page tokens are base64 (URL alphabet, unpadded) of a kind prefix and the
// last name of the previous page. The next page starts after that name in
// sorted order, so names inserted meanwhile neither repeat nor push one off.
const (
	sweepTokenPrefix = "s1:"
	trialTokenPrefix = "t1:"
)

func encodePageToken(prefix, last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + last))
}

// decodePageToken returns the name a token resumes after ("" for the first page).
func decodePageToken(prefix, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	if len(token) > base64.RawURLEncoding.EncodedLen(len(prefix)+MaxNameLen) {
		return "", argErr("page_token", "%d bytes: not a token this coordinator issued", len(token))
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !strings.HasPrefix(string(raw), prefix) || len(raw) == len(prefix) {
		return "", argErr("page_token", "not a token this coordinator issued for this list (pass next_page_token as given)")
	}
	return string(raw[len(prefix):]), nil
}

// pageSize checks a request's page size; 0 is DefaultPageSize.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 0 || n > MaxPageSize:
		return 0, argErr("page_size", "%d, want 1 to %d (0: %d)", n, MaxPageSize, DefaultPageSize)
	}
	return int(n), nil
}

// ListSweeps returns a page of sweep summaries in name order.
func (s *Server) ListSweeps(ctx context.Context, req *pb.ListSweepsRequest) (*pb.ListSweepsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, s.status(err)
	}
	after, err := decodePageToken(sweepTokenPrefix, req.GetPageToken())
	if err != nil {
		return nil, s.status(err)
	}
	if req.GetConsistent() {
		if err := s.node.barrier(ctx); err != nil {
			return nil, s.status(err)
		}
	}
	out := &pb.ListSweepsResponse{}
	s.node.view(func(f *fsm) {
		names := make([]string, 0, len(f.sweeps))
		for name := range f.sweeps {
			if name > after {
				names = append(names, name)
			}
		}
		page, more := firstN(names, size)
		for _, name := range page {
			out.Sweeps = append(out.Sweeps, summarize(f.sweeps[name]))
		}
		if more {
			out.NextPageToken = encodePageToken(sweepTokenPrefix, page[len(page)-1])
		}
	})
	return out, nil
}

// firstN sorts the n smallest names to the front and returns them, and
// whether there were more.
func firstN(names []string, n int) ([]string, bool) {
	slices.Sort(names)
	if len(names) <= n {
		return names, false
	}
	return names[:n], true
}

// summarize counts a sweep's trials by state and finds its best trial.
func summarize(sw *pb.Sweep) *pb.SweepSummary {
	out := &pb.SweepSummary{Name: sw.GetName(), Trials: int32(len(sw.GetTrials())), Cancelled: sw.GetCancelled(), CreatedUnixMs: sw.GetCreatedUnixMs(),
		Metric: sw.GetMetric(), DatasetSha256: sw.GetDatasetSha256()}
	var best *pb.Trial
	for _, t := range sw.GetTrials() {
		switch t.GetState() {
		case pb.TrialState_TRIAL_STATE_PENDING:
			out.Pending++
		case pb.TrialState_TRIAL_STATE_RUNNING:
			out.Running++
		case pb.TrialState_TRIAL_STATE_SUCCEEDED:
			out.Succeeded++
		case pb.TrialState_TRIAL_STATE_FAILED:
			out.Failed++
		case pb.TrialState_TRIAL_STATE_CANCELLED:
			out.CancelledTrials++
		case pb.TrialState_TRIAL_STATE_STOPPED_EARLY:
			out.StoppedEarly++
		}
		if t.GetHasMetric() && (best == nil || t.GetBestMetric() > best.GetBestMetric()) {
			best = t
		}
	}
	if best != nil {
		out.BestTrial, out.BestMetric = best.GetName(), best.GetBestMetric()
	}
	return out
}

// ListTrials returns a page of trials in name order (trial names are
// unique across sweeps), optionally of one sweep and in one state, with
// the leader's live progress of running ones.
func (s *Server) ListTrials(ctx context.Context, req *pb.ListTrialsRequest) (*pb.ListTrialsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, s.status(err)
	}
	after, err := decodePageToken(trialTokenPrefix, req.GetPageToken())
	if err != nil {
		return nil, s.status(err)
	}
	if req.GetSweep() != "" {
		if err := checkName("sweep", req.GetSweep()); err != nil {
			return nil, s.status(err)
		}
	}
	if _, ok := pb.TrialState_name[int32(req.GetState())]; !ok {
		return nil, s.status(argErr("state", "%d is not a trial state", req.GetState()))
	}
	if req.GetConsistent() {
		if err := s.node.barrier(ctx); err != nil {
			return nil, s.status(err)
		}
	}
	out := &pb.ListTrialsResponse{}
	found := true
	s.node.view(func(f *fsm) {
		sweepOf := map[*pb.Trial]string{}
		var sweeps []*pb.Sweep
		if req.GetSweep() != "" {
			sw, ok := f.sweeps[req.GetSweep()]
			if !ok {
				found = false
				return
			}
			sweeps = []*pb.Sweep{sw}
		} else {
			for _, sw := range f.sweeps {
				sweeps = append(sweeps, sw)
			}
		}
		var names []string
		for _, sw := range sweeps {
			for _, t := range sw.GetTrials() {
				if t.GetName() <= after || (req.GetState() != pb.TrialState_TRIAL_STATE_UNSPECIFIED && t.GetState() != req.GetState()) {
					continue
				}
				// Only the trial the FSM addresses by this name (a legacy
				// sweep may repeat one): each name is listed once.
				if f.trials[t.GetName()] == t {
					sweepOf[t] = sw.GetName()
					names = append(names, t.GetName())
				}
			}
		}
		page, more := firstN(names, size)
		for _, name := range page {
			t := f.trials[name]
			c := proto.Clone(t).(*pb.Trial)
			c.History = nil // unbounded per trial: GetSweep has it
			out.Trials = append(out.Trials, &pb.TrialSummary{Sweep: sweepOf[t], Trial: c})
		}
		if more {
			out.NextPageToken = encodePageToken(trialTokenPrefix, page[len(page)-1])
		}
	})
	if !found {
		return nil, status.Errorf(codes.NotFound, "sweep %s: %v", req.GetSweep(), ErrNotFound)
	}
	if s.node.IsLeader() {
		for _, ts := range out.Trials {
			if t := ts.GetTrial(); t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
				ts.Progress = s.sched.live(t.GetName(), t.GetGeneration())
			}
		}
	}
	return out, nil
}

// DeleteSweep removes a sweep whose trials have all ended, with its trials,
// from the replicated state. A sweep with pending or running trials is
// FailedPrecondition naming them; its store objects are left alone.
func (s *Server) DeleteSweep(ctx context.Context, req *pb.DeleteSweepRequest) (*pb.DeleteSweepResponse, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, s.status(err)
	}
	if !s.node.IsLeader() {
		return nil, s.status(s.node.notLeader())
	}
	// Refuse a sweep visibly active without a raft entry; the FSM checks
	// again on the committed state.
	var err error
	s.node.view(func(f *fsm) {
		if sw, ok := f.sweeps[req.GetName()]; ok {
			if active := activeTrials(sw); len(active) > 0 {
				err = fmtActive(req.GetName(), active)
			}
		}
	})
	if err != nil {
		return nil, s.status(err)
	}
	if err := s.apply(ctx, &pb.Command{Cmd: &pb.Command_DeleteSweep{DeleteSweep: &pb.DeleteSweep{Name: req.GetName()}}}); err != nil {
		return nil, err
	}
	return &pb.DeleteSweepResponse{}, nil
}
