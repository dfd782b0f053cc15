package proccluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/loraft/loraft/trainer/agent"
)

// Job is one job a trainer ran, from its events file.
type Job struct {
	Trainer    string
	Trial      string
	Generation uint64
	// From and To are the job's start and end (Unix nanoseconds). A job
	// without an end event ends at the time the caller gives (see Jobs).
	From, To int64
}

// Jobs reads every trainer's events file. A job with no end event (its
// trainer was killed, or still runs) ends at lastSeen[trainer ID] when
// given, else at now.
func (c *Cluster) Jobs(lastSeen map[string]time.Time) ([]Job, error) {
	var out []Job
	for _, tr := range c.Trainers {
		jobs, err := readJobs(tr, lastSeen)
		if err != nil {
			return nil, err
		}
		out = append(out, jobs...)
	}
	return out, nil
}

func readJobs(tr *Trainer, lastSeen map[string]time.Time) ([]Job, error) {
	f, err := os.Open(tr.Events)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // it never started a job
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Job
	open := map[string]agent.Event{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e agent.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("events of trainer %s: %w", tr.ID, err)
		}
		switch e.Event {
		case "start":
			open[e.Trial] = e
		case "end":
			s := open[e.Trial]
			delete(open, e.Trial)
			end := e.UnixNano
			if e.FencedUnixNano > 0 {
				// Stopped for lost contact: it did no work that counts
				// after its fence (a paused trainer waking up does not).
				end = min(end, e.FencedUnixNano)
			}
			out = append(out, Job{tr.ID, e.Trial, e.Generation, s.UnixNano, end})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("events of trainer %s: %w", tr.ID, err)
	}
	end, ok := lastSeen[tr.ID]
	if !ok {
		end = time.Now()
	}
	for trial, s := range open {
		out = append(out, Job{tr.ID, trial, s.Generation, s.UnixNano, end.UnixNano()})
	}
	return out, nil
}

// Overlaps returns every pair of jobs of the same trial that ran at the
// same time: a trial that ran twice at once.
func Overlaps(jobs []Job) [][2]Job {
	byTrial := map[string][]Job{}
	for _, j := range jobs {
		byTrial[j.Trial] = append(byTrial[j.Trial], j)
	}
	var out [][2]Job
	for _, js := range byTrial {
		slices.SortFunc(js, func(a, b Job) int { return int(a.From - b.From) })
		for i := 1; i < len(js); i++ {
			if js[i].From < js[i-1].To {
				out = append(out, [2]Job{js[i-1], js[i]})
			}
		}
	}
	return out
}

// LongestIdle is the longest stretch within [from, to] in which no job ran
// (the time after the last job ends is not counted: that is the end of the
// work, not idleness).
func LongestIdle(jobs []Job, from, to time.Time) time.Duration {
	js := slices.Clone(jobs)
	slices.SortFunc(js, func(a, b Job) int { return int(a.From - b.From) })
	covered, hi, longest := from.UnixNano(), to.UnixNano(), int64(0)
	for _, j := range js {
		if j.To <= covered {
			continue
		}
		if j.From > covered {
			longest = max(longest, min(j.From, hi)-covered)
		}
		covered = max(covered, j.To)
		if covered >= hi {
			break
		}
	}
	return time.Duration(longest)
}
