package coordinator

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/loraft/loraft/coordinator/dashboard"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
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

// DashboardBackend is the dashboard's view of c: its applied state, the
// leader's soft state (live progress, trainer heartbeats), raft's view of
// the group, and the API's write handlers (validated, applied on the
// leader, refused with a LeaderHint on a follower).
func DashboardBackend(c *Coordinator) dashboard.Backend { return dashboardBackend{c: c} }

// dashboardBackend answers the dashboard from one coordinator.
type dashboardBackend struct{ c *Coordinator }

var _ dashboard.Backend = dashboardBackend{}

func (b dashboardBackend) State() *pb.State { return b.c.node.State() }

func (b dashboardBackend) Sweep(ctx context.Context, name string) (*pb.SweepStatus, error) {
	return b.c.api.GetSweep(ctx, &pb.GetSweepRequest{Name: name})
}

func (b dashboardBackend) CancelSweep(ctx context.Context, name string) error {
	_, err := b.c.api.CancelSweep(ctx, &pb.CancelSweepRequest{Name: name})
	return err
}

func (b dashboardBackend) ResumeRun(ctx context.Context, trial string) error {
	_, err := b.c.api.ResumeRun(ctx, &pb.ResumeRunRequest{Run: trial})
	return err
}

func (b dashboardBackend) Trainers() []dashboard.TrainerLease {
	if !b.c.node.IsLeader() {
		return nil
	}
	s := b.c.api.sched
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
