package coordinator

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/loraft/loraft/coordinator/authz"
	"github.com/loraft/loraft/coordinator/dashboard"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Dashboard returns a Config.HTTPHandlers that serves the web dashboard
// (package dashboard) at / of the coordinator's HTTP listener, reading
// this coordinator and writing through its API's handlers. dc.Backend is
// filled in (DashboardBackend) unless set. ctx bounds the dashboard's
// progress sampler: pass the process's (or the test's) context.
func Dashboard(ctx context.Context, dc dashboard.Config) func(*Coordinator, *http.ServeMux) {
	return func(c *Coordinator, mux *http.ServeMux) {
		if dc.Backend == nil {
			dc.Backend = DashboardBackend(c)
		}
		if dc.Logger == nil {
			dc.Logger = c.cfg.Logger
		}
		h, err := dashboard.New(dc)
		if err != nil { // the embedded files are broken: a build problem
			c.cfg.Logger.Error("the dashboard cannot start", "id", c.cfg.ID, "err", err)
			return
		}
		mux.Handle("/", h)
		go h.Run(ctx)
	}
}

// DashboardBackend is the dashboard's view of c: its applied state, raft's
// view of the group, and the leader's soft state (live progress, trainer
// heartbeats) and writes. On the leader these are method calls; on a
// follower they go to the leader's API over gRPC with c's own client
// identity (Config.ClientTLS), so that whichever coordinator's dashboard a
// user opens shows live progress and takes an operator's cancel. A read
// the leader does not answer within dashboardReadTimeout falls back to c's
// applied state, marked stale; a write is forwarded for the dashboard's
// caller (dashboard.CallerFrom), whom the leader checks and audits as
// "who=<caller> via=<this coordinator>" (authz.OnBehalfOf).
func DashboardBackend(c *Coordinator) dashboard.Backend { return dashboardBackend{c: c} }

// dashboardBackend answers the dashboard from one coordinator.
type dashboardBackend struct{ c *Coordinator }

var _ dashboard.Backend = dashboardBackend{}

// dashboardReadTimeout bounds a follower's read of the leader's soft
// state: the page polls every half second and must never hang on a
// leader that stopped answering.
const dashboardReadTimeout = time.Second

// dashboardWriteWait bounds how long a follower's dashboard write waits
// for a leader (an election takes a second or two), and
// dashboardWriteAttempt one try of it.
const (
	dashboardWriteWait    = 10 * time.Second
	dashboardWriteAttempt = 2 * time.Second
)

func (b dashboardBackend) State() *pb.State { return b.c.node.State() }

// remoteLeader returns a client of the leader when another member leads
// (nil when this node leads, or no leader is known).
func (b dashboardBackend) remoteLeader() (pb.CoordinatorClient, string) {
	addr, self := b.c.leaderAPI()
	if addr == "" || self {
		return nil, ""
	}
	cl, err := b.c.link.client(addr)
	if err != nil {
		return nil, ""
	}
	return cl, addr
}

func (b dashboardBackend) Sweep(ctx context.Context, name string) (*pb.SweepStatus, error) {
	if !b.c.node.IsLeader() {
		if cl, addr := b.remoteLeader(); cl != nil {
			rctx, cancel := context.WithTimeout(ctx, dashboardReadTimeout)
			st, err := cl.GetSweep(rctx, &pb.GetSweepRequest{Name: name})
			cancel()
			if err == nil || status.Code(err) == codes.NotFound {
				return st, err
			}
			b.c.cfg.Logger.Debug("dashboard: the leader's live progress is out of reach", "id", b.c.cfg.ID, "leader", addr, "err", err)
		}
	}
	st, err := b.c.api.GetSweep(ctx, &pb.GetSweepRequest{Name: name})
	if err != nil {
		return nil, err
	}
	// A leader's own answer has its live progress; anything else is this
	// node's applied state, perhaps behind the group's.
	st.Stale = !b.c.node.IsLeader()
	return st, nil
}

