package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// SchedulerConfig tunes trainer leases and placement. Zero values take the defaults.
type SchedulerConfig struct {
	// Lease is how long a trainer may go without a heartbeat before the
	// leader declares it lost and requeues its trial (default 3 s).
	Lease time.Duration
	// HeartbeatInterval is how often trainers are told to heartbeat (default Lease/6).
	HeartbeatInterval time.Duration
	// Grace is how long a new leader counts trainers it has not heard from
	// yet as alive (default Lease): their heartbeats are on their way.
	Grace time.Duration
	// Tick is how often the leader looks for lost trainers and free work (default 50 ms).
	Tick time.Duration
	// SweepRetention, when positive, is how long a sweep whose trials have
	// all ended stays in the state: the leader then deletes it (as
	// DeleteSweep would; its objects in the store stay). 0 keeps sweeps
	// until they are deleted by hand.
	SweepRetention time.Duration
	// ForgetTrainerAfter is how long a trainer may stay silent before the
	// leader removes its record (default 24 h), unless a running trial
	// names it. Silence is counted from its last heartbeat to this leader,
	// or from when this node became leader.
	ForgetTrainerAfter time.Duration
}

// DefaultForgetTrainerAfter is SchedulerConfig.ForgetTrainerAfter's default.
const DefaultForgetTrainerAfter = 24 * time.Hour

func (c SchedulerConfig) withDefaults() SchedulerConfig {
	if c.Lease <= 0 {
		c.Lease = 3 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = c.Lease / 6
	}
	if c.Grace <= 0 {
		c.Grace = c.Lease
	}
	if c.Tick <= 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.ForgetTrainerAfter == 0 {
		c.ForgetTrainerAfter = DefaultForgetTrainerAfter
	}
	return c
}

// scheduler is the leader's soft state and placement loop. Heartbeat times
// and live progress live only here, never in the raft log: a new leader
// starts empty and grants every trainer the grace period.
type scheduler struct {
	node *Node
	cfg  SchedulerConfig

	mu          sync.Mutex
	leaderSince time.Time // zero while this node does not lead
	seen        map[string]time.Time
	progress    map[string]liveProgress // by trial name
	// refused holds the decisions the FSM refused this term, by trial and
	// generation: plan skips them, so a refused proposal (each one a
	// committed raft entry) is not made again on every tick.
	refused map[trialGen]bool
	// warned holds the problems already logged this term, so each is logged once.
	warned map[string]bool
	// claims is the trial and generation each trainer last said it runs
	// (its heartbeat's, whatever the assignment): a trial's previous
	// generation may still run on a trainer that has not yet heard it
	// lost the trial.
	claims map[string]trialGen
	// draining is when placement of a pending trial first waited for a
	// trainer still running an earlier generation of it.
	draining map[trialGen]time.Time
	// lastTidy is when tidy last ran: it looks at every sweep and trainer,
	// so it runs every tidyEvery rather than every tick.
	lastTidy time.Time
}

// tidyEvery is how often the leader looks for expired sweeps and silent trainers.
const tidyEvery = time.Second

// trialGen names one generation of a trial.
type trialGen struct {
	trial string
	gen   uint64
}

type liveProgress struct {
	generation uint64
	p          *pb.Progress
}

func newScheduler(n *Node, cfg SchedulerConfig) *scheduler {
	return &scheduler{node: n, cfg: cfg.withDefaults(), seen: map[string]time.Time{}, progress: map[string]liveProgress{},
		refused: map[trialGen]bool{}, warned: map[string]bool{}, claims: map[string]trialGen{}, draining: map[trialGen]time.Time{}}
}

// beat records a heartbeat; it is called on the leader only. claimed is
// the trial and generation the trainer says it runs (empty: none), trial
// and p its accepted live progress (empty and nil: none).
func (s *scheduler) beat(id string, claimed trialGen, trial string, gen uint64, p *pb.Progress, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[id] = now
	if claimed.trial == "" {
		delete(s.claims, id)
	} else {
		s.claims[id] = claimed
	}
	if trial != "" && p != nil {
		s.progress[trial] = liveProgress{generation: gen, p: p}
	}
}

// live returns the progress last reported for trial at generation gen.
func (s *scheduler) live(trial string, gen uint64) *pb.Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lp, ok := s.progress[trial]; ok && lp.generation == gen {
		return proto.Clone(lp.p).(*pb.Progress)
	}
	return nil
}

