package coordinator

import (
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Metric names of the coordinator, loraft_<subsystem>_<name>_<unit>. No
// label carries a sweep, trial or trainer id: cardinality stays fixed
// however many trials the state holds.
const (
	MetricRaftState         = "loraft_raft_state"                     // gauge{state}: 1 for this node's state
	MetricRaftTerm          = "loraft_raft_term"                      // gauge
	MetricRaftCommitIndex   = "loraft_raft_commit_index"              // gauge
	MetricRaftAppliedIndex  = "loraft_raft_applied_index"             // gauge
	MetricRaftLastContact   = "loraft_raft_last_contact_seconds"      // gauge: 0 on the leader, absent before any contact
	MetricRaftLeaderChanges = "loraft_raft_leader_changes_total"      // counter
	MetricFSMApply          = "loraft_fsm_apply_duration_seconds"     // histogram
	MetricTrials            = "loraft_fsm_trials"                     // gauge{state}
	MetricSweeps            = "loraft_fsm_sweeps"                     // gauge
	MetricTrainers          = "loraft_fsm_trainers"                   // gauge: registered trainer records
	MetricHeartbeats        = "loraft_scheduler_heartbeats_total"     // counter: heartbeats this node answered as leader
	MetricLeaseExpiries     = "loraft_scheduler_lease_expiries_total" // counter: trials requeued because a trainer went silent
	MetricSchedulingLatency = "loraft_scheduler_latency_seconds"      // histogram: pending → assigned, on the leader
	MetricGRPCHandled       = "loraft_grpc_server_handled_total"      // counter{method,code}
	MetricGRPCHandlingTime  = "loraft_grpc_server_handling_seconds"   // histogram{method}
)

// metricSet holds one coordinator's Prometheus series, in a registry of its
// own (not the global default) so that several coordinators in one test
// process do not collide. Gauges of raft and of the replicated state are
// read when scraped (stateCollector), never by a polling goroutine.
type metricSet struct {
	reg *prometheus.Registry

	apply         prometheus.Histogram
	leaderChanges prometheus.Counter
	heartbeats    prometheus.Counter
	leaseExpiries prometheus.Counter
	schedLatency  prometheus.Histogram
	handled       *prometheus.CounterVec
	handling      *prometheus.HistogramVec

	// pending maps each pending trial to when it became pending (its raft
	// entry's AppendedAt, the leader's clock), for the scheduling latency.
	pendingMu sync.Mutex
	pending   map[string]time.Time
}

func newMetrics() *metricSet {
	m := &metricSet{reg: prometheus.NewRegistry(), pending: map[string]time.Time{},
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricFSMApply,
			Help:    "Time the FSM took to apply one committed raft entry on this node.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10)}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricRaftLeaderChanges,
			Help: "Times this node saw a new leader (itself or another)."}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricHeartbeats,
			Help: "Trainer heartbeats this node answered as leader."}),
		leaseExpiries: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricLeaseExpiries,
			Help: "Trials this node, as leader, requeued because a trainer's lease expired."}),
		schedLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricSchedulingLatency,
			Help:    "Time from a trial becoming pending to its assignment, for assignments this node applied as leader.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricGRPCHandled,
			Help: "Unary RPCs answered by the coordinator API, by full method name and status code."}, []string{"method", "code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricGRPCHandlingTime,
			Help:    "Time the coordinator API took to answer a unary RPC, by full method name.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 4, 10)}, []string{"method"}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.apply, m.leaderChanges, m.heartbeats, m.leaseExpiries, m.schedLatency, m.handled, m.handling)
	return m
}

// Metrics is the coordinator's Prometheus registry, served on /metrics.
func (c *Coordinator) Metrics() prometheus.Gatherer { return c.metrics.reg }

// unaryInterceptor counts every RPC by method and code, timing it; it runs
// before authorization, so refused calls count too. The method label is
// the full method name: grpc-go calls interceptors only for registered
// methods, so the set is the service's, fixed.
func (m *metricSet) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	code := status.Code(err)
	m.handled.WithLabelValues(info.FullMethod, code.String()).Inc()
	m.handling.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	if info.FullMethod == pb.Coordinator_Heartbeat_FullMethodName && err == nil {
		m.heartbeats.Inc()
	}
	return resp, err
}

