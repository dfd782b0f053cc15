package coordinator

import (
	"fmt"
	"slices"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// bestUpTo is a trial's best reported metric at steps ≤ step.
func bestUpTo(t *pb.Trial, step int64) (float64, bool) {
	best, ok := 0.0, false
	for _, p := range t.GetHistory() {
		if p.GetStep() <= step && (!ok || p.GetMetric() > best) {
			best, ok = p.GetMetric(), true
		}
	}
	return best, ok
}

// shouldStop applies the sweep's early-stopping rule to trial t, which just
// reported a metric at step. Both rules only judge a trial past the grace
// steps and only against trials that reached the same step:
//
//   - median: stop when t's best so far is below the median of the other
//     trials' bests at the same step (at least two others needed);
//   - asha: rungs at grace·η^k steps; a trial crossing a rung continues only
//     when it is in the top 1/η of the trials that reached that rung
//     (asynchronous successive halving: the first arrivals always continue).
func shouldStop(sw *pb.Sweep, t *pb.Trial, step int64) (bool, string) {
	es := sw.GetEarlyStopping()
	if es == nil || step < es.GetGraceSteps() {
		return false, ""
	}
	mine, ok := bestUpTo(t, step)
	if !ok {
		return false, ""
	}
	switch es.GetRule() {
	case "median":
		var others []float64
		for _, o := range sw.GetTrials() {
			if o.GetName() == t.GetName() || len(o.GetHistory()) == 0 || o.GetHistory()[len(o.GetHistory())-1].GetStep() < step {
				continue
			}
			if m, ok := bestUpTo(o, step); ok {
				others = append(others, m)
			}
		}
		if len(others) < 2 {
			return false, ""
		}
		slices.Sort(others)
		med := others[len(others)/2]
		if len(others)%2 == 0 {
			med = (others[len(others)/2-1] + others[len(others)/2]) / 2
		}
		if mine < med {
			return true, fmt.Sprintf("median rule: best %s %.4f at step %d is below the median %.4f of %d other trials", sw.GetMetric(), mine, step, med, len(others))
		}
	case "asha":
		eta := int64(max(2, es.GetReductionFactor()))
		rung := ashaRung(max(1, es.GetGraceSteps()), eta, step)
		// Only judge at the first report on or past this rung.
		h := t.GetHistory()
		if len(h) >= 2 && h[len(h)-2].GetStep() >= rung {
			return false, ""
		}
		var at []float64
		for _, o := range sw.GetTrials() {
			if len(o.GetHistory()) == 0 || o.GetHistory()[len(o.GetHistory())-1].GetStep() < rung {
				continue
			}
			if m, ok := bestUpTo(o, step); ok {
				at = append(at, m)
			}
		}
		keep := (len(at) + int(eta) - 1) / int(eta)
		if len(at) < int(eta) {
			return false, ""
		}
		slices.Sort(at)
		cut := at[len(at)-keep]
		if mine < cut {
			return true, fmt.Sprintf("ASHA rung %d: %s %.4f is outside the top %d of %d trials (cut %.4f)", rung, sw.GetMetric(), mine, keep, len(at), cut)
		}
	}
	return false, ""
}

// ashaRung is the highest rung grace·η^k (k ≥ 0) at or below step, or
// grace when step is below it. It compares rung with step/η rather than
// rung·η with step, so no product can overflow whatever step a report
// carries: the loop ends after at most 63 rounds.
func ashaRung(grace, eta, step int64) int64 {
	rung := grace
	for rung <= step/eta {
		rung *= eta
	}
	return rung
}
