package bench

import (
	"context"
	"strings"
	"testing"
)

func TestReadSSE(t *testing.T) {
	tests := []struct {
		name, stream string
		want         []string
	}{
		{"one view", "data: {\"a\":1}\n\n", []string{`{"a":1}`}},
		{"named events are not views", "event: curves\ndata: [1]\n\ndata: {\"b\":2}\n\nevent: problem\ndata: {}\n\n", []string{`{"b":2}`}},
		{"comments and keep-alives", ": keep-alive\n\ndata: {}\n\n: keep-alive\n\n", []string{`{}`}},
		{"an unfinished event is not sent", "data: {\"a\":1}\n\ndata: {\"a\":2}\n", []string{`{"a":1}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make(chan sseMessage, 8)
			readSSE(t.Context(), strings.NewReader(tt.stream), out)
			var got []string
			for m := range out {
				if m.at.IsZero() {
					t.Errorf("event %s has no arrival time", m.data)
				}
				got = append(got, string(m.data))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDashboardReport runs the benchmark small and checks that its report
// has every figure; the sums of the trial gauges are checked inside.
func TestDashboardReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process coordinator for seconds")
	}
	r := &Runner{Version: "test"}
	rep, err := r.Dashboard(context.Background(), DashboardConfig{Trials: 25, Running: 3, Checkpoints: 2, Loads: 2, Updates: 4,
		MetricsTrials: 1500, Scrapes: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"first_paint_ms_p50", "live_update_ms_p50", "live_update_ms_max", "live_update_heartbeat_ms_p50",
		"live_update_checkpoint_ms_p50", "metrics_ms_p50", "metrics_ms_max", "metrics_bytes", "metrics_gzip_bytes", "metrics_series"} {
		v, ok := rep[k]
		if !ok {
			t.Errorf("the report has no %s", k)
			continue
		}
		if !positive(v) {
			t.Errorf("%s = %v, want > 0", k, v)
		}
	}
	if got := rep["metrics_trials"]; got != 1500 {
		t.Errorf("metrics_trials = %v, want 1500", got)
	}
	if rep["metrics_series"] != rep["metrics_series_sweep_only"] {
		t.Errorf("/metrics has %v series with 1500 trials and %v with 25: a series per trial or sweep", rep["metrics_series"], rep["metrics_series_sweep_only"])
	}
}

// positive says whether v is a number above 0.
func positive(v any) bool {
	switch n := v.(type) {
	case float64:
		return n > 0
	case int64:
		return n > 0
	case int:
		return n > 0
	}
	return false
}
