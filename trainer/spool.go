package trainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/loraft/loraft/internal/atomicfile"
)

// DefaultPendingBytes bounds the bytes of the checkpoints waiting for the
// store at once when Job.PendingBytes is zero.
const DefaultPendingBytes = 1 << 30

// spoolMetaFile describes a spooled checkpoint; checkpoint object names
// never start with a dot, so it cannot collide with one.
const spoolMetaFile = ".spool.json"

// spool is a local directory of one run's checkpoints waiting for the store,
// <root>/<run>/<step>/, so that a checkpoint survives the trainer's restart
// while the store is down, and waiting checkpoints do not sit in memory.
// A step directory appears whole or not at all: it is written under a
// temporary name and renamed. Directories are 0700 and files 0600: a
// checkpoint is the user's model.
type spool struct {
	dir string // <root>/<run>
}

// spoolMeta is a spooled checkpoint's description (spoolMetaFile).
type spoolMeta struct {
	Run        string             `json:"run"`
	Step       int                `json:"step"`
	Generation uint64             `json:"generation"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	At         time.Time          `json:"at"`
	Files      []string           `json:"files"`
}

// openSpool creates root/run (0700) when missing.
func openSpool(root, run string) (*spool, error) {
	dir := filepath.Join(root, run)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint spool %s: %w", dir, err)
	}
	return &spool{dir: dir}, nil
}

func (s *spool) stepDir(step int) string { return filepath.Join(s.dir, strconv.Itoa(step)) }

// put writes p's files and description to the spool under generation; an
// earlier entry of the same step is replaced.
func (s *spool) put(p *pendingSave, generation uint64, run string) (err error) {
	meta := spoolMeta{Run: run, Step: p.step, Generation: generation, Metrics: p.metrics, At: p.at}
	for name := range p.files {
		if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`) {
			return fmt.Errorf("spooling checkpoint %s step %d: object name %q cannot be a spool file", run, p.step, name)
		}
		meta.Files = append(meta.Files, name)
	}
	slices.Sort(meta.Files)
	tmp, err := os.MkdirTemp(s.dir, fmt.Sprintf(".tmp-%d-", p.step))
	if err != nil {
		return fmt.Errorf("spooling checkpoint %s step %d: %w", run, p.step, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
			err = fmt.Errorf("spooling checkpoint %s step %d in %s: %w", run, p.step, s.dir, err)
		}
	}()
	for name, b := range p.files {
		if err := writeSynced(filepath.Join(tmp, name), b); err != nil {
			return err
		}
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(tmp, spoolMetaFile), mb); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	final := s.stepDir(p.step)
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// writeSynced creates path (0600) with b and fsyncs it.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// load reads a spooled checkpoint's files back.
func (s *spool) load(step int) (map[string][]byte, *spoolMeta, error) {
	dir := s.stepDir(step)
	mb, err := os.ReadFile(filepath.Join(dir, spoolMetaFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading spooled checkpoint %s: %w", dir, err)
	}
	var meta spoolMeta
	if err := json.Unmarshal(mb, &meta); err != nil {
		return nil, nil, fmt.Errorf("reading spooled checkpoint %s: %s: %w", dir, spoolMetaFile, err)
	}
	if meta.Step != step || len(meta.Files) == 0 {
		return nil, nil, fmt.Errorf("reading spooled checkpoint %s: %s names step %d and %d files", dir, spoolMetaFile, meta.Step, len(meta.Files))
	}
	files := make(map[string][]byte, len(meta.Files))
	for _, name := range meta.Files {
		if strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`) {
			return nil, nil, fmt.Errorf("reading spooled checkpoint %s: %s lists file %q", dir, spoolMetaFile, name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, nil, fmt.Errorf("reading spooled checkpoint %s: %w", dir, err)
		}
		files[name] = b
	}
	return files, &meta, nil
}

// remove deletes a step's entry (missing is fine).
func (s *spool) remove(step int) error {
	if err := os.RemoveAll(s.stepDir(step)); err != nil {
		return fmt.Errorf("removing spooled checkpoint: %w", err)
	}
	return nil
}

// entries lists the spooled steps in ascending order with their
// descriptions. Leftover temporary directories (a write cut short) and
// entries that cannot be read are removed, each reported to bad.
func (s *spool) entries(bad func(error)) []spoolMeta {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		bad(fmt.Errorf("listing checkpoint spool %s: %w", s.dir, err))
		return nil
	}
	var out []spoolMeta
	for _, de := range des {
		name := de.Name()
		step, err := strconv.Atoi(name)
		if err != nil || step < 0 || strconv.Itoa(step) != name || !de.IsDir() {
			if strings.HasPrefix(name, ".tmp-") {
				_ = os.RemoveAll(filepath.Join(s.dir, name)) // a write cut short
				continue
			}
			bad(fmt.Errorf("checkpoint spool %s: unexpected entry %q left alone", s.dir, name))
			continue
		}
		_, meta, err := s.load(step)
		if err != nil {
			bad(errors.Join(err, s.remove(step)))
			continue
		}
		out = append(out, *meta)
	}
	slices.SortFunc(out, func(a, b spoolMeta) int { return a.Step - b.Step })
	return out
}

// close removes the run's directory when it is empty.
func (s *spool) close() { _ = os.Remove(s.dir) }
