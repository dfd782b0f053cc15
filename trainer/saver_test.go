package trainer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/miniotest"
)

// TestSaverOrderAndDrop holds the first write until more checkpoints than
// fit have queued: the oldest waiting one (not the one being written) is
// dropped and reported, and the rest are committed in step order.
func TestSaverOrderAndDrop(t *testing.T) {
	gate := make(chan struct{})
	writing := make(chan int, 10)
	var mu sync.Mutex
	var committed, failed []int
	var dropErr error
	commit := func(ctx context.Context, p *pendingSave) error {
		writing <- p.step
		if p.step == 1 {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		committed = append(committed, p.step)
		mu.Unlock()
		return nil
	}
	fail := func(step int, err error) {
		mu.Lock()
		failed, dropErr = append(failed, step), err
		mu.Unlock()
	}
	s := newSaver(context.Background(), saverConfig{store: "test store", max: 3, outage: time.Minute, commit: commit, failed: fail, stop: func(error) {}})
	if err := s.add(&pendingSave{step: 1}); err != nil {
		t.Fatal(err)
	}
	if got := <-writing; got != 1 {
		t.Fatalf("writing step %d first, want 1", got)
	}
	for step := 2; step <= 4; step++ { // queue: 1 (writing), 2, 3, 4 → 2 dropped
		if err := s.add(&pendingSave{step: step}); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(committed, []int{1, 3, 4}) || !slices.Equal(failed, []int{2}) || !errors.Is(dropErr, ErrCheckpointDropped) {
		t.Fatalf("committed %v, failed %v (%v); want 1 3 4 committed and 2 dropped", committed, failed, dropErr)
	}
}

// TestSaverKeepsTheBest: while the store is down, the waiting checkpoint
// with the best selection metric is never dropped as superseded (its loss
// would change which checkpoint the sweep calls best); an older, worse one
// is dropped instead.
func TestSaverKeepsTheBest(t *testing.T) {
	gate := make(chan struct{})
	writing := make(chan int, 8)
	var mu sync.Mutex
	var committed, failed []int
	commit := func(ctx context.Context, p *pendingSave) error {
		writing <- p.step
		if p.step == 1 {
			<-gate
		}
		mu.Lock()
		committed = append(committed, p.step)
		mu.Unlock()
		return nil
	}
	fail := func(step int, err error) { mu.Lock(); failed = append(failed, step); mu.Unlock() }
	s := newSaver(context.Background(), saverConfig{store: "test store", max: 3, outage: time.Minute, metric: "macro_f1", commit: commit, failed: fail, stop: func(error) {}})
	if err := s.add(&pendingSave{step: 1}); err != nil {
		t.Fatal(err)
	}
	<-writing
	for _, p := range []*pendingSave{{step: 2, metrics: map[string]float64{"macro_f1": 0.9}}, {step: 3, metrics: map[string]float64{"macro_f1": 0.5}},
		{step: 4, metrics: map[string]float64{"macro_f1": 0.3}}} {
		if err := s.add(p); err != nil { // queue: 1 (writing), 2 (best), 3, 4 → 3 dropped
			t.Fatal(err)
		}
	}
	close(gate)
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(committed, []int{1, 2, 4}) || !slices.Equal(failed, []int{3}) {
		t.Fatalf("committed %v, dropped %v; want 1 2 4 committed and 3 dropped", committed, failed)
	}
}

// TestRunJobStoreUnreachable runs a job whose store refuses every
// checkpoint: it does not report success, and after StoreOutage it fails
// with ErrStoreUnreachable naming the last committed step; no checkpoint
// is ever reported as saved.
func TestRunJobStoreUnreachable(t *testing.T) {
	d := demoData(t, "../experiments/data/demo.csv", 16)
	dir, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs := &failingStore{Store: dir, prefix: checkpoint.RunPrefix("r")}
	fs.failures.Store(1 << 40)
	var rec jobRecord
	j := tinyJob(d, fs, &rec)
	j.StoreOutage = 2 * time.Second
	m, _, _, err := RunJob(context.Background(), j)
	if err == nil {
		m.Drop()
		t.Fatal("the job succeeded without writing a checkpoint")
	}
	if !errors.Is(err, ErrStoreUnreachable) || !strings.Contains(err.Error(), "last committed step none") ||
		!strings.Contains(err.Error(), "store unreachable for 2s") {
		t.Fatalf("error %v, want store unreachable for 2s with no committed step", err)
	}
	if len(rec.saved) != 0 || len(rec.saveFailed) == 0 {
		t.Fatalf("saved %v, failed %v; want none saved and failures reported", rec.saved, rec.saveFailed)
	}
}

// outageStore is the real S3 store with a hook: the killAt-th Put calls
// kill first, which takes the MinIO server down in the middle of a save.
type outageStore struct {
	checkpoint.Store
	puts   atomic.Int64
	killAt int64
	kill   func()
}

func (o *outageStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if o.puts.Add(1) == o.killAt {
		o.kill()
	}
	return o.Store.Put(ctx, key, r, size)
}

// TestRunJobSurvivesStoreOutage takes MinIO down during the first
// checkpoint's save (killed, or paused with SIGSTOP) and brings it back
// (restarted on the same data directory and port, or resumed) only after
// training has passed the second checkpoint: both checkpoints due during the outage
// wait in the spool directory (0700 directories, 0600 files), are retried
// and written, in order, with the spooled bytes; every checkpoint is
// reported once it is stored, the spool is empty afterwards, and the final
// adapter is bit-identical to an undisturbed run's.
func TestRunJobSurvivesStoreOutage(t *testing.T) {
	ctx := context.Background()
	d := demoData(t, "../experiments/data/demo.csv", 16)
	ref, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var refRec jobRecord
	m, _, _, err := RunJob(ctx, tinyJob(d, ref, &refRec))
	if err != nil {
		t.Fatal(err)
	}
	want := paramBits(t, m)
	m.Drop()

	cases := []struct {
		name     string
		down, up func(*miniotest.Server) error
	}{
		{"killed then restarted on its port and data", (*miniotest.Server).Kill, (*miniotest.Server).Restart},
		// SIGSTOP: the server keeps its sockets and never answers, the
		// gray failure that used to hang trainers.
		{"paused then resumed",
			func(s *miniotest.Server) error { return syscall.Kill(s.PID(), syscall.SIGSTOP) },
			func(s *miniotest.Server) error { return syscall.Kill(s.PID(), syscall.SIGCONT) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := miniotest.Start(t)
			s3, err := checkpoint.NewS3Store(context.Background(), checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: "outage",
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Timeout: 2 * time.Second, CallTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			killed := make(chan struct{})
			// Each save writes 4 objects then the manifest: Put 2 is inside step 2's save.
			store := &outageStore{Store: s3, killAt: 2, kill: func() {
				if err := c.down(srv); err != nil {
					t.Error(err)
				}
				close(killed)
			}}
			var rec jobRecord
			j := tinyJob(d, store, &rec)
			j.SpoolDir = filepath.Join(t.TempDir(), "spool")
			var spooled map[int]map[string][]byte // what the spool held during the outage
			progress := j.Progress
			firstFailure := make(chan struct{})
			j.SaveFailed = func(step int, _ error) {
				if len(rec.saveFailed) == 0 {
					close(firstFailure)
				}
				rec.saveFailed = append(rec.saveFailed, step)
			}
			restarted := false
			j.Progress = func(p Progress) {
				progress(p)
				// Step 5 comes after checkpoint 4 was taken and before 6: bring
				// the store back once a write has failed.
				if p.Step == 5 && !restarted {
					restarted = true
					select {
					case <-killed:
					default:
						t.Error("the store was not killed before step 5")
					}
					select {
					case <-firstFailure:
					case <-time.After(time.Minute):
						t.Error("no checkpoint write failed within a minute of the store going down")
					}
					spooled = readSpool(t, filepath.Join(j.SpoolDir, "r"))
					if err := c.up(srv); err != nil {
						t.Errorf("bringing minio back: %v", err)
					}
				}
			}
			m, _, _, err = RunJob(ctx, j)
			if err != nil {
				t.Fatalf("job with a store outage: %v", err)
			}
			got := paramBits(t, m)
			m.Drop()
			if !restarted || len(rec.saveFailed) == 0 || rec.saveFailed[0] != 2 {
				t.Fatalf("restarted %v, failed writes %v; want step 2's write to fail during the outage", restarted, rec.saveFailed)
			}
			wantSteps := []int{2, 4, 6, 7}
			if !slices.Equal(rec.saved, wantSteps) || !slices.Equal(listSteps(t, s3), wantSteps) {
				t.Fatalf("Saved reported %v, the store lists %v; want %v", rec.saved, listSteps(t, s3), wantSteps)
			}
			for n, w := range want {
				if !slices.Equal(got[n], w) {
					t.Errorf("tensor %s differs from the undisturbed run's", n)
				}
			}
			// Every stored checkpoint's tensors equal the undisturbed run's, byte for byte.
			for _, step := range wantSteps {
				key := checkpoint.Prefix("r", step) + paramsFile
				a, err := checkpoint.GetBytes(ctx, ref, key)
				if err != nil {
					t.Fatal(err)
				}
				b, err := checkpoint.GetBytes(ctx, s3, key)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) {
					t.Errorf("checkpoint %d: %s differs from the undisturbed run's", step, paramsFile)
				}
			}
			if ck, _, err := checkpoint.LoadLatest(ctx, s3, "r", nil); err != nil || ck.Step != 7 {
				t.Fatalf("LoadLatest = %v, %v; want step 7", ck, err)
			}
			// The checkpoints due during the outage waited on disk, and
			// what reached the store is what was spooled.
			if got := slices.Sorted(maps.Keys(spooled)); !slices.Equal(got, []int{2, 4}) {
				t.Fatalf("the spool held steps %v during the outage, want [2 4]", got)
			}
			for step, files := range spooled {
				for name, b := range files {
					stored, err := checkpoint.GetBytes(ctx, s3, checkpoint.Prefix("r", step)+name)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(stored, b) {
						t.Errorf("step %d: stored %s differs from the spooled one", step, name)
					}
				}
			}
			if _, err := os.Stat(filepath.Join(j.SpoolDir, "r")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("spool of run r still there after every checkpoint was committed (stat: %v)", err)
			}
		})
	}
}

// readSpool reads a run's spool: step → object name → bytes, checking
// that directories are 0700 and files 0600 and that no temporary
// directory is left.
func readSpool(t *testing.T, dir string) map[int]map[string][]byte {
	t.Helper()
	out := map[int]map[string][]byte{}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		step, err := strconv.Atoi(de.Name())
		if err != nil || !de.IsDir() {
			t.Errorf("unexpected spool entry %s", de.Name())
			continue
		}
		sd := filepath.Join(dir, de.Name())
		if fi, err := os.Stat(sd); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("spool directory %s: %v, mode %v; want 0700", sd, err, fi.Mode().Perm())
		}
		files, err := os.ReadDir(sd)
		if err != nil {
			t.Fatal(err)
		}
		out[step] = map[string][]byte{}
		for _, f := range files {
			p := filepath.Join(sd, f.Name())
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("spool file %s: %v, mode %v; want 0600", p, err, fi.Mode().Perm())
			}
			if f.Name() == spoolMetaFile {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[step][f.Name()] = b
		}
		if len(out[step]) != 4 {
			t.Errorf("spooled step %d holds %d objects, want 4", step, len(out[step]))
		}
	}
	return out
}

