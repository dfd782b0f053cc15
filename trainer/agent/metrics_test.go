package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/testpki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/sugarme/gotch"
)

// value is the value of a counter or gauge in m.
func value(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if c := mf.GetMetric()[0].GetCounter(); c != nil {
				return c.GetValue()
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// histCount is the number of observations of a histogram in m.
func histCount(t *testing.T, m *Metrics, name string) uint64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestRunnerMetrics trains a small trial with metrics on, then resumes it
// from a committed checkpoint: every step is counted, every step after the
// first is timed, every committed checkpoint's save is timed, the resumed
// job's load is timed, and the last loss is the result's.
func TestRunnerMetrics(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, weightsPath := writeBase(t, smallConfig())
	spec, err := coordinator.ParseSweepSpec([]byte("name: mx\ntrain:\n  config: "+cfgPath+"\n  weights: "+weightsPath+
		"\n  epochs: 1\n  batch_size: 32\n  max_len: 32\n  checkpoint_every: 3\n"), "mx.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dataSHA, _, _, err := checkpoint.UploadDataset(ctx, store, "../../experiments/data/demo.csv")
	if err != nil {
		t.Fatal(err)
	}
	sw := spec.Sweep(nil, dataSHA, time.Unix(0, 0))
	if _, err := UploadSweepBase(ctx, store, sw.GetTrain()); err != nil {
		t.Fatal(err)
	}
	tr := sw.GetTrials()[0]
	m := NewMetrics()
	r := &JobRunner{Store: store, CacheDir: t.TempDir(), NoTokenCache: true, Device: gotch.CPU, Metrics: m}
	rep := &nopReporter{}
	res, err := r.Run(ctx, &pb.Assignment{Trial: tr, Train: sw.GetTrain(), DatasetSha256: dataSHA, Metric: sw.GetMetric(), Generation: 1, World: 1}, rep)
	if err != nil {
		t.Fatal(err)
	}
	steps := res.GetSteps()
	if steps < 3 {
		t.Fatalf("trained %d steps, want at least 3 for the test to mean anything", steps)
	}
	if got := value(t, m, MetricSteps); got != float64(steps) {
		t.Errorf("%s = %v, want %d", MetricSteps, got, steps)
	}
	// Steps that ran an evaluation are not timed: the checkpoint's history
	// says which (the final evaluation comes after the last step).
	_, files, err := checkpoint.LoadLatest(ctx, store, tr.GetName(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := trainer.StateFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	evals := 0
	for _, e := range st.History {
		if e.Step > 1 && int64(e.Step) < steps {
			evals++
		}
	}
	if got, want := histCount(t, m, MetricStepDuration), uint64(steps-1)-uint64(evals); got != want {
		t.Errorf("%s observed %d steps, want %d (all but the first and the %d with an evaluation)", MetricStepDuration, got, want, evals)
	}
	if got := histCount(t, m, MetricCheckpointSave); got != uint64(rep.checkpoints.Load()) || got < 2 {
		t.Errorf("%s observed %d saves, %d checkpoints reported: want the same, at least 2", MetricCheckpointSave, got, rep.checkpoints.Load())
	}
	if got := histCount(t, m, MetricCheckpointLoad); got != 0 {
		t.Errorf("%s observed %d loads in a fresh run, want 0", MetricCheckpointLoad, got)
	}
	if got := value(t, m, MetricLoss); got != res.GetFinalLoss() || got <= 0 {
		t.Errorf("%s = %v, want the final loss %v", MetricLoss, got, res.GetFinalLoss())
	}
	if got := value(t, m, MetricJobsRunning); got != 0 {
		t.Errorf("%s = %v after the job, want 0", MetricJobsRunning, got)
	}
	if got := histCount(t, m, MetricAllReduceDuration); got != 0 {
		t.Errorf("%s observed %d all-reduces for a trainer alone, want 0", MetricAllReduceDuration, got)
	}

	// A new generation resumes from step 3: one load, timed.
	_, err = r.Run(ctx, &pb.Assignment{Trial: tr, Train: sw.GetTrain(), DatasetSha256: dataSHA, Metric: sw.GetMetric(), Generation: 2, World: 1, CheckpointStep: 3}, rep)
	if err != nil {
		t.Fatal(err)
	}
	if got := histCount(t, m, MetricCheckpointLoad); got != 1 {
		t.Errorf("%s observed %d loads after a resumed run, want 1", MetricCheckpointLoad, got)
	}
}

// fakeReducer takes a while to all-reduce.
type fakeReducer struct{ err error }

func (r fakeReducer) AllReduce(context.Context, uint64, []float32) error {
	time.Sleep(2 * time.Millisecond)
	return r.err
}

// TestObserveWrapsHooks: the job's own hooks still run under the metrics'
// wrappers; failed saves are counted; every all-reduce is timed, failed or
// not, and its error passes through.
func TestObserveWrapsHooks(t *testing.T) {
	m := NewMetrics()
	var progressed, failed int
	boom := errors.New("ring broke")
	job := trainer.Job{Progress: func(trainer.Progress) { progressed++ }, SaveFailed: func(int, error) { failed++ }, Reducer: fakeReducer{boom}}
	done := m.observe(&job, 16)
	if got := value(t, m, MetricJobsRunning); got != 1 {
		t.Fatalf("%s = %v during a job, want 1", MetricJobsRunning, got)
	}
	job.Progress(trainer.Progress{Step: 1, Loss: 2})
	job.Progress(trainer.Progress{Step: 2, Loss: 1.5})
	job.Progress(trainer.Progress{Step: 3, Loss: 1.2, Eval: &metrics.Report{}})
	job.Progress(trainer.Progress{Step: 3, Eval: &metrics.Report{}}) // the final evaluation
	job.SaveFailed(2, errors.New("store down"))
	job.SaveFailed(2, errors.New("store down"))
	if err := job.Reducer.AllReduce(context.Background(), 1, nil); !errors.Is(err, boom) {
		t.Fatalf("AllReduce through the timer: %v, want %v", err, boom)
	}
	if progressed != 4 || failed != 2 {
		t.Errorf("the job's hooks ran %d and %d times, want 4 and 2", progressed, failed)
	}
	if got, n := value(t, m, MetricSteps), histCount(t, m, MetricStepDuration); got != 3 || n != 1 {
		t.Errorf("%s = %v and %d steps timed, want 3 and 1 (not the first, not the one with an evaluation)", MetricSteps, got, n)
	}
	if got := value(t, m, MetricLoss); got != 1.2 {
		t.Errorf("%s = %v, want 1.2 (the last step's, not the final evaluation's 0)", MetricLoss, got)
	}
	if got := value(t, m, MetricCheckpointFailures); got != 2 {
		t.Errorf("%s = %v, want 2", MetricCheckpointFailures, got)
	}
	if got := histCount(t, m, MetricAllReduceDuration); got != 1 {
		t.Errorf("%s observed %d, want 1", MetricAllReduceDuration, got)
	}
	if got := value(t, m, MetricSamplesPerSecond); got <= 0 {
		t.Errorf("%s = %v after a timed step, want > 0", MetricSamplesPerSecond, got)
	}
	done()
	if got, s := value(t, m, MetricJobsRunning), value(t, m, MetricSamplesPerSecond); got != 0 || s != 0 {
		t.Errorf("after the job %s = %v and %s = %v, want 0 and 0", MetricJobsRunning, got, MetricSamplesPerSecond, s)
	}
	var nilMetrics *Metrics
	plain := trainer.Job{}
	nilMetrics.observe(&plain, 1)()
	if plain.Progress != nil || plain.SaveTook != nil {
		t.Error("a nil *Metrics hooked into the job")
	}
}

// TestServeMetrics serves a trainer's /metrics over plain HTTP to anyone,
// and over HTTPS to the read roles' client certificates only.
func TestServeMetrics(t *testing.T) {
	m := NewMetrics()
	fetch := func(client *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	plain, err := ServeMetrics("127.0.0.1:0", m.Gatherer(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	code, body := fetch(&http.Client{Timeout: 10 * time.Second}, "http://"+plain.Addr()+"/metrics")
	for _, want := range []string{MetricStepDuration + "_bucket", MetricCheckpointFailures, "process_resident_memory_bytes", "go_goroutines"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("plain GET /metrics: %d, body lacks %s", code, want)
		}
	}
	if err := plain.Close(); err != nil {
		t.Errorf("closing: %v", err)
	}

	ca := testpki.New(t)
	srv, err := ServeMetrics("127.0.0.1:0", m.Gatherer(), ca.ServerConfig(ca.IssueAs(t, pki.RoleTrainer, "t1")), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		code  int
	}{
		{"viewer", []tls.Certificate{ca.IssueAs(t, pki.RoleViewer, "prometheus")}, http.StatusOK},
		{"no certificate", nil, http.StatusUnauthorized},
		{"another trainer", []tls.Certificate{ca.IssueAs(t, pki.RoleTrainer, "t2")}, http.StatusForbidden},
	} {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: tc.certs, MinVersion: tls.VersionTLS13}}}
		if code, body := fetch(client, "https://"+srv.Addr()+"/metrics"); code != tc.code {
			t.Errorf("HTTPS GET /metrics as %s: %d %.100s, want %d", tc.name, code, body, tc.code)
		}
	}
}