// run ticks until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.tick(ctx, time.Now())
		}
	}
}

// decision is one write the leader's tick wants to make, about one
// generation of one trial.
type decision struct {
	cmd   *pb.Command
	what  string
	trial trialGen
}

// tick requeues the trials of lost trainers and places pending trials on
// free trainers. Decisions are taken on a consistent view and applied
// through raft, where the FSM checks them again (a trial already moved on
// rejects them). A decision the FSM refuses is logged once and not made
// again this term; the others still go ahead, so one trial that cannot be
// placed never holds up the rest.
func (s *scheduler) tick(ctx context.Context, now time.Time) {
	if !s.node.IsLeader() {
		s.mu.Lock()
		s.leaderSince = time.Time{}
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	if s.leaderSince.IsZero() {
		// A new term: forget soft state from any earlier one.
		s.leaderSince, s.seen, s.progress = now, map[string]time.Time{}, map[string]liveProgress{}
		s.refused, s.warned = map[trialGen]bool{}, map[string]bool{}
		s.claims, s.draining = map[string]trialGen{}, map[trialGen]time.Time{}
	}
	inGrace := now.Sub(s.leaderSince) < s.cfg.Grace
	seen := make(map[string]time.Time, len(s.seen))
	for id, t := range s.seen {
		seen[id] = t
	}
	refused := make(map[trialGen]bool, len(s.refused))
	for k := range s.refused {
		refused[k] = true
	}
	claims := make(map[string]trialGen, len(s.claims))
	for id, c := range s.claims {
		claims[id] = c
	}
	s.mu.Unlock()
	heard := func(id string) bool { t, ok := seen[id]; return ok && now.Sub(t) < s.cfg.Lease }
	// A pending trial waits while a trainer still heard from runs one of
	// its earlier generations, so no two generations run at once; the
	// generation fence makes a late one harmless anyway, so the wait ends
	// after a lease even if such a trainer never lets go.
	stillRunning := func(k trialGen) bool {
		for id, c := range claims {
			if c.trial == k.trial && c.gen <= k.gen && heard(id) {
				return s.drainWait(k, now)
			}
		}
		return false
	}
	alive := func(id string) bool {
		if _, ok := seen[id]; !ok && inGrace {
			return true
		}
		return heard(id)
	}
	var ds []decision
	var stuck []string
	running := map[string]uint64{}
	tidy := now.Sub(s.lastTidyAt()) >= tidyEvery
	s.node.view(func(f *fsm) {
		ds, stuck = plan(f, now, alive, heard, s.cfg.Lease, func(k trialGen) bool { return refused[k] }, stillRunning)
		running = runningTrials(f)
		if tidy {
			since := s.leaderSinceAt()
			lastHeard := func(id string) time.Time {
				if t, ok := seen[id]; ok {
					return t
				}
				return since
			}
			ds = append(ds, tidyDecisions(f, now, s.cfg, lastHeard, func(k trialGen) bool { return refused[k] })...)
		}
	})
	if tidy {
		s.mu.Lock()
		s.lastTidy = now
		s.mu.Unlock()
	}
	s.pruneProgress(running)
	for _, msg := range stuck {
		s.warnOnce(msg)
	}
	for _, d := range ds {
		err := s.node.Apply(ctx, d.cmd)
		switch {
		case err == nil:
			s.node.cfg.Logger.Info("scheduler", "decision", d.what)
			s.node.metrics.decided(d.cmd)
			if ft, ok := d.cmd.GetCmd().(*pb.Command_ForgetTrainer); ok {
				s.mu.Lock()
				delete(s.seen, ft.ForgetTrainer.GetId())
				s.mu.Unlock()
			}
		case refusal(err):
			s.mu.Lock()
			s.refused[d.trial] = true
			s.mu.Unlock()
			s.warnOnce(fmt.Sprintf("scheduler decision refused, not retried this term: %s: %v", d.what, err))
		default:
			s.node.cfg.Logger.Debug("scheduler decision not applied", "decision", d.what, "err", err)
			return // leadership moved on, or raft is slow: decide again next tick
		}
	}
}

func (s *scheduler) lastTidyAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastTidy
}

func (s *scheduler) leaderSinceAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaderSince
}