// TestRunJobRecoversSpool: a trainer killed while the store refused its
// checkpoints (cancelled, with steps 2 and 4 spooled) restarts on the same
// run. Under the same generation the spooled checkpoints are written to
// MinIO first, byte for byte, and the job resumes from the newest of them
// (step 5 is its first step) and ends with the undisturbed run's adapter.
// Under a newer generation they are a stale assignment's: discarded, never
// stored or reported, and the job trains from step 1.
func TestRunJobRecoversSpool(t *testing.T) {
	ctx := context.Background()
	d := demoData(t, "../experiments/data/demo.csv", 16)
	ref, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var refRec jobRecord
	m, _, _, err := RunJob(ctx, tinyJob(d, ref, &refRec))
	if err != nil {
		t.Fatal(err)
	}
	want := paramBits(t, m)
	m.Drop()
	srv := miniotest.Start(t)

	cases := []struct {
		name       string
		generation uint64
		// firstStep is the restarted job's first trained step; saved what it reports.
		firstStep int
		saved     []int
		discarded bool
	}{
		{"same generation: written, resumed from", 5, 5, []int{2, 4, 6, 7}, false},
		{"newer generation: discarded", 6, 1, []int{2, 4, 6, 7}, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spoolDir := filepath.Join(t.TempDir(), "spool")
			// The first process: every write fails; it is killed after step 4's checkpoint.
			down, err := checkpoint.NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			refusing := &failingStore{Store: down, prefix: checkpoint.RunPrefix("r")}
			refusing.failures.Store(1 << 40)
			var rec1 jobRecord
			j1 := tinyJob(d, refusing, &rec1)
			j1.SpoolDir, j1.Generation = spoolDir, 5
			kctx, kill := context.WithCancel(ctx)
			defer kill()
			progress := j1.Progress
			j1.Progress = func(p Progress) {
				progress(p)
				if p.Step == 5 {
					kill()
				}
			}
			if m, _, _, err := RunJob(kctx, j1); err == nil {
				m.Drop()
				t.Fatal("the killed job succeeded")
			}
			spooled := readSpool(t, filepath.Join(spoolDir, "r"))
			if got := slices.Sorted(maps.Keys(spooled)); !slices.Equal(got, []int{2, 4}) || len(rec1.saved) != 0 {
				t.Fatalf("after the kill the spool holds steps %v and %v were reported saved; want [2 4] and none", got, rec1.saved)
			}

			s3, err := checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: srv.Endpoint, Bucket: fmt.Sprintf("recover%d", i),
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Timeout: 2 * time.Second, CallTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var rec jobRecord
			j := tinyJob(d, s3, &rec)
			j.SpoolDir, j.Generation = spoolDir, c.generation
			m, _, _, err := RunJob(ctx, j)
			if err != nil {
				t.Fatalf("restarted job: %v", err)
			}
			got := paramBits(t, m)
			m.Drop()
			if rec.firstStep != c.firstStep || !slices.Equal(rec.saved, c.saved) {
				t.Fatalf("restarted job: first step %d, saved %v; want %d and %v (warnings %q)", rec.firstStep, rec.saved, c.firstStep, c.saved, rec.warnings)
			}
			discarded := slices.ContainsFunc(rec.warnings, func(w string) bool {
				return strings.Contains(w, "discarding spooled checkpoint r step 2 of generation 5")
			})
			if discarded != c.discarded {
				t.Errorf("discarded the stale spool: %v, want %v (warnings %q)", discarded, c.discarded, rec.warnings)
			}
			for n, w := range want {
				if !slices.Equal(got[n], w) {
					t.Errorf("tensor %s differs from the undisturbed run's", n)
				}
			}
			for _, step := range []int{2, 4} {
				_, files, err := checkpoint.LoadAtOrBefore(ctx, s3, "r", step, nil)
				if err != nil {
					t.Fatal(err)
				}
				st, _, err := StateFromFiles(files)
				if err != nil {
					t.Fatal(err)
				}
				if st.Generation != c.generation {
					t.Errorf("stored step %d was written under generation %d, want %d", step, st.Generation, c.generation)
				}
				if !c.discarded && !bytes.Equal(files[paramsFile], spooled[step][paramsFile]) {
					t.Errorf("stored step %d: %s differs from the spooled one", step, paramsFile)
				}
			}
			if _, err := os.Stat(filepath.Join(spoolDir, "r")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("spool of run r still there after the job (stat: %v)", err)
			}
		})
	}
}

