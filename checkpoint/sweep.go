package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// SweepKey is the store key of a sweep's record.
func SweepKey(name string) string { return "sweeps/" + name + ".json" }

// SweepRecord is what the store knows of a sweep: its own trial list (the
// run names of its trials) and the metric it ranks them by. `loraft sweep
// launch` writes it once the coordinators have accepted the sweep, so the
// sweep's runs can be told apart in the store without the coordinators
// (`adapter pull --best --sweep S` on a store alone). The coordinators' FSM
// stays the truth for the trials' state.
type SweepRecord struct {
	Name          string    `json:"name"`
	Metric        string    `json:"metric"`
	DatasetSHA256 string    `json:"dataset_sha256"`
	Trials        []string  `json:"trials"`
	Created       time.Time `json:"created"`
}

// PutSweep writes r under SweepKey(r.Name), replacing an older record.
func PutSweep(ctx context.Context, s Store, r SweepRecord) error {
	if err := ValidateRun(r.Name); err != nil {
		return fmt.Errorf("sweep record: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := PutBytes(ctx, s, SweepKey(r.Name), b); err != nil {
		return fmt.Errorf("writing the record of sweep %s: %w", r.Name, err)
	}
	return nil
}

// GetSweep reads the record of the sweep named name; a store without one
// (a sweep launched before records were written, or elsewhere) gives an
// error wrapping ErrNotFound.
func GetSweep(ctx context.Context, s Store, name string) (*SweepRecord, error) {
	if err := ValidateRun(name); err != nil {
		return nil, fmt.Errorf("sweep record: %w", err)
	}
	b, err := GetBytes(ctx, s, SweepKey(name))
	if err != nil {
		return nil, fmt.Errorf("record of sweep %s: %w", name, err)
	}
	var r SweepRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("record of sweep %s (%s in %s): %w", name, SweepKey(name), s, err)
	}
	if r.Name != name {
		return nil, fmt.Errorf("record of sweep %s (%s in %s) names sweep %q", name, SweepKey(name), s, r.Name)
	}
	return &r, nil
}
