package bench

import (
	"fmt"
	"strings"
	"testing"
)

const heyHeader = "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"

// heyCSV is `hey -o csv` output for answers (seconds) with code, started
// one after another.
func heyCSV(code int, secs ...float64) string {
	var b strings.Builder
	b.WriteString(heyHeader)
	off := 0.0
	for _, s := range secs {
		fmt.Fprintf(&b, "%.4f,0.0001,0.0000,0.0000,%.4f,0.0001,%d,%.4f\n", s, s, code, off)
		off += s
	}
	return b.String()
}

func TestParseHeyCSV(t *testing.T) {
	hundred := make([]float64, 100) // 1..100 ms: p50 50 ms, p99 99 ms
	for i := range hundred {
		hundred[i] = float64(i+1) / 1000
	}
	tests := []struct {
		name string
		out  string
		want heyRun
		err  string
	}{
		{"a hundred answers", heyCSV(200, hundred...),
			// 100 answers over 5.05 s (the sum of 1..100 ms).
			heyRun{Requests: 100, RPS: 19.8, P50ms: 50, P99ms: 99, Codes: map[string]int{"200": 100}}, ""},
		{"three slow answers", heyCSV(200, 4, 2, 3),
			heyRun{Requests: 3, RPS: 0.3, P50ms: 3000, P99ms: 4000, Codes: map[string]int{"200": 3}}, ""},
		{"refused answers are errors, not requests/s", heyHeader + "0.0100,0,0,0,0.0100,0,200,0.0000\n0.0100,0,0,0,0.0100,0,429,0.0000\n",
			heyRun{Requests: 2, RPS: 100, P50ms: 10, P99ms: 10, Errors: 1, Codes: map[string]int{"200": 1, "429": 1}}, ""},
		{"no answer", heyHeader, heyRun{}, "no request was answered"},
		{"hey's text summary", "Summary:\n  Total:\t1.0 secs\n", heyRun{}, "unexpected header"},
		{"a bad number", heyHeader + "x,0,0,0,0,0,200,0\n", heyRun{}, "row 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHeyCSV([]byte(tt.out))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// %+v prints maps sorted by key.
			if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", tt.want); g != w {
				t.Errorf("parsed %s, want %s", g, w)
			}
		})
	}
}