func (b dashboardBackend) CancelSweep(ctx context.Context, name string) error {
	return b.write(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.CancelSweep(ctx, &pb.CancelSweepRequest{Name: name})
		return err
	}, func(ctx context.Context) error {
		_, err := b.c.api.CancelSweep(ctx, &pb.CancelSweepRequest{Name: name})
		return err
	})
}

func (b dashboardBackend) ResumeRun(ctx context.Context, trial string) error {
	return b.write(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.ResumeRun(ctx, &pb.ResumeRunRequest{Run: trial})
		return err
	}, func(ctx context.Context) error {
		_, err := b.c.api.ResumeRun(ctx, &pb.ResumeRunRequest{Run: trial})
		return err
	})
}

// write runs a write on this node when it leads (local; the dashboard
// audits it) or forwards it to the leader for the dashboard's caller
// (remote), again while the answer is Unavailable (no leader yet, or it
// moved) until dashboardWriteWait or ctx ends. Both writes may be
// retried: a second CancelSweep changes nothing, and a second ResumeRun of
// a run the first one requeued is refused as not resumable.
func (b dashboardBackend) write(ctx context.Context, remote func(context.Context, pb.CoordinatorClient) error, local func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, dashboardWriteWait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var err error
		if cl, _ := b.remoteLeader(); b.c.node.IsLeader() || cl == nil {
			err = local(ctx) // on a follower without a leader: Unavailable, with the hint
		} else {
			actx, acancel := context.WithTimeout(ctx, dashboardWriteAttempt)
			if who, role, ok := dashboard.CallerFrom(ctx); ok {
				actx = authz.OnBehalfOf(actx, who, role)
			}
			err = remote(actx, cl)
			acancel()
		}
		if c := status.Code(err); c != codes.Unavailable && (c != codes.DeadlineExceeded || ctx.Err() != nil) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

func (b dashboardBackend) Trainers() []dashboard.TrainerLease {
	if b.c.node.IsLeader() {
		return b.c.api.sched.leases()
	}
	cl, _ := b.remoteLeader()
	if cl == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), dashboardReadTimeout)
	defer cancel()
	resp, err := cl.TrainerLeases(ctx, &pb.TrainerLeasesRequest{})
	if err != nil {
		return nil
	}
	now := time.Now()
	out := make([]dashboard.TrainerLease, 0, len(resp.GetLeases()))
	for _, l := range resp.GetLeases() {
		out = append(out, dashboard.TrainerLease{ID: l.GetTrainerId(), LastSeen: now.Add(-time.Duration(l.GetAgeMs()) * time.Millisecond),
			Lease: time.Duration(l.GetLeaseMs()) * time.Millisecond})
	}
	return out
}

// leases is the scheduler's memory of each trainer it has heard from
// (non-nil; empty on a follower, which hears none).
func (s *scheduler) leases() []dashboard.TrainerLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]dashboard.TrainerLease, 0, len(s.seen))
	for id, at := range s.seen {
		out = append(out, dashboard.TrainerLease{ID: id, LastSeen: at, Lease: s.cfg.Lease})
	}
	return out
}

func (b dashboardBackend) Raft() dashboard.RaftStatus {
	r := b.c.node.raft
	st := r.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
	addr, id := r.LeaderWithID()
	rs := dashboard.RaftStatus{ID: b.c.cfg.ID, State: r.State().String(), LeaderID: string(id), LeaderAddr: string(addr),
		Term: u("term"), CommitIndex: u("commit_index"), AppliedIndex: u("applied_index"), LastLogIndex: u("last_log_index")}
	switch lc := st["last_contact"]; lc {
	case "never", "":
	case "0":
		rs.Contacted = true
	default:
		if d, err := time.ParseDuration(lc); err == nil {
			rs.LastContact, rs.Contacted = d, true
		}
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			api := b.c.node.memberAPI(string(s.Address))
			for _, p := range b.c.cfg.Peers { // a bootstrapped member is in Peers, not in the member table
				if api == "" && p.ID == string(s.ID) {
					api = p.APIAddr
				}
			}
			rs.Members = append(rs.Members, dashboard.RaftMember{ID: string(s.ID), RaftAddr: string(s.Address), APIAddr: api, Suffrage: s.Suffrage.String()})
		}
	}
	return rs
}
