package trainer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
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
	s := newSaver(context.Background(), "test store", 3, time.Minute, 0, "", commit, fail, func(error) {})
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
	s := newSaver(context.Background(), "test store", 3, time.Minute, 0, "macro_f1", commit, fail, func(error) {})
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
// are retried and written, in order, every checkpoint is reported once it
// is stored, and the final adapter is bit-identical to an undisturbed
// run's.
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
		})
	}
}

// TestSaverGivesUp: a store that keeps failing makes the saver give up
// after its outage bound, stop the job with the cause, and name the last
// committed step and the checkpoints left unwritten.
func TestSaverGivesUp(t *testing.T) {
	var stopped error
	stop := func(err error) { stopped = err }
	commit := func(context.Context, *pendingSave) error { return errors.New("connection refused") }
	s := newSaver(context.Background(), "s3://b at http://h:9000", 1, 300*time.Millisecond, 4, "", commit, func(int, error) {}, stop)
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
