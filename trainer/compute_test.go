package trainer

import (
	"context"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
)

// TestResolveCompute: named dtypes pass through (normalised), unknown ones
// are refused naming the choices, and auto measures both dtypes and picks
// bf16 exactly when its probe matmul is bf16Pays times as fast.
func TestResolveCompute(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"fp32", "fp32", ""}, {"", "fp32", ""}, {"float32", "fp32", ""},
		{"bf16", "bf16", ""}, {"bfloat16", "bf16", ""},
		{"fp16", "", "want fp32, bf16 or auto"},
	} {
		p, err := ResolveCompute(context.Background(), tc.in, gotch.CPU)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("%q: error %v, want one naming %q and %q", tc.in, err, tc.in, tc.err)
			}
			continue
		}
		if err != nil || p.Compute != tc.want || p.FP32GFLOPS != 0 {
			t.Errorf("%q: %+v, %v; want %s without a probe", tc.in, p, err, tc.want)
		}
	}
	p, err := ResolveCompute(context.Background(), "auto", gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("auto on this CPU: %+v", p)
	if p.FP32GFLOPS <= 0 || p.BF16GFLOPS <= 0 {
		t.Fatalf("auto measured nothing: %+v", p)
	}
	if want := map[bool]string{true: "bf16", false: "fp32"}[p.BF16GFLOPS >= bf16Pays*p.FP32GFLOPS]; p.Compute != want {
		t.Fatalf("auto chose %s from %+v, want %s", p.Compute, p, want)
	}
}
