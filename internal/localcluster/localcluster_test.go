package localcluster

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestLoadPortsAddsListeners: a ports file written before the coordinators
// had HTTP listeners and the trainers metrics listeners keeps every address
// it had and gains distinct new ones; loading it again changes nothing.
func TestLoadPortsAddsListeners(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.json")
	old := Ports{Raft: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, API: []string{"127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:6"},
		Trainers: []string{"127.0.0.1:7", "127.0.0.1:8"}}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPorts(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Raft, old.Raft) || !slices.Equal(p.API, old.API) || !slices.Equal(p.Trainers, old.Trainers) {
		t.Fatalf("ports changed: %+v, had %+v", p, old)
	}
	if len(p.HTTP) != 3 || len(p.Metrics) != 2 {
		t.Fatalf("%d HTTP and %d metrics addresses, want 3 and 2", len(p.HTTP), len(p.Metrics))
	}
	seen := map[string]bool{}
	for _, a := range slices.Concat(p.Raft, p.API, p.Trainers, p.HTTP, p.Metrics) {
		if seen[a] {
			t.Fatalf("address %s given twice: %+v", a, p)
		}
		seen[a] = true
	}
	again, err := LoadPorts(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.HTTP, p.HTTP) || !slices.Equal(again.Metrics, p.Metrics) {
		t.Fatalf("reloaded %+v, want %+v", again, p)
	}
}
