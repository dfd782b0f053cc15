package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ManifestName is the object that commits a checkpoint: it is written last,
// after every other object of the checkpoint, so a checkpoint exists only
// once its manifest exists (DESIGN.md invariant 4).
const ManifestName = "MANIFEST.json"

// Errors of the checkpoint format.
var (
	// ErrCorrupt: an object is missing or its size or sha256 differs from the manifest.
	ErrCorrupt = errors.New("corrupt checkpoint")
	// ErrNoCheckpoint: a run has no valid checkpoint.
	ErrNoCheckpoint = errors.New("no valid checkpoint")
	// ErrBadRun: a run name loraft does not accept.
	ErrBadRun = errors.New("bad run name")
)

var runName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateRun checks a run name: letters, digits, '.', '_', '-', at most 128.
func ValidateRun(run string) error {
	if !runName.MatchString(run) {
		return fmt.Errorf("%w: %q (letters, digits, '.', '_' and '-', starting with a letter or digit)", ErrBadRun, run)
	}
	return nil
}

// Entry is one object of a checkpoint.
type Entry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest lists a checkpoint's objects with sizes and hashes.
type Manifest struct {
	Format  int       `json:"format"`
	Run     string    `json:"run"`
	Step    int       `json:"step"`
	Created time.Time `json:"created"`
	Files   []Entry   `json:"files"`
	// Metrics are evaluation results at this step (e.g. "macro_f1"), used to pick the best checkpoint.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Checkpoint is a committed checkpoint of a run.
type Checkpoint struct {
	Run      string
	Step     int
	Manifest Manifest
}

// RunPrefix is the key prefix of a run's objects.
func RunPrefix(run string) string { return "runs/" + run + "/" }

// Prefix is the key prefix of one checkpoint; steps are zero-padded so keys sort by step.
func Prefix(run string, step int) string {
	return fmt.Sprintf("runs/%s/ckpt/%012d/", run, step)
}

// Save writes files (name → bytes) under the checkpoint's prefix, each
// verified by size and sha256 in the manifest, then writes the manifest. If
// any write fails the checkpoint is not committed (its objects become
// orphans that Retain removes) and the error names the object.
func Save(ctx context.Context, s Store, run string, step int, files map[string][]byte, metrics map[string]float64, now time.Time) (*Checkpoint, error) {
	if err := ValidateRun(run); err != nil {
		return nil, err
	}
	if step < 0 {
		return nil, fmt.Errorf("checkpoint %s: step %d is negative", run, step)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("checkpoint %s step %d: no objects (a checkpoint holds at least its adapter)", run, step)
	}
	m := Manifest{Format: 1, Run: run, Step: step, Created: now.UTC(), Metrics: metrics}
	names := make([]string, 0, len(files))
	for n := range files {
		if why := entryNameProblem(n); why != "" {
			return nil, fmt.Errorf("checkpoint %s step %d: bad object name %q: %s", run, step, n, why)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	prefix := Prefix(run, step)
	for _, n := range names {
		b := files[n]
		sum := sha256.Sum256(b)
		if err := PutBytes(ctx, s, prefix+n, b); err != nil {
			return nil, fmt.Errorf("saving checkpoint %s step %d: object %s: %w", run, step, n, err)
		}
		m.Files = append(m.Files, Entry{Name: n, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := PutBytes(ctx, s, prefix+ManifestName, mb); err != nil {
		return nil, fmt.Errorf("saving checkpoint %s step %d: manifest: %w", run, step, err)
	}
	return &Checkpoint{Run: run, Step: step, Manifest: m}, nil
}

// Runs lists the runs that have at least one object in the store.
func Runs(ctx context.Context, s Store) ([]string, error) {
	objs, err := s.List(ctx, "runs/")
	if err != nil {
		return nil, fmt.Errorf("listing runs in %s: %w", s, err)
	}
	var runs []string
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, "runs/")
		if i := strings.IndexByte(rest, '/'); i > 0 {
			runs = append(runs, rest[:i])
		}
	}
	return slices.Compact(runs), nil
}

// List returns a run's committed checkpoints (those with a readable
// manifest), by ascending step. A manifest that cannot be parsed is reported
// to warn and skipped.
func List(ctx context.Context, s Store, run string, warn func(error)) ([]Checkpoint, error) {
	if err := ValidateRun(run); err != nil {
		return nil, err
	}
	objs, err := s.List(ctx, RunPrefix(run)+"ckpt/")
	if err != nil {
		return nil, fmt.Errorf("listing checkpoints of %s in %s: %w", run, s, err)
	}
	var out []Checkpoint
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/"+ManifestName) {
			continue
		}
		step, ok := stepOf(run, o.Key)
		if !ok {
			continue
		}
		if o.Size > MaxManifestBytes {
			if warn != nil {
				warn(fmt.Errorf("%w: manifest %s has %d bytes, more than the %d a manifest may have", ErrCorrupt, o.Key, o.Size, MaxManifestBytes))
			}
			continue
		}
		b, err := getLimited(ctx, s, o.Key, MaxManifestBytes)
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				if warn != nil {
					warn(err)
				}
				continue
			}
			return nil, fmt.Errorf("reading %s: %w", o.Key, err)
		}
		m, err := ParseManifest(o.Key, b)
		if err == nil && (m.Step != step || m.Run != run) {
			err = fmt.Errorf("%w: manifest %s: names run %q step %d, but its key says run %q step %d", ErrCorrupt, o.Key, m.Run, m.Step, run, step)
		}
		if err != nil {
			if warn != nil {
				warn(err)
			}
			continue
		}
		out = append(out, Checkpoint{Run: run, Step: step, Manifest: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out, nil
}

// stepOf parses the step out of runs/<run>/ckpt/<step>/<name>.
func stepOf(run, key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, RunPrefix(run)+"ckpt/")
	if !ok {
		return 0, false
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(rest[:i])
	return n, err == nil
}

// Load reads every object of c and verifies its size and sha256 against the
// manifest; a mismatch is ErrCorrupt naming the object.
func Load(ctx context.Context, s Store, c Checkpoint) (map[string][]byte, error) {
	prefix := Prefix(c.Run, c.Step)
	if err := c.Manifest.Validate(prefix + ManifestName); err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, e := range c.Manifest.Files {
		// Read at most the size the manifest gives: a grown object is
		// corrupt, and must not cost more memory than a sound one.
		b, err := getLimited(ctx, s, prefix+e.Name, e.Size)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %s%s is missing", ErrCorrupt, prefix, e.Name)
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("%w: %s%s is longer than the %d bytes the manifest says", ErrCorrupt, prefix, e.Name, e.Size)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s%s: %w", prefix, e.Name, err)
		}
		sum := sha256.Sum256(b)
		if int64(len(b)) != e.Size || hex.EncodeToString(sum[:]) != e.SHA256 {
			return nil, fmt.Errorf("%w: %s%s has %d bytes with sha256 %x, the manifest says %d bytes with %.12s",
				ErrCorrupt, prefix, e.Name, len(b), sum[:6], e.Size, e.SHA256)
		}
		files[e.Name] = b
	}
	return files, nil
}

// LoadLatest loads the newest checkpoint of run that verifies. Each corrupt
// or unreadable newer checkpoint is reported to warn (by name) and skipped.
func LoadLatest(ctx context.Context, s Store, run string, warn func(error)) (*Checkpoint, map[string][]byte, error) {
	ck, files, err := loadNewest(ctx, s, run, math.MaxInt, warn)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil, nil, fmt.Errorf("%w for run %s in %s", ErrNoCheckpoint, run, s)
	}
	return ck, files, err
}

// LoadAtOrBefore loads the newest checkpoint of run with a step ≤ step that
// verifies: where a resumed run continues when the coordinator has
// committed step (later checkpoints are ignored). Each corrupt checkpoint is
// reported to warn and skipped in favour of an older one. Without one it
// returns an error wrapping ErrNoCheckpoint.
func LoadAtOrBefore(ctx context.Context, s Store, run string, step int, warn func(error)) (*Checkpoint, map[string][]byte, error) {
	ck, files, err := loadNewest(ctx, s, run, step, warn)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil, nil, fmt.Errorf("%w for run %s at or before step %d in %s", ErrNoCheckpoint, run, step, s)
	}
	return ck, files, err
}

