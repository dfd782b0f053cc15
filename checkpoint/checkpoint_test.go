package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func dirStore(t *testing.T) Store {
	t.Helper()
	s, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func files(step int) map[string][]byte {
	return map[string][]byte{"state.json": []byte(fmt.Sprintf(`{"step":%d}`, step)), "adapter.safetensors": []byte(strings.Repeat("x", step+10))}
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestSaveListLoad(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	for _, step := range []int{10, 20, 30} {
		if _, err := Save(ctx, s, "r1", step, files(step), map[string]float64{"macro_f1": float64(step) / 100}, t0); err != nil {
			t.Fatal(err)
		}
	}
	cks, err := List(ctx, s, "r1", nil)
	if err != nil || len(cks) != 3 || cks[0].Step != 10 || cks[2].Step != 30 {
		t.Fatalf("List = %+v, %v", cks, err)
	}
	ck, got, err := LoadLatest(ctx, s, "r1", nil)
	if err != nil || ck.Step != 30 || !reflect.DeepEqual(got, files(30)) {
		t.Fatalf("LoadLatest = step %v, %v", ck, err)
	}
	if runs, _ := Runs(ctx, s); !reflect.DeepEqual(runs, []string{"r1"}) {
		t.Fatalf("Runs = %v", runs)
	}
	if _, err := Save(ctx, s, "../evil", 1, files(1), nil, t0); !errors.Is(err, ErrBadRun) {
		t.Fatalf("bad run name: %v", err)
	}
}

// TestCorruptFallsBack: a checkpoint whose object was altered or truncated is
// reported by name and the previous valid one is used.
func TestCorruptFallsBack(t *testing.T) {
	ctx := context.Background()
	for _, damage := range []struct {
		name string
		b    []byte
	}{{"altered", []byte(strings.Repeat("y", 40))}, {"truncated", []byte("xx")}} {
		t.Run(damage.name, func(t *testing.T) {
			s := dirStore(t)
			for _, step := range []int{10, 30} {
				if _, err := Save(ctx, s, "r", step, files(step), nil, t0); err != nil {
					t.Fatal(err)
				}
			}
			if err := PutBytes(ctx, s, Prefix("r", 30)+"adapter.safetensors", damage.b); err != nil {
				t.Fatal(err)
			}
			var warned []error
			ck, got, err := LoadLatest(ctx, s, "r", func(err error) { warned = append(warned, err) })
			if err != nil || ck.Step != 10 || !reflect.DeepEqual(got, files(10)) {
				t.Fatalf("LoadLatest after damage = %v, %v; want step 10", ck, err)
			}
			if len(warned) != 1 || !errors.Is(warned[0], ErrCorrupt) || !strings.Contains(warned[0].Error(), Prefix("r", 30)+"adapter.safetensors") {
				t.Fatalf("warnings %v, want one naming the damaged object", warned)
			}
		})
	}
}

// TestUncommittedIsInvisible: objects written without their manifest (an
// interrupted save) never form a listed checkpoint, and a missing object of a
// committed checkpoint is corruption.
func TestUncommittedIsInvisible(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	if _, err := Save(ctx, s, "r", 5, files(5), nil, t0); err != nil {
		t.Fatal(err)
	}
	for n, b := range files(9) { // step 9: objects but no manifest
		if err := PutBytes(ctx, s, Prefix("r", 9)+n, b); err != nil {
			t.Fatal(err)
		}
	}
	cks, _ := List(ctx, s, "r", nil)
	if len(cks) != 1 || cks[0].Step != 5 {
		t.Fatalf("List = %+v, want only step 5", cks)
	}
	if err := s.Delete(ctx, Prefix("r", 5)+"state.json"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadLatest(ctx, s, "r", nil); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("LoadLatest with a missing object = %v, want ErrNoCheckpoint", err)
	}
}

func TestRetain(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	f1 := map[int]float64{10: 0.5, 20: 0.9, 30: 0.6, 40: 0.4, 50: 0.3}
	for _, step := range []int{10, 20, 30, 40, 50} {
		if _, err := Save(ctx, s, "r", step, files(step), map[string]float64{"macro_f1": f1[step]}, t0); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan (no manifest) from a crashed save.
	if err := PutBytes(ctx, s, Prefix("r", 60)+"state.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	r := Retention{KeepLatest: 2, KeepBest: 1, Metric: "macro_f1", Grace: time.Hour}
	// Within the grace time the orphan stays (it may be an upload in progress).
	if _, err := Retain(ctx, s, "r", r, time.Now()); err != nil {
		t.Fatal(err)
	}
	cks, _ := List(ctx, s, "r", nil)
	var steps []int
	for _, c := range cks {
		steps = append(steps, c.Step)
	}
	if !reflect.DeepEqual(steps, []int{20, 40, 50}) {
		t.Fatalf("kept steps %v, want best 20 and latest 40, 50", steps)
	}
	if _, err := s.Stat(ctx, Prefix("r", 60)+"state.json"); err != nil {
		t.Fatalf("orphan within grace deleted: %v", err)
	}
	deleted, err := Retain(ctx, s, "r", r, time.Now().Add(2*time.Hour))
	if err != nil || len(deleted) != 1 || deleted[0] != Prefix("r", 60)+"state.json" {
		t.Fatalf("second Retain deleted %v, %v; want the orphan", deleted, err)
	}
	objs, _ := s.List(ctx, Prefix("r", 10))
	if len(objs) != 0 {
		t.Fatalf("step 10 left %d objects", len(objs))
	}
}

func TestBest(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	for run, scores := range map[string][]float64{"sw-a": {0.2, 0.5}, "sw-b": {0.7, 0.6}, "other": {0.9}} {
		for i, v := range scores {
			if _, err := Save(ctx, s, run, (i+1)*10, files(i), map[string]float64{"macro_f1": v}, t0); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := Best(ctx, s, []string{"sw-a", "sw-b"}, "macro_f1", nil)
	if err != nil || b.Run != "sw-b" || b.Step != 10 {
		t.Fatalf("Best = %+v, %v; want sw-b step 10", b, err)
	}
	if _, err := Best(ctx, s, []string{"sw-a"}, "accuracy", nil); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("Best on a missing metric = %v", err)
	}
}

// TestLoadAtOrBefore picks the newest verifying checkpoint at or before a
// step, whatever comes later.
func TestLoadAtOrBefore(t *testing.T) {
	ctx := context.Background()
	store := dirStore(t)
	for _, step := range []int{2, 4, 6} {
		if _, err := Save(ctx, store, "r", step, map[string][]byte{"x": []byte(fmt.Sprint(step))}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := PutBytes(ctx, store, Prefix("r", 4)+"x", []byte("corrupt")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		step, want, warnings int
	}{{1, -1, 0}, {2, 2, 0}, {3, 2, 0}, {4, 2, 1}, {5, 2, 1}, {6, 6, 0}, {100, 6, 0}}
	for _, tc := range tests {
		warnings := 0
		ck, files, err := LoadAtOrBefore(ctx, store, "r", tc.step, func(error) { warnings++ })
		if tc.want < 0 {
			if !errors.Is(err, ErrNoCheckpoint) {
				t.Errorf("step %d: %v, want ErrNoCheckpoint", tc.step, err)
			}
			continue
		}
		if err != nil || ck.Step != tc.want || string(files["x"]) != fmt.Sprint(tc.want) || warnings != tc.warnings {
			t.Errorf("step %d: checkpoint %v, files %q, %d warnings, %v; want step %d, %d warnings", tc.step, ck, files, warnings, err, tc.want, tc.warnings)
		}
	}
}
