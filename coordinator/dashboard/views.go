package dashboard

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// The JSON the pages render from. Field names are the API's contract with
// app.js; a missing number is null, never a made-up zero.

// sweepsView is /api/sweeps.
type sweepsView struct {
	Sweeps []sweepSummary `json:"sweeps"`
}

type sweepSummary struct {
	Name      string         `json:"name"`
	CreatedMs int64          `json:"created_unix_ms"`
	Trials    int            `json:"trials"`
	States    map[string]int `json:"states"`
	Metric    string         `json:"metric"`
	Best      *float64       `json:"best"`
	BestTrial string         `json:"best_trial,omitempty"`
	Cancelled bool           `json:"cancelled"`
}

// sweepView is /api/sweeps/{name} and each server-sent event.
type sweepView struct {
	Name      string         `json:"name"`
	Metric    string         `json:"metric"`
	CreatedMs int64          `json:"created_unix_ms"`
	Cancelled bool           `json:"cancelled"`
	States    map[string]int `json:"states"`
	// Live is false when no leader answered: the view is this node's
	// applied state without live progress (stale).
	Live   bool       `json:"live"`
	Trials []trialRow `json:"trials"`
	Heat   heatMap    `json:"heat"`
	Events []Event    `json:"events"`
	// Curves are each trial's loss (from live progress) and metric (from
	// the replicated history) points, at most maxCurvePoints each. The
	// event stream sends them apart from the rest (see apiSweepEvents).
	Curves []curve `json:"curves,omitempty"`
	// EarlyStopping describes the sweep's rule ("" for none).
	EarlyStopping string `json:"early_stopping"`
}

type trialRow struct {
	Name       string   `json:"name"`
	Rank       int32    `json:"rank"`
	Alpha      float64  `json:"alpha"`
	LR         float64  `json:"learning_rate"`
	State      string   `json:"state"`
	Step       *int64   `json:"step"`
	Steps      *int64   `json:"steps"`
	Loss       *float64 `json:"loss"`
	Best       *float64 `json:"best"`
	EtaMs      *int64   `json:"eta_ms"`
	Attempts   int32    `json:"attempts"`
	Trainers   []string `json:"trainers"`
	Reason     string   `json:"reason"`
	Warning    string   `json:"warning,omitempty"`
	Generation uint64   `json:"generation"`
	// Checkpoint is the latest committed checkpoint's step (0: none).
	Checkpoint int64 `json:"checkpoint_step"`
}

type heatMap struct {
	Ranks  []int32   `json:"ranks"`
	Alphas []float64 `json:"alphas"`
	// Cells[i][j] is the best metric of rank Ranks[i] with alpha Alphas[j]
	// (the highest over trials sharing them), null when none reported.
	Cells [][]*float64 `json:"cells"`
	Min   *float64     `json:"min"`
	Max   *float64     `json:"max"`
}

type curve struct {
	Trial  string  `json:"trial"`
	Loss   []point `json:"loss"`
	Metric []point `json:"metric"`
}

// trialView is /api/trials/{name}.
type trialView struct {
	Sweep       string          `json:"sweep"`
	Metric      string          `json:"metric"`
	Live        bool            `json:"live"`
	Trial       trialRow        `json:"trial"`
	Checkpoints []checkpointRow `json:"checkpoints"`
	Events      []Event         `json:"events"`
	Curve       curve           `json:"curve"`
	Result      *pb.TrialResult `json:"result"`
	StartedMs   int64           `json:"started_unix_ms"`
	FinishedMs  int64           `json:"finished_unix_ms"`
	RunningMs   int64           `json:"running_ms"`
	// Pull is the command that copies this trial's adapter out of the store.
	Pull string `json:"pull"`
}

type checkpointRow struct {
	Step      int64    `json:"step"`
	Metric    *float64 `json:"metric"`
	Committed bool     `json:"committed"`
	// Latest marks the checkpoint a resume starts from.
	Latest bool `json:"latest"`
	// Size is unknown to the coordinators (the store has it); null.
	Size *int64 `json:"size"`
}

// trainersView is /api/trainers.
type trainersView struct {
	Live     bool         `json:"live"`
	Trainers []trainerRow `json:"trainers"`
}