// TestSaverByteCap: beyond its byte bound the saver drops the oldest
// waiting checkpoint, as beyond its count bound, but never the newest.
func TestSaverByteCap(t *testing.T) {
	gate := make(chan struct{})
	writing := make(chan int, 8)
	var mu sync.Mutex
	var committed, dropped []int
	commit := func(ctx context.Context, p *pendingSave) error {
		writing <- p.step
		if p.step == 1 {
			<-gate
		}
		mu.Lock()
		committed = append(committed, p.step)
		mu.Unlock()
		return nil
	}
	fail := func(step int, _ error) { mu.Lock(); dropped = append(dropped, step); mu.Unlock() }
	s := newSaver(context.Background(), saverConfig{store: "test store", max: 10, maxBytes: 250, outage: time.Minute,
		commit: commit, failed: fail, stop: func(error) {}})
	ck := func(step, size int) *pendingSave {
		return &pendingSave{step: step, files: map[string][]byte{"adapter.safetensors": make([]byte, size)}}
	}
	if err := s.add(ck(1, 100)); err != nil {
		t.Fatal(err)
	}
	<-writing
	// 1 (writing) + 2 + 3 = 300 > 250: 2 goes; then + 4 = 300 again: 3 goes;
	// then a 400-byte 5 alone exceeds the bound, yet is kept (the newest), and 4 goes.
	for _, p := range []*pendingSave{ck(2, 100), ck(3, 100), ck(4, 100), ck(5, 400)} {
		if err := s.add(p); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(committed, []int{1, 5}) || !slices.Equal(dropped, []int{2, 3, 4}) {
		t.Fatalf("committed %v, dropped %v; want 1 5 committed and 2 3 4 dropped", committed, dropped)
	}
}

// TestSaverGivesUp: a store that keeps failing makes the saver give up
// after its outage bound, stop the job with the cause, and name the last
// committed step and the checkpoints left unwritten.
func TestSaverGivesUp(t *testing.T) {
	var stopped error
	stop := func(err error) { stopped = err }
	commit := func(context.Context, *pendingSave) error { return errors.New("connection refused") }
	s := newSaver(context.Background(), saverConfig{store: "s3://b at http://h:9000", max: 1, outage: 300 * time.Millisecond, committed: 4,
		commit: commit, failed: func(int, error) {}, stop: stop})
	for _, step := range []int{6, 8} {
		if err := s.add(&pendingSave{step: step}); err != nil {
			t.Fatal(err)
		}
	}
	err := s.wait()
	if !errors.Is(err, ErrStoreUnreachable) || stopped != err {
		t.Fatalf("wait = %v, stop got %v; want ErrStoreUnreachable for both", err, stopped)
	}
	for _, want := range []string{"store unreachable for 300ms (s3://b at http://h:9000)", "last committed step 4", "steps [6 8] not written", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := s.add(&pendingSave{step: 10}); !errors.Is(err, ErrStoreUnreachable) {
		t.Errorf("add after giving up = %v, want ErrStoreUnreachable", err)
	}
}