// tidyDecisions deletes the sweeps that ended more than SweepRetention ago
// and forgets the trainers silent for ForgetTrainerAfter that no running
// trial names (lastHeard is a trainer's last heartbeat). Their keys in
// skip use a "sweep "/"trainer " prefix, never a trial name's charset.
func tidyDecisions(f *fsm, now time.Time, cfg SchedulerConfig, lastHeard func(string) time.Time, skip func(trialGen) bool) []decision {
	var ds []decision
	if cfg.SweepRetention > 0 {
		for _, sw := range sortedSweeps(f) {
			ended, ok := sweepEndedMs(sw)
			k := trialGen{trial: "sweep " + sw.GetName()}
			if !ok || now.Sub(time.UnixMilli(ended)) <= cfg.SweepRetention || skip(k) {
				continue
			}
			ds = append(ds, decision{trial: k, cmd: &pb.Command{Cmd: &pb.Command_DeleteSweep{DeleteSweep: &pb.DeleteSweep{Name: sw.GetName()}}},
				what: fmt.Sprintf("delete sweep %s: ended %s ago (retention %s)", sw.GetName(), now.Sub(time.UnixMilli(ended)).Round(time.Second), cfg.SweepRetention)})
		}
	}
	if cfg.ForgetTrainerAfter > 0 {
		busy := map[string]bool{}
		for _, t := range f.trials {
			if t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
				for _, id := range t.GetTrainers() {
					busy[id] = true
				}
			}
		}
		ids := make([]string, 0, len(f.trainers))
		for id := range f.trainers {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			k := trialGen{trial: "trainer " + id}
			if busy[id] || now.Sub(lastHeard(id)) <= cfg.ForgetTrainerAfter || skip(k) {
				continue
			}
			ds = append(ds, decision{trial: k, cmd: &pb.Command{Cmd: &pb.Command_ForgetTrainer{ForgetTrainer: &pb.ForgetTrainer{Id: id}}},
				what: fmt.Sprintf("forget trainer %s: silent for %s", id, now.Sub(lastHeard(id)).Round(time.Second))})
		}
	}
	return ds
}

// refusal reports whether err is the FSM's refusal of a command (rather
// than raft failing to commit it).
func refusal(err error) bool {
	for _, e := range []error{ErrBadCommand, ErrInvalidArgument, ErrUnknownVersion, ErrNotFound, ErrExists, ErrNotPending, ErrNotRunning, ErrStaleGeneration, ErrNothingToResume, ErrSweepActive, ErrTrainerBusy} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// warnOnce logs msg at WARN the first time this term.
func (s *scheduler) warnOnce(msg string) {
	s.mu.Lock()
	first := !s.warned[msg]
	if first {
		if len(s.warned) >= maxWarned {
			s.warned = map[string]bool{} // start over rather than grow
		}
		s.warned[msg] = true
	}
	s.mu.Unlock()
	if first {
		s.node.cfg.Logger.Warn(msg)
	}
}

// maxWarned bounds the messages remembered by warnOnce.
const maxWarned = 10000

// pruneProgress forgets live progress of every trial that is not running
// at the generation the progress was reported for.
func (s *scheduler) pruneProgress(running map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for trial, lp := range s.progress {
		if gen, ok := running[trial]; !ok || gen != lp.generation {
			delete(s.progress, trial)
		}
	}
}

// runningTrials maps each running trial to its generation.
func runningTrials(f *fsm) map[string]uint64 {
	out := map[string]uint64{}
	for name, t := range f.trials {
		if t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
			out[name] = t.GetGeneration()
		}
	}
	return out
}