// watchLeader counts leader changes from raft's observations until ctx
// ends. It owns the observer: it registers it and deregisters it.
func (m *metricSet) watchLeader(ctx context.Context, r *raft.Raft) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool { _, ok := o.Data.(raft.LeaderObservation); return ok })
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	var last raft.ServerID
	if _, id := r.LeaderWithID(); id != "" {
		// The leader elected before the observer existed is a change too.
		last = id
		m.leaderChanges.Inc()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-ch:
			lo := o.Data.(raft.LeaderObservation)
			// An empty leader is a lost one: the change is counted when the
			// next leader is known.
			if lo.LeaderID != "" && lo.LeaderID != last {
				last = lo.LeaderID
				m.leaderChanges.Inc()
			}
		}
	}
}

// observedFSM is the FSM raft applies to when metrics are on: it times
// every Apply and follows trials in and out of PENDING.
type observedFSM struct {
	*fsm
	m *metricSet
	// r is the raft node, set once NewRaft returns; until then this node
	// is not the leader.
	r atomic.Pointer[raft.Raft]
}

func (o *observedFSM) Apply(l *raft.Log) any {
	start := time.Now()
	res := o.fsm.Apply(l)
	o.m.apply.Observe(time.Since(start).Seconds())
	if err, _ := res.(error); err == nil && !l.AppendedAt.IsZero() {
		r := o.r.Load()
		o.m.applied(o.fsm, l, r != nil && r.State() == raft.Leader)
	}
	return res
}

// Restore forgets the pending times: the snapshot does not carry them.
func (o *observedFSM) Restore(rc io.ReadCloser) error {
	o.m.pendingMu.Lock()
	o.m.pending = map[string]time.Time{}
	o.m.pendingMu.Unlock()
	return o.fsm.Restore(rc)
}

// applied follows the trials an applied command touched: one that became
// pending is stamped with the entry's time, one assigned observes its wait
// (when this node leads: each assignment is counted by one coordinator).
func (m *metricSet) applied(f *fsm, l *raft.Log, leads bool) {
	var c pb.Command
	if err := proto.Unmarshal(l.Data, &c); err != nil {
		return
	}
	var names []string
	switch cmd := c.Cmd.(type) {
	case *pb.Command_CreateSweep:
		for _, t := range cmd.CreateSweep.GetSweep().GetTrials() {
			names = append(names, t.GetName())
		}
	case *pb.Command_AssignTrial:
		names = []string{cmd.AssignTrial.GetTrial()}
	case *pb.Command_SetTrialState:
		names = []string{cmd.SetTrialState.GetTrial()}
	case *pb.Command_ResumeTrial:
		names = []string{cmd.ResumeTrial.GetTrial()}
	default:
		return
	}
	f.mu.RLock()
	states := make([]pb.TrialState, len(names))
	for i, n := range names {
		states[i] = f.trials[n].GetState()
	}
	total := len(f.trials)
	f.mu.RUnlock()

	m.pendingMu.Lock()
	defer m.pendingMu.Unlock()
	for i, n := range names {
		since, was := m.pending[n]
		switch {
		case states[i] == pb.TrialState_TRIAL_STATE_PENDING && !was:
			m.pending[n] = l.AppendedAt
		case states[i] == pb.TrialState_TRIAL_STATE_RUNNING && was:
			delete(m.pending, n)
			if leads {
				m.schedLatency.Observe(max(0, l.AppendedAt.Sub(since).Seconds()))
			}
		case states[i] != pb.TrialState_TRIAL_STATE_PENDING && was:
			delete(m.pending, n)
		}
	}
	if len(m.pending) > total+1024 {
		// Trials cancelled or deleted while pending leave stamps behind:
		// drop those of trials that are no longer pending.
		f.mu.RLock()
		for n := range m.pending {
			if f.trials[n].GetState() != pb.TrialState_TRIAL_STATE_PENDING {
				delete(m.pending, n)
			}
		}
		f.mu.RUnlock()
	}
}

