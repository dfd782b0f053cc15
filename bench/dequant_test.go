package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/loraft/loraft/trainer/model"
)

// TestDequant runs the dequantization benchmark on the tiny config: it
// rebuilds every frozen Linear weight (six per layer and the pooler) and
// times each way in both dtypes.
func TestDequant(t *testing.T) {
	rep, err := (&Runner{Version: "test"}).Dequant(context.Background(), DequantConfig{Config: "tiny", Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := model.LoadConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if rep["device"] != "cpu" {
		t.Errorf("device %v, want cpu", rep["device"])
	}
	if got, want := rep["weights"], 6*mc.NumLayers+1; got != want {
		t.Errorf("%v weights rebuilt, want %d (six per layer and the pooler)", got, want)
	}
	for _, dt := range []string{"fp32", "bf16"} {
		r, ok := rep[dt].(map[string]any)
		if !ok {
			t.Fatalf("no %s section in %v", dt, rep)
		}
		for _, k := range []string{"nf4_fused_ms", "nf4_ops_ms"} {
			if v, _ := r[k].(float64); !(v > 0) {
				t.Errorf("%s %s = %v, want a positive time", dt, k, r[k])
			}
		}
		if cast, _ := r["fp32_base_ms"].(float64); (dt == "fp32") != (cast == 0) {
			t.Errorf("%s fp32_base_ms = %v: only bf16 converts the fp32 base", dt, cast)
		}
	}
}

// TestDequantBadDevice: a device that does not exist here is refused by
// name before any weight is built.
func TestDequantBadDevice(t *testing.T) {
	devices := []string{"tpu", "cuda:x"}
	if !gotch.CUDA.IsAvailable() {
		devices = append(devices, "cuda")
	}
	for _, dev := range devices {
		_, err := (&Runner{}).Dequant(context.Background(), DequantConfig{Config: "tiny", Device: dev, Rounds: 1})
		if err == nil || !strings.Contains(err.Error(), dev) {
			t.Errorf("device %q: err = %v, want one naming it", dev, err)
		}
	}
}