// plan decides, from the applied state, which running trials lost a trainer
// and which pending trials go to which free trainers. It skips the trial
// generations skip names (decisions the FSM refused before) and pending
// trials the FSM cannot address by name (a second trial of the same name,
// from a sweep recorded before names had to be unique), and says why in
// stuck.
func plan(f *fsm, now time.Time, alive, placeable func(string) bool, lease time.Duration, skip, wait func(trialGen) bool) (ds []decision, stuck []string) {
	if skip == nil {
		skip = func(trialGen) bool { return false }
	}
	if wait == nil {
		wait = func(trialGen) bool { return false }
	}
	busy := map[string]bool{}
	sweeps := sortedSweeps(f)
	for _, sw := range sweeps {
		for _, t := range sw.GetTrials() {
			if t.GetState() != pb.TrialState_TRIAL_STATE_RUNNING {
				continue
			}
			lost := ""
			for _, id := range t.GetTrainers() {
				busy[id] = true
				if lost == "" && !alive(id) {
					lost = id
				}
			}
			if k := (trialGen{t.GetName(), t.GetGeneration()}); lost != "" && !skip(k) {
				ds = append(ds, decision{trial: k,
					cmd: &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: t.GetName(), Generation: t.GetGeneration(),
						State: pb.TrialState_TRIAL_STATE_PENDING, Reason: fmt.Sprintf("trainer %s lost (no heartbeat for %s)", lost, lease), UnixMs: now.UnixMilli()}}},
					what: fmt.Sprintf("requeue %s: trainer %s lost", t.GetName(), lost)})
			}
		}
	}
	var free []string
	for id := range f.trainers {
		if !busy[id] && placeable(id) {
			free = append(free, id)
		}
	}
	slices.Sort(free)
	for _, sw := range sweeps {
		running := 0
		for _, t := range sw.GetTrials() {
			if t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
				running++
			}
		}
		need := max(1, int(sw.GetTrainersPerTrial()))
		for _, t := range sw.GetTrials() {
			if t.GetState() != pb.TrialState_TRIAL_STATE_PENDING {
				continue
			}
			k := trialGen{t.GetName(), t.GetGeneration()}
			if f.trials[t.GetName()] != t {
				stuck = append(stuck, fmt.Sprintf("sweep %s: trial %s shares its name with another trial and cannot be placed", sw.GetName(), t.GetName()))
				continue
			}
			if skip(k) || wait(k) {
				continue
			}
			if (sw.GetMaxConcurrent() > 0 && running >= int(sw.GetMaxConcurrent())) || len(free) < need {
				break
			}
			ring := slices.Clone(free[:need])
			free = free[need:]
			running++
			ds = append(ds, decision{trial: k,
				cmd:  &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: t.GetName(), Trainers: ring, UnixMs: now.UnixMilli()}}},
				what: fmt.Sprintf("assign %s (generation %d) to %v", t.GetName(), t.GetGeneration()+1, ring)})
		}
	}
	return ds, stuck
}

// drainWait reports whether pending trial k still waits for an earlier
// generation to stop: for at most one lease from the first time it did.
func (s *scheduler) drainWait(k trialGen, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, ok := s.draining[k]
	if !ok {
		s.draining[k], first = now, now
		for old := range s.draining { // placed, or long given up on
			if now.Sub(s.draining[old]) > 10*s.cfg.Lease {
				delete(s.draining, old)
			}
		}
	}
	return now.Sub(first) < s.cfg.Lease
}

// sortedSweeps lists sweeps oldest first (then by name), the order they are served in.
func sortedSweeps(f *fsm) []*pb.Sweep {
	out := make([]*pb.Sweep, 0, len(f.sweeps))
	for _, s := range f.sweeps {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *pb.Sweep) int {
		if a.GetCreatedUnixMs() != b.GetCreatedUnixMs() {
			return cmp.Compare(a.GetCreatedUnixMs(), b.GetCreatedUnixMs())
		}
		return cmp.Compare(a.GetName(), b.GetName())
	})
	return out
}

// assignment is trainer id's current work, or nil.
func assignment(f *fsm, id string) *pb.Assignment {
	for _, sw := range f.sweeps {
		for _, t := range sw.GetTrials() {
			if t.GetState() != pb.TrialState_TRIAL_STATE_RUNNING {
				continue
			}
			rank := slices.Index(t.GetTrainers(), id)
			if rank < 0 {
				continue
			}
			a := &pb.Assignment{Sweep: sw.GetName(), Trial: proto.Clone(t).(*pb.Trial), Generation: t.GetGeneration(),
				Rank: int32(rank), World: int32(len(t.GetTrainers())), Train: sw.GetTrain(), DatasetSha256: sw.GetDatasetSha256(),
				CheckpointStep: t.GetCheckpointStep(), Metric: sw.GetMetric()}
			a.Trial.History = nil
			for _, tid := range t.GetTrainers() {
				a.Peers = append(a.Peers, f.trainers[tid].GetAddress())
			}
			return a
		}
	}
	return nil
}