// stateCollector reads raft's indexes and the replicated state's counts
// when scraped.
type stateCollector struct {
	node *Node
	state, term, commit, applied, contact,
	trials, sweeps, trainers *prometheus.Desc
}

func newStateCollector(n *Node) *stateCollector {
	return &stateCollector{node: n,
		state:    prometheus.NewDesc(MetricRaftState, "1 for this node's raft state (leader, follower, candidate, shutdown), 0 for the others.", []string{"state"}, nil),
		term:     prometheus.NewDesc(MetricRaftTerm, "This node's current raft term.", nil, nil),
		commit:   prometheus.NewDesc(MetricRaftCommitIndex, "The latest raft log index this node knows to be committed.", nil, nil),
		applied:  prometheus.NewDesc(MetricRaftAppliedIndex, "The latest raft log index this node's FSM applied.", nil, nil),
		contact:  prometheus.NewDesc(MetricRaftLastContact, "Seconds since this follower last heard from the leader (0 on the leader).", nil, nil),
		trials:   prometheus.NewDesc(MetricTrials, "Trials in the replicated state, by state.", []string{"state"}, nil),
		sweeps:   prometheus.NewDesc(MetricSweeps, "Sweeps in the replicated state.", nil, nil),
		trainers: prometheus.NewDesc(MetricTrainers, "Trainer records in the replicated state.", nil, nil),
	}
}

var _ prometheus.Collector = (*stateCollector)(nil)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.state, s.term, s.commit, s.applied, s.contact, s.trials, s.sweeps, s.trainers} {
		ch <- d
	}
}

// raftStates are the values of loraft_raft_state's label, every one
// always exported so a change of state is a change of value.
var raftStates = []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown}

// trialStates are the values of loraft_fsm_trials' label.
var trialStates = []pb.TrialState{pb.TrialState_TRIAL_STATE_PENDING, pb.TrialState_TRIAL_STATE_RUNNING, pb.TrialState_TRIAL_STATE_SUCCEEDED,
	pb.TrialState_TRIAL_STATE_FAILED, pb.TrialState_TRIAL_STATE_CANCELLED, pb.TrialState_TRIAL_STATE_STOPPED_EARLY}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := s.node.raft
	st := r.State()
	for _, rs := range raftStates {
		v := 0.0
		if rs == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(s.state, prometheus.GaugeValue, v, strings.ToLower(rs.String()))
	}
	ch <- prometheus.MustNewConstMetric(s.term, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(s.commit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(s.applied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	if st == raft.Leader {
		ch <- prometheus.MustNewConstMetric(s.contact, prometheus.GaugeValue, 0)
	} else if last := r.LastContact(); !last.IsZero() {
		ch <- prometheus.MustNewConstMetric(s.contact, prometheus.GaugeValue, time.Since(last).Seconds())
	}
	counts := make(map[pb.TrialState]int, len(trialStates))
	var sweeps, trainers int
	s.node.view(func(f *fsm) {
		for _, t := range f.trials {
			counts[t.GetState()]++
		}
		sweeps, trainers = len(f.sweeps), len(f.trainers)
	})
	for _, ts := range trialStates {
		ch <- prometheus.MustNewConstMetric(s.trials, prometheus.GaugeValue, float64(counts[ts]), strings.ToLower(stateName(ts)))
	}
	ch <- prometheus.MustNewConstMetric(s.sweeps, prometheus.GaugeValue, float64(sweeps))
	ch <- prometheus.MustNewConstMetric(s.trainers, prometheus.GaugeValue, float64(trainers))
}

// decided counts a scheduler decision the FSM applied: a requeue (the only
// SetTrialState the scheduler makes) is a lease expiry. m may be nil.
func (m *metricSet) decided(c *pb.Command) {
	if m != nil && c.GetSetTrialState() != nil {
		m.leaseExpiries.Inc()
	}
}
