package checkpoint_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
)

func TestSweepRecord(t *testing.T) {
	ctx := context.Background()
	s, _ := newDirStore(t)
	if _, err := checkpoint.GetSweep(ctx, s, "demo"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("GetSweep of a missing record = %v, want ErrNotFound", err)
	}
	want := checkpoint.SweepRecord{Name: "demo", Metric: "macro_f1", DatasetSHA256: "ab", Trials: []string{"demo-t000", "demo-t001"},
		Created: time.Unix(1700000000, 0).UTC()}
	if err := checkpoint.PutSweep(ctx, s, want); err != nil {
		t.Fatal(err)
	}
	got, err := checkpoint.GetSweep(ctx, s, "demo")
	if err != nil || !reflect.DeepEqual(*got, want) {
		t.Fatalf("GetSweep = %+v, %v; want %+v", got, err, want)
	}
	// Runs lists runs only: a sweep record is not one.
	if runs, err := checkpoint.Runs(ctx, s); err != nil || len(runs) != 0 {
		t.Fatalf("Runs = %v, %v", runs, err)
	}
	if err := checkpoint.PutSweep(ctx, s, checkpoint.SweepRecord{Name: "../x"}); !errors.Is(err, checkpoint.ErrBadRun) {
		t.Fatalf("PutSweep(../x) = %v, want ErrBadRun", err)
	}
}