type trainerRow struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Device is not reported by trainers yet: null.
	Device *string `json:"device"`
	// LeaseAgeMs is the time since its last heartbeat (null: not heard
	// from by this node); LeaseMs the lease it must renew within.
	LeaseAgeMs *int64   `json:"lease_age_ms"`
	LeaseMs    int64    `json:"lease_ms"`
	Trial      string   `json:"trial"`
	Rank       int      `json:"rank"`
	SamplesPS  *float64 `json:"samples_per_s"`
}

// raftView is /api/raft.
type raftView struct {
	ID            string       `json:"id"`
	State         string       `json:"state"`
	LeaderID      string       `json:"leader_id"`
	LeaderAddr    string       `json:"leader_addr"`
	Term          uint64       `json:"term"`
	CommitIndex   uint64       `json:"commit_index"`
	AppliedIndex  uint64       `json:"applied_index"`
	LastLogIndex  uint64       `json:"last_log_index"`
	LastContactMs *int64       `json:"last_contact_ms"`
	Members       []raftMember `json:"members"`
}

type raftMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	Self     bool   `json:"self"`
}

func ptr[T any](v T) *T { return &v }

func summarize(sw *pb.Sweep) sweepSummary {
	s := sweepSummary{Name: sw.GetName(), CreatedMs: sw.GetCreatedUnixMs(), Trials: len(sw.GetTrials()),
		States: stateCounts(sw), Metric: metricName(sw), Cancelled: sw.GetCancelled()}
	for _, t := range sw.GetTrials() {
		if t.GetHasMetric() && (s.Best == nil || t.GetBestMetric() > *s.Best) {
			s.Best, s.BestTrial = ptr(t.GetBestMetric()), t.GetName()
		}
	}
	return s
}

func stateCounts(sw *pb.Sweep) map[string]int {
	m := map[string]int{}
	for _, t := range sw.GetTrials() {
		m[stateName(t.GetState())]++
	}
	return m
}

func metricName(sw *pb.Sweep) string {
	if m := sw.GetMetric(); m != "" {
		return m
	}
	return "macro_f1"
}

func row(t *pb.Trial, p *pb.Progress) trialRow {
	r := trialRow{Name: t.GetName(), Rank: t.GetRank(), Alpha: t.GetAlpha(), LR: t.GetLearningRate(), State: stateName(t.GetState()),
		Attempts: t.GetAttempts(), Trainers: t.GetTrainers(), Reason: t.GetReason(), Generation: t.GetGeneration(), Checkpoint: t.GetCheckpointStep()}
	if r.Trainers == nil {
		r.Trainers = []string{}
	}
	if t.GetHasMetric() {
		r.Best = ptr(t.GetBestMetric())
	}
	if p != nil {
		r.Step, r.Steps, r.Loss, r.EtaMs, r.Warning = ptr(p.GetStep()), ptr(p.GetSteps()), ptr(p.GetLoss()), ptr(p.GetEtaMs()), p.GetWarning()
	} else if res := t.GetResult(); res != nil {
		r.Step, r.Steps, r.Loss = ptr(res.GetSteps()), ptr(res.GetSteps()), ptr(res.GetFinalLoss())
	} else if t.GetCheckpointStep() > 0 {
		r.Step = ptr(t.GetCheckpointStep())
	}
	return r
}

func (w *watcher) sweepView(st *pb.SweepStatus, live bool) sweepView {
	sw := st.GetSweep()
	v := sweepView{Name: sw.GetName(), Metric: metricName(sw), CreatedMs: sw.GetCreatedUnixMs(), Cancelled: sw.GetCancelled(),
		States: stateCounts(sw), Live: live, Trials: make([]trialRow, 0, len(sw.GetTrials())), Curves: make([]curve, 0, len(sw.GetTrials()))}
	if es := sw.GetEarlyStopping(); es.GetRule() != "" {
		v.EarlyStopping = fmt.Sprintf("%s (grace %d steps", es.GetRule(), es.GetGraceSteps())
		if es.GetReductionFactor() > 0 {
			v.EarlyStopping += fmt.Sprintf(", reduction factor %d", es.GetReductionFactor())
		}
		v.EarlyStopping += ")"
	}
	for _, t := range sw.GetTrials() {
		v.Trials = append(v.Trials, row(t, st.GetProgress()[t.GetName()]))
		facts := w.facts(t.GetName())
		v.Curves = append(v.Curves, curve{Trial: t.GetName(), Loss: thin(facts.loss), Metric: thin(history(t))})
	}
	v.Heat = heat(sw)
	v.Events = mergeEvents(sw.GetTrials(), w.events(sw.GetName()))
	return v
}

