package coordinator

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// maxNamedTrials bounds the trial names an ErrSweepActive refusal lists.
const maxNamedTrials = 5

// deleteSweep removes a sweep whose trials have all ended, its trials and,
// when no other sweep uses it, its dataset's record: the state then holds
// nothing of the sweep, so deleting it gives back what launching it took.
// It is refused, changing nothing, while a trial is pending or running.
func (f *fsm) deleteSweep(name string) error {
	if err := checkName("name", name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	s, ok := f.sweeps[name]
	if !ok {
		return fmt.Errorf("sweep %s: %w", name, ErrNotFound)
	}
	if active := activeTrials(s); len(active) > 0 {
		return fmtActive(name, active)
	}
	for _, t := range s.GetTrials() {
		// A trial name is unique across sweeps (createSweep), but only
		// remove the entry that points into this sweep.
		if f.trials[t.GetName()] == t {
			delete(f.trials, t.GetName())
		}
	}
	delete(f.sweeps, name)
	if sha := s.GetDatasetSha256(); sha != "" {
		used := false
		for _, o := range f.sweeps {
			if o.GetDatasetSha256() == sha {
				used = true
				break
			}
		}
		if !used {
			delete(f.datasets, sha)
		}
	}
	return nil
}

// activeTrials lists the sweep's pending and running trials.
func activeTrials(s *pb.Sweep) []*pb.Trial {
	var out []*pb.Trial
	for _, t := range s.GetTrials() {
		if t.GetState() == pb.TrialState_TRIAL_STATE_PENDING || t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
			out = append(out, t)
		}
	}
	return out
}

// describeActive names the first few active trials and their states:
// "2 trials: s-t000 (RUNNING), s-t001 (PENDING)".
func describeActive(ts []*pb.Trial) string {
	var names []string
	for _, t := range ts[:min(len(ts), maxNamedTrials)] {
		names = append(names, fmt.Sprintf("%s (%s)", t.GetName(), stateName(t.GetState())))
	}
	more := ""
	if len(ts) > maxNamedTrials {
		more = fmt.Sprintf(" and %d more", len(ts)-maxNamedTrials)
	}
	return fmt.Sprintf("%d trials: %s%s", len(ts), strings.Join(names, ", "), more)
}

// forgetTrainer removes a trainer record; it is refused, changing nothing,
// while a running trial names the trainer.
func (f *fsm) forgetTrainer(id string) error {
	if err := checkID("id", id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if _, ok := f.trainers[id]; !ok {
		return fmt.Errorf("trainer %s: %w", id, ErrNotFound)
	}
	for _, t := range f.trials {
		if t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING && slices.Contains(t.GetTrainers(), id) {
			return fmt.Errorf("trainer %s: %w (trial %s)", id, ErrTrainerBusy, t.GetName())
		}
	}
	delete(f.trainers, id)
	return nil
}

// sweepEndedMs is when a sweep whose trials have all ended was last active:
// the latest start or end of any trial, or its creation. (A cancel records
// no time, so a cancelled sweep counts from its last trial's activity.)
// ok is false while a trial is pending or running.
func sweepEndedMs(s *pb.Sweep) (ms int64, ok bool) {
	ms = s.GetCreatedUnixMs()
	for _, t := range s.GetTrials() {
		switch t.GetState() {
		case pb.TrialState_TRIAL_STATE_PENDING, pb.TrialState_TRIAL_STATE_RUNNING:
			return 0, false
		}
		ms = max(ms, t.GetStartedUnixMs(), t.GetFinishedUnixMs())
	}
	return ms, true
}

func fmtActive(name string, active []*pb.Trial) error {
	return fmt.Errorf("sweep %s: %w: %s", name, ErrSweepActive, describeActive(active))
}