// loadNewest loads the newest verifying checkpoint with a step ≤ maxStep;
// ErrNoCheckpoint when there is none.
func loadNewest(ctx context.Context, s Store, run string, maxStep int, warn func(error)) (*Checkpoint, map[string][]byte, error) {
	cks, err := List(ctx, s, run, warn)
	if err != nil {
		return nil, nil, err
	}
	for i := len(cks) - 1; i >= 0; i-- {
		if cks[i].Step > maxStep {
			continue
		}
		files, err := Load(ctx, s, cks[i])
		if err == nil {
			return &cks[i], files, nil
		}
		if !errors.Is(err, ErrCorrupt) {
			return nil, nil, err
		}
		if warn != nil {
			warn(err)
		}
	}
	return nil, nil, ErrNoCheckpoint
}

// Best returns the checkpoint with the highest metric among runs (ties: the
// later step, then the earlier run in the list). Checkpoints without the
// metric are ignored.
func Best(ctx context.Context, s Store, runs []string, metric string, warn func(error)) (*Checkpoint, error) {
	var best *Checkpoint
	for _, r := range runs {
		cks, err := List(ctx, s, r, warn)
		if err != nil {
			return nil, err
		}
		for i := range cks {
			v, ok := cks[i].Manifest.Metrics[metric]
			if !ok {
				continue
			}
			if best == nil || v > best.Manifest.Metrics[metric] || (v == best.Manifest.Metrics[metric] && cks[i].Run == best.Run && cks[i].Step > best.Step) {
				best = &cks[i]
			}
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w with metric %q among %d runs in %s", ErrNoCheckpoint, metric, len(runs), s)
	}
	return best, nil
}
