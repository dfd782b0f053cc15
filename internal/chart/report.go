// Package chart draws the plots of a LoRA rank×alpha sweep report: a heat map
// of each trial's final validation metric over the (rank, alpha) grid, and the
// training-loss and validation-metric curves of every trial.
//
// The input is the sweep report, a JSON document (written by
// `loraft sweep status --json --history`) of this shape:
//
//	{
//	  "sweep":  "rank-alpha",          // sweep name (required)
//	  "metric": "macro_f1",            // name of the selection metric (required)
//	  "trials": [                      // one per (rank, alpha) pair (at least one)
//	    {
//	      "name":     "rank-alpha-t000", // unique trial name (required)
//	      "rank":     4,                 // LoRA rank, > 0 (required)
//	      "alpha":    8,                 // LoRA alpha, > 0 (required; may be fractional)
//	      "state":    "SUCCEEDED",       // trial state (informational)
//	      "metric":   0.31,              // final validation metric; null or absent while unknown
//	      "accuracy": 0.52,              // final validation accuracy; null or absent while unknown
//	      "wall_ms":  123456,            // wall-clock time in milliseconds, >= 0
//	      "loss": [{"step": 1,  "value": 1.9}, ...],  // training loss by optimizer step
//	      "eval": [{"step": 10, "value": 0.21}, ...]  // validation metric by optimizer step
//	    }
//	  ]
//	}
//
// Unknown fields are ignored, so the report may grow. Steps are >= 0, and every
// number must be finite. Curves need not be sorted by step; they are drawn in
// step order.
//
// The output format follows the file extension: .png or .svg. The same report
// always renders to the same bytes.
package chart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Report is a sweep report: the trials of one rank×alpha sweep and their
// metrics and curves. See the package documentation for its JSON form.
type Report struct {
	// Sweep is the sweep's name, used in plot titles.
	Sweep string `json:"sweep"`
	// Metric names the validation metric of Trial.Metric and Trial.Eval
	// (for example "macro_f1").
	Metric string `json:"metric"`
	// Trials are the sweep's trials, at most one per (Rank, Alpha) pair.
	Trials []Trial `json:"trials"`
}

// Trial is one training run of a sweep at one LoRA (rank, alpha) setting.
type Trial struct {
	// Name identifies the trial uniquely within the sweep.
	Name string `json:"name"`
	// Rank is the LoRA rank r.
	Rank int `json:"rank"`
	// Alpha is the LoRA scaling numerator α (the update is scaled by α/r).
	Alpha float64 `json:"alpha"`
	// State is the trial's state (PENDING, RUNNING, SUCCEEDED, FAILED, …).
	State string `json:"state,omitempty"`
	// Metric is the final value of the report's validation metric, nil while
	// it is unknown (the trial has not finished, or failed).
	Metric *float64 `json:"metric,omitempty"`
	// Accuracy is the final validation accuracy, nil while unknown.
	Accuracy *float64 `json:"accuracy,omitempty"`
	// WallMS is the trial's wall-clock time in milliseconds.
	WallMS int64 `json:"wall_ms,omitempty"`
	// Loss is the training loss by optimizer step.
	Loss []Point `json:"loss,omitempty"`
	// Eval is the validation metric by optimizer step.
	Eval []Point `json:"eval,omitempty"`
}

// Point is one value of a curve at an optimizer step.
type Point struct {
	Step  int     `json:"step"`
	Value float64 `json:"value"`
}

// ReadReport reads and validates the sweep report in the JSON file at path.
// Its errors name the file and, where one is at fault, the field (for example
// "report.json: trials[2].rank: must be > 0, got 0") or the line and column
// of malformed JSON.
func ReadReport(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sweep report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("sweep report %s: %w", path, describeJSONError(data, err))
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("sweep report %s: %w", path, err)
	}
	return &r, nil
}

// describeJSONError adds the line and column, and the field where the
// decoder knows it, to a json.Unmarshal error.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := lineCol(data, syn.Offset)
		return fmt.Errorf("line %d column %d: malformed JSON: %w", line, col, err)
	case errors.As(err, &typ):
		line, col := lineCol(data, typ.Offset)
		if typ.Field == "" {
			return fmt.Errorf("line %d column %d: the report must be a JSON object: %w", line, col, err)
		}
		return fmt.Errorf("line %d column %d: field %s: %w", line, col, typ.Field, err)
	}
	return err
}

// lineCol turns a byte offset into 1-based line and column numbers.
func lineCol(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	if offset < 0 {
		offset = 0
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	if col < 1 {
		col = 1
	}
	return line, col
}

// Validate checks r for what the plots need: a sweep and metric name, at
// least one trial, unique trial names, a positive rank and alpha, one trial
// per (rank, alpha), finite numbers and non-negative steps. Its errors name
// the field at fault, such as "trials[2].alpha".
func (r *Report) Validate() error {
	if r == nil {
		return errors.New("no report")
	}
	if strings.TrimSpace(r.Sweep) == "" {
		return errors.New(`field "sweep": missing or empty`)
	}
	if strings.TrimSpace(r.Metric) == "" {
		return errors.New(`field "metric": missing or empty`)
	}
	if len(r.Trials) == 0 {
		return errors.New(`field "trials": no trials: nothing to plot`)
	}
	names := make(map[string]int, len(r.Trials))
	cells := make(map[[2]float64]int, len(r.Trials))
	for i, t := range r.Trials {
		at := fmt.Sprintf("trials[%d]", i)
		if t.Name == "" {
			return fmt.Errorf("%s.name: missing or empty", at)
		}
		at = fmt.Sprintf("trials[%d] (%s)", i, t.Name)
		if j, dup := names[t.Name]; dup {
			return fmt.Errorf("%s.name: duplicates trials[%d]", at, j)
		}
		names[t.Name] = i
		if t.Rank <= 0 {
			return fmt.Errorf("%s.rank: must be > 0, got %d", at, t.Rank)
		}
		if !(t.Alpha > 0) || math.IsInf(t.Alpha, 0) {
			return fmt.Errorf("%s.alpha: must be a finite number > 0, got %g", at, t.Alpha)
		}
		cell := [2]float64{float64(t.Rank), t.Alpha}
		if j, dup := cells[cell]; dup {
			return fmt.Errorf("%s: rank %d alpha %g is also trials[%d] (%s): one trial per (rank, alpha)",
				at, t.Rank, t.Alpha, j, r.Trials[j].Name)
		}
		cells[cell] = i
		if t.Metric != nil && !finite(*t.Metric) {
			return fmt.Errorf("%s.metric: not finite: %g", at, *t.Metric)
		}
		if t.Accuracy != nil && !finite(*t.Accuracy) {
			return fmt.Errorf("%s.accuracy: not finite: %g", at, *t.Accuracy)
		}
		if t.WallMS < 0 {
			return fmt.Errorf("%s.wall_ms: must be >= 0, got %d", at, t.WallMS)
		}
		for _, curve := range []struct {
			field string
			pts   []Point
		}{{"loss", t.Loss}, {"eval", t.Eval}} {
			for k, p := range curve.pts {
				if p.Step < 0 {
					return fmt.Errorf("%s.%s[%d].step: must be >= 0, got %d", at, curve.field, k, p.Step)
				}
				if !finite(p.Value) {
					return fmt.Errorf("%s.%s[%d].value: not finite: %g", at, curve.field, k, p.Value)
				}
			}
		}
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
