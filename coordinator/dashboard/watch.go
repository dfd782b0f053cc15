package dashboard

import (
	"fmt"
	"strings"
	"sync"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// Bounds on what the watcher remembers, so a long sweep cannot grow the
// coordinator's memory without limit.
const (
	maxLossPoints  = 512 // per trial; when full, every other point is dropped
	maxSweepEvents = 256 // per sweep, the newest kept
	maxWatched     = 64  // sweeps with remembered curves and events
)

// watcher remembers what the replicated state does not: the loss curve of
// each trial (live progress is the leader's soft state and holds only the
// latest step), throughput, and the time of each state change it saw.
// Like live progress, it lives in one coordinator's memory and starts
// empty; the replicated metric history and reasons fill what it missed.
type watcher struct {
	mu     sync.Mutex // guards everything below
	trials map[string]*trialMemory
	sweeps map[string]*sweepMemory
}

type trialMemory struct {
	loss []point
	// rate is the last measured steps per second; lastStep/lastAt its basis.
	rate     float64
	lastStep int64
	lastAt   time.Time
	// state, attempts and generation as last seen, to notice changes.
	state    pb.TrialState
	attempts int32
	seen     bool
}

type sweepMemory struct {
	events  []Event
	touched time.Time
}

type point struct {
	Step  int64   `json:"step"`
	Value float64 `json:"value"`
}

// Event is something that happened to a trial: placed, requeued, stopped
// early, failed, succeeded, cancelled or resumed.
type Event struct {
	// UnixMs is when it happened (0: before this coordinator watched and
	// the replicated state does not say).
	UnixMs int64  `json:"unix_ms"`
	Trial  string `json:"trial"`
	Kind   string `json:"kind"`
	Text   string `json:"text"`
}

func newWatcher() *watcher {
	return &watcher{trials: map[string]*trialMemory{}, sweeps: map[string]*sweepMemory{}}
}

// observe records one look at a sweep: loss points, throughput and state
// changes of its trials.
func (w *watcher) observe(st *pb.SweepStatus, now time.Time) {
	sw := st.GetSweep()
	w.mu.Lock()
	defer w.mu.Unlock()
	sm := w.sweeps[sw.GetName()]
	if sm == nil {
		w.evict()
		sm = &sweepMemory{}
		w.sweeps[sw.GetName()] = sm
	}
	sm.touched = now
	for _, t := range sw.GetTrials() {
		tm := w.trials[t.GetName()]
		if tm == nil {
			tm = &trialMemory{}
			w.trials[t.GetName()] = tm
		}
		if p := st.GetProgress()[t.GetName()]; p != nil {
			tm.addProgress(p, now)
		} else if t.GetState() != pb.TrialState_TRIAL_STATE_RUNNING {
			tm.rate = 0
		}
		if tm.seen && (tm.state != t.GetState() || tm.attempts != t.GetAttempts()) {
			if e, ok := transition(tm.state, tm.attempts, t, now); ok {
				sm.events = append(sm.events, e)
				if len(sm.events) > maxSweepEvents {
					sm.events = sm.events[len(sm.events)-maxSweepEvents:]
				}
			}
		}
		tm.state, tm.attempts, tm.seen = t.GetState(), t.GetAttempts(), true
	}
}

func (tm *trialMemory) addProgress(p *pb.Progress, now time.Time) {
	step := p.GetStep()
	if n := len(tm.loss); n == 0 || step > tm.loss[n-1].Step {
		tm.loss = append(tm.loss, point{Step: step, Value: p.GetLoss()})
		if len(tm.loss) > maxLossPoints {
			half := tm.loss[:0]
			for i := 0; i < len(tm.loss); i += 2 {
				half = append(half, tm.loss[i])
			}
			tm.loss = half
		}
	} else if step < tm.loss[n-1].Step {
		// Resumed from an earlier checkpoint: the curve restarts there.
		cut := 0
		for cut < n && tm.loss[cut].Step < step {
			cut++
		}
		tm.loss = append(tm.loss[:cut], point{Step: step, Value: p.GetLoss()})
	}
	if !tm.lastAt.IsZero() && step > tm.lastStep {
		if dt := now.Sub(tm.lastAt).Seconds(); dt > 0 {
			tm.rate = float64(step-tm.lastStep) / dt
		}
	}
	if tm.lastAt.IsZero() || step != tm.lastStep {
		tm.lastStep, tm.lastAt = step, now
	}
}

// evict forgets the sweep looked at least recently once maxWatched are kept.
func (w *watcher) evict() {
	if len(w.sweeps) < maxWatched {
		return
	}
	var oldest string
	var at time.Time
	for name, sm := range w.sweeps {
		if oldest == "" || sm.touched.Before(at) {
			oldest, at = name, sm.touched
		}
	}
	delete(w.sweeps, oldest)
}

// transition describes a state change the watcher saw.
func transition(from pb.TrialState, attempts int32, t *pb.Trial, now time.Time) (Event, bool) {
	e := Event{UnixMs: now.UnixMilli(), Trial: t.GetName()}
	reason := t.GetReason()
	switch to := t.GetState(); {
	case to == pb.TrialState_TRIAL_STATE_RUNNING:
		e.Kind, e.Text = "placed", fmt.Sprintf("attempt %d on %s", t.GetAttempts(), strings.Join(t.GetTrainers(), ", "))
	case to == pb.TrialState_TRIAL_STATE_PENDING && from == pb.TrialState_TRIAL_STATE_RUNNING:
		e.Kind, e.Text = "requeued", reason
	case to == pb.TrialState_TRIAL_STATE_PENDING:
		e.Kind, e.Text = "resumed", "back in the queue from "+stateName(from)
	case to == pb.TrialState_TRIAL_STATE_STOPPED_EARLY:
		e.Kind, e.Text = "stopped early", reason
	case to == pb.TrialState_TRIAL_STATE_FAILED:
		e.Kind, e.Text = "failed", reason
	case to == pb.TrialState_TRIAL_STATE_SUCCEEDED:
		e.Kind, e.Text = "succeeded", fmt.Sprintf("after %d attempt(s)", t.GetAttempts())
	case to == pb.TrialState_TRIAL_STATE_CANCELLED:
		e.Kind, e.Text = "cancelled", reason
	default:
		return e, false
	}
	return e, true
}

// trialFacts is what the watcher knows about one trial.
type trialFacts struct {
	loss []point
	rate float64
}

func (w *watcher) facts(trial string) trialFacts {
	w.mu.Lock()
	defer w.mu.Unlock()
	tm := w.trials[trial]
	if tm == nil {
		return trialFacts{}
	}
	return trialFacts{loss: append([]point(nil), tm.loss...), rate: tm.rate}
}

// events returns the sweep's observed events, oldest first.
func (w *watcher) events(sweep string) []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sm := w.sweeps[sweep]; sm != nil {
		return append([]Event(nil), sm.events...)
	}
	return nil
}

// stateName is a trial state without its enum prefix: "RUNNING".
func stateName(s pb.TrialState) string {
	return strings.TrimPrefix(s.String(), "TRIAL_STATE_")
}