// maxCurvePoints bounds the points of one curve a page gets: a chart
// 1,000 pixels wide shows no more, and a 100-trial sweep stays small.
const maxCurvePoints = 200

// thin keeps at most maxCurvePoints of p, evenly spaced, with the last.
func thin(p []point) []point {
	if len(p) <= maxCurvePoints {
		return orEmpty(p)
	}
	out := make([]point, 0, maxCurvePoints)
	for i := range maxCurvePoints - 1 {
		out = append(out, p[i*(len(p)-1)/(maxCurvePoints-1)])
	}
	return append(out, p[len(p)-1])
}

func orEmpty(p []point) []point {
	if p == nil {
		return []point{}
	}
	return p
}

func history(t *pb.Trial) []point {
	out := make([]point, 0, len(t.GetHistory()))
	for _, h := range t.GetHistory() {
		out = append(out, point{Step: h.GetStep(), Value: h.GetMetric()})
	}
	return out
}

func heat(sw *pb.Sweep) heatMap {
	var h heatMap
	for _, t := range sw.GetTrials() {
		if !slices.Contains(h.Ranks, t.GetRank()) {
			h.Ranks = append(h.Ranks, t.GetRank())
		}
		if !slices.Contains(h.Alphas, t.GetAlpha()) {
			h.Alphas = append(h.Alphas, t.GetAlpha())
		}
	}
	slices.Sort(h.Ranks)
	slices.Sort(h.Alphas)
	h.Cells = make([][]*float64, len(h.Ranks))
	for i := range h.Cells {
		h.Cells[i] = make([]*float64, len(h.Alphas))
	}
	for _, t := range sw.GetTrials() {
		if !t.GetHasMetric() {
			continue
		}
		i, _ := slices.BinarySearch(h.Ranks, t.GetRank())
		j, _ := slices.BinarySearch(h.Alphas, t.GetAlpha())
		m := t.GetBestMetric()
		if c := h.Cells[i][j]; c == nil || m > *c {
			h.Cells[i][j] = ptr(m)
		}
		if h.Min == nil || m < *h.Min {
			h.Min = ptr(m)
		}
		if h.Max == nil || m > *h.Max {
			h.Max = ptr(m)
		}
	}
	if h.Ranks == nil {
		h.Ranks, h.Alphas = []int32{}, []float64{}
	}
	return h
}

// mergeEvents adds to the watcher's observed events what the replicated
// state shows of changes it did not see (it starts empty on every
// coordinator): early stops, failures and repeated placements, newest first.
func mergeEvents(trials []*pb.Trial, observed []Event) []Event {
	seen := map[string]bool{}
	for _, e := range observed {
		seen[e.Trial+"\x00"+e.Kind] = true
	}
	out := slices.Clone(observed)
	for _, t := range trials {
		var kind, text string
		switch t.GetState() {
		case pb.TrialState_TRIAL_STATE_STOPPED_EARLY:
			kind, text = "stopped early", t.GetReason()
		case pb.TrialState_TRIAL_STATE_FAILED:
			kind, text = "failed", t.GetReason()
		case pb.TrialState_TRIAL_STATE_PENDING:
			if strings.Contains(t.GetReason(), "lost") {
				kind, text = "requeued", t.GetReason()
			}
		}
		if kind != "" && !seen[t.GetName()+"\x00"+kind] {
			out = append(out, Event{UnixMs: t.GetFinishedUnixMs(), Trial: t.GetName(), Kind: kind, Text: text})
		}
		if t.GetAttempts() > 1 && !seen[t.GetName()+"\x00requeued"] {
			out = append(out, Event{Trial: t.GetName(), Kind: "requeued",
				Text: fmt.Sprintf("placed %d times (requeued or resumed %d×)", t.GetAttempts(), t.GetAttempts()-1)})
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Compare(b.UnixMs, a.UnixMs) })
	if out == nil {
		out = []Event{}
	}
	return out
}

