package bench

import (
	"context"
	"testing"
)

// TestEpoch runs the bucketing benchmark on the shipped demo data: both
// runs train the whole split, and bucketing holds fewer padding slots.
func TestEpoch(t *testing.T) {
	rep, err := (&Runner{Version: "test"}).Epoch(context.Background(), EpochConfig{Data: "../experiments/data/demo.csv", Config: "tiny", MaxLen: 64, Batch: 16, Epochs: 1, Reps: 1})
	if err != nil {
		t.Fatal(err)
	}
	runs := rep["runs"].(map[string]EpochRun)
	padded, bucketed := runs["padded"], runs["bucketed"]
	if padded.RealTokens != bucketed.RealTokens || padded.RealTokens == 0 {
		t.Fatalf("real tokens %d padded, %d bucketed: the runs did not see the same rows", padded.RealTokens, bucketed.RealTokens)
	}
	if !(bucketed.TokenSlots < padded.TokenSlots) {
		t.Fatalf("token slots %d bucketed, %d padded: bucketing saved nothing", bucketed.TokenSlots, padded.TokenSlots)
	}
	if padded.SamplesPerS <= 0 || bucketed.SamplesPerS <= 0 {
		t.Fatalf("samples/s %v and %v", padded.SamplesPerS, bucketed.SamplesPerS)
	}
	t.Logf("token slots %d → %d; samples/s %.1f → %.1f", padded.TokenSlots, bucketed.TokenSlots, padded.SamplesPerS, bucketed.SamplesPerS)
}
