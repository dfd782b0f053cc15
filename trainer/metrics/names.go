package metrics

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Metric names: the keys of Scores, of checkpoint manifests' metrics, and the
// values a sweep spec's metric, `adapter pull --metric` and checkpoint
// retention take. Every place that names a metric uses these.
const (
	MacroF1    = "macro_f1"
	Accuracy   = "accuracy"
	WeightedF1 = "weighted_f1"
	ECE        = "ece"
	NLL        = "nll"
)

// DefaultSelection is the metric trials, checkpoints and adapters are ranked
// by when none is named: macro-F1, because the seven classes are imbalanced
// and accuracy rewards predicting the big ones.
const DefaultSelection = MacroF1

// Selectable lists the metrics a sweep can rank by; all are maximised.
func Selectable() []string { return []string{MacroF1, Accuracy, WeightedF1} }

// ErrUnknownMetric reports a metric name that Selectable does not list.
var ErrUnknownMetric = errors.New("unknown metric")

// ParseSelection returns the metric to rank by: name, or DefaultSelection
// when name is empty. A name Selectable does not list is an error wrapping
// ErrUnknownMetric.
func ParseSelection(name string) (string, error) {
	if name == "" {
		return DefaultSelection, nil
	}
	if !slices.Contains(Selectable(), name) {
		return "", fmt.Errorf("%w %q, want %s (all maximised)", ErrUnknownMetric, name, strings.Join(Selectable(), ", "))
	}
	return name, nil
}

// Metric returns the named score (one of Selectable; all are maximised), and
// false for another name.
func (r Report) Metric(name string) (float64, bool) {
	switch name {
	case MacroF1:
		return r.MacroF1, true
	case Accuracy:
		return r.Accuracy, true
	case WeightedF1:
		return r.WeightedF1, true
	}
	return 0, false
}

// Scores are the report's headline numbers by metric name, as checkpoint
// manifests and metrics.json record them.
func (r Report) Scores() map[string]float64 {
	return map[string]float64{MacroF1: r.MacroF1, Accuracy: r.Accuracy, WeightedF1: r.WeightedF1, ECE: r.ECE, NLL: r.NLL}
}