func (w *watcher) trialView(st *pb.SweepStatus, t *pb.Trial, live bool, store string) trialView {
	sw := st.GetSweep()
	v := trialView{Sweep: sw.GetName(), Metric: metricName(sw), Live: live, Trial: row(t, st.GetProgress()[t.GetName()]),
		Result: t.GetResult(), StartedMs: t.GetStartedUnixMs(), FinishedMs: t.GetFinishedUnixMs(), RunningMs: t.GetRunningMs()}
	facts := w.facts(t.GetName())
	v.Curve = curve{Trial: t.GetName(), Loss: thin(facts.loss), Metric: thin(history(t))}
	v.Checkpoints = []checkpointRow{}
	for _, h := range t.GetHistory() {
		v.Checkpoints = append(v.Checkpoints, checkpointRow{Step: h.GetStep(), Metric: ptr(h.GetMetric()), Committed: true})
	}
	if cs := t.GetCheckpointStep(); cs > 0 {
		if n := len(v.Checkpoints); n == 0 || v.Checkpoints[n-1].Step != cs {
			v.Checkpoints = append(v.Checkpoints, checkpointRow{Step: cs, Committed: true})
		}
		v.Checkpoints[len(v.Checkpoints)-1].Latest = true
	}
	var events []Event
	for _, e := range mergeEvents([]*pb.Trial{t}, w.events(sw.GetName())) {
		if e.Trial == t.GetName() {
			events = append(events, e)
		}
	}
	v.Events = orEmptyEvents(events)
	v.Pull = pullCommand(store, t.GetName())
	return v
}

func orEmptyEvents(e []Event) []Event {
	if e == nil {
		return []Event{}
	}
	return e
}

// pullCommand is the `loraft adapter pull` line for a trial (its run in
// the store has the trial's name).
func pullCommand(store, trial string) string {
	if store == "" {
		store = `"$LORAFT_STORE"`
	} else {
		store = shellQuote(store)
	}
	return fmt.Sprintf("loraft adapter pull --store %s --run %s --out %s", store, shellQuote(trial), shellQuote("out/"+trial))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func trainersFrom(st *pb.State, leases []TrainerLease, w *watcher, now time.Time) trainersView {
	v := trainersView{Live: leases != nil, Trainers: []trainerRow{}}
	byID := map[string]TrainerLease{}
	for _, l := range leases {
		byID[l.ID] = l
	}
	type job struct {
		trial string
		rank  int
		world int
		batch int32
	}
	jobs := map[string]job{}
	for _, sw := range st.GetSweeps() {
		for _, t := range sw.GetTrials() {
			if t.GetState() != pb.TrialState_TRIAL_STATE_RUNNING {
				continue
			}
			for i, id := range t.GetTrainers() {
				jobs[id] = job{trial: t.GetName(), rank: i, world: len(t.GetTrainers()), batch: sw.GetTrain().GetBatchSize()}
			}
		}
	}
	for _, tr := range st.GetTrainers() {
		r := trainerRow{ID: tr.GetId(), Address: tr.GetAddress()}
		if l, ok := byID[tr.GetId()]; ok {
			r.LeaseAgeMs, r.LeaseMs = ptr(now.Sub(l.LastSeen).Milliseconds()), l.Lease.Milliseconds()
		}
		if j, ok := jobs[tr.GetId()]; ok {
			r.Trial, r.Rank = j.trial, j.rank
			// Each rank takes its share of the global batch per step.
			if rate := w.facts(j.trial).rate; rate > 0 && j.batch > 0 {
				r.SamplesPS = ptr(rate * float64(j.batch) / float64(j.world))
			}
		}
		v.Trainers = append(v.Trainers, r)
	}
	return v
}

func raftFrom(rs RaftStatus, st *pb.State) raftView {
	v := raftView{ID: rs.ID, State: rs.State, LeaderID: rs.LeaderID, LeaderAddr: rs.LeaderAddr, Term: rs.Term,
		CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex, LastLogIndex: rs.LastLogIndex, Members: []raftMember{}}
	if rs.Contacted {
		v.LastContactMs = ptr(rs.LastContact.Milliseconds())
	}
	api := map[string]string{}
	for _, m := range st.GetMembers() {
		api[m.GetId()] = m.GetApiAddress()
	}
	for _, m := range rs.Members {
		a := m.APIAddr
		if a == "" {
			a = api[m.ID]
		}
		v.Members = append(v.Members, raftMember{ID: m.ID, RaftAddr: m.RaftAddr, APIAddr: a, Suffrage: m.Suffrage,
			Leader: m.ID == rs.LeaderID, Self: m.ID == rs.ID})
	}
	return v
}
