package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/status"
)

// metricValue returns the value of the series name{labels} (a counter's,
// a gauge's, or a histogram's sample count) from g, and whether it exists.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if labelValue(m, k) != v {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sumOver adds a series over every running member.
func sumOver(t *testing.T, c *coordinatortest.Cluster, name string, labels map[string]string) float64 {
	var s float64
	for _, m := range c.Members {
		if m != nil {
			v, _ := metricValue(t, m.Metrics(), name, labels)
			s += v
		}
	}
	return s
}

// TestCoordinatorMetrics runs a 3-node group with a trainer that is placed
// and then goes silent, and checks every coordinator series against what
// happened: one leader, the same term and indexes on every member, trials
// by state, heartbeats, one assignment's scheduling latency, one lease
// expiry, FSM applies, leader changes, and RPCs by method and code
// (a follower's refusal included).
func TestCoordinatorMetrics(t *testing.T) {
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.Scheduler = coordinator.SchedulerConfig{Lease: time.Second, Tick: 10 * time.Millisecond}
	}})
	c.WaitForLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := c.Client()
	if err := cl.LaunchSweep(ctx, testSweep("m", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "a", Address: "a:7500"}}); err != nil {
		t.Fatal(err)
	}
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "a"})
		if err != nil {
			return err
		}
		if resp.GetAssignment() == nil {
			return errors.New("trainer a has no assignment yet")
		}
		return nil
	})
	trials := func(state string) map[string]string { return map[string]string{"state": state} }

	// Every member applies the same entries: the same trial counts, term and
	// indexes, once it has caught up.
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		var terms, applied []float64
		for _, m := range c.Members {
			g := m.Metrics()
			for _, want := range []struct {
				name   string
				labels map[string]string
				v      float64
			}{
				{coordinator.MetricTrials, trials("running"), 1},
				{coordinator.MetricTrials, trials("pending"), 2},
				{coordinator.MetricTrials, trials("succeeded"), 0},
				{coordinator.MetricSweeps, nil, 1},
				{coordinator.MetricTrainers, nil, 1},
			} {
				if v, ok := metricValue(t, g, want.name, want.labels); !ok || v != want.v {
					return fmt.Errorf("%s: %s%v = %v (present %v), want %v", m.ID(), want.name, want.labels, v, ok, want.v)
				}
			}
			term, _ := metricValue(t, g, coordinator.MetricRaftTerm, nil)
			commit, _ := metricValue(t, g, coordinator.MetricRaftCommitIndex, nil)
			app, _ := metricValue(t, g, coordinator.MetricRaftAppliedIndex, nil)
			if app == 0 || app != commit {
				return fmt.Errorf("%s: applied index %v, commit index %v: want equal and positive", m.ID(), app, commit)
			}
			if n, _ := metricValue(t, g, coordinator.MetricFSMApply, nil); n == 0 {
				return fmt.Errorf("%s: no FSM apply observed", m.ID())
			}
			terms, applied = append(terms, term), append(applied, app)
		}
		if terms[0] == 0 || terms[0] != terms[1] || terms[1] != terms[2] || applied[0] != applied[1] || applied[1] != applied[2] {
			return fmt.Errorf("terms %v, applied indexes %v: want the same on every member", terms, applied)
		}
		return nil
	})

	leaders := sumOver(t, c, coordinator.MetricRaftState, map[string]string{"state": "leader"})
	followers := sumOver(t, c, coordinator.MetricRaftState, map[string]string{"state": "follower"})
	if leaders != 1 || followers != 2 {
		t.Errorf("%s: %v leaders and %v followers, want 1 and 2", coordinator.MetricRaftState, leaders, followers)
	}
	for i, m := range c.Members {
		if v, ok := metricValue(t, m.Metrics(), coordinator.MetricRaftLastContact, nil); !ok || v < 0 || v > 30 {
			t.Errorf("member %d: %s = %v (present %v), want a few seconds at most", i, coordinator.MetricRaftLastContact, v, ok)
		}
		if v, _ := metricValue(t, m.Metrics(), coordinator.MetricRaftLeaderChanges, nil); v < 1 {
			t.Errorf("member %d: %s = %v, want ≥ 1 (the first election)", i, coordinator.MetricRaftLeaderChanges, v)
		}
	}
	// Counted once, by the leader that applied the assignment.
	if n := sumOver(t, c, coordinator.MetricSchedulingLatency, nil); n != 1 {
		t.Errorf("%s observed %v times over the group, want 1 (one assignment)", coordinator.MetricSchedulingLatency, n)
	}
	if n := sumOver(t, c, coordinator.MetricHeartbeats, nil); n < 1 {
		t.Errorf("%s = %v over the group, want ≥ 1", coordinator.MetricHeartbeats, n)
	}
	hb := map[string]string{"method": pb.Coordinator_Heartbeat_FullMethodName, "code": "OK"}
	if ok, n := sumOver(t, c, coordinator.MetricGRPCHandled, hb), sumOver(t, c, coordinator.MetricHeartbeats, nil); ok != n {
		t.Errorf("%s%v = %v, but %s = %v: every answered heartbeat is both", coordinator.MetricGRPCHandled, hb, ok, coordinator.MetricHeartbeats, n)
	}

	// A follower refuses a heartbeat: counted by method and code there.
	leader := c.WaitForLeader(10 * time.Second)
	follower := (leader + 1) % 3
	_, err := dial(t, c.APIAddrs[follower]).Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "a"})
	if err == nil {
		t.Fatal("heartbeat on a follower answered, want a refusal naming the leader")
	}
	refused := map[string]string{"method": pb.Coordinator_Heartbeat_FullMethodName, "code": status.Code(err).String()}
	if v, _ := metricValue(t, c.Members[follower].Metrics(), coordinator.MetricGRPCHandled, refused); v < 1 {
		t.Errorf("follower: %s%v = %v, want ≥ 1", coordinator.MetricGRPCHandled, refused, v)
	}
	if v, _ := metricValue(t, c.Members[follower].Metrics(), coordinator.MetricGRPCHandlingTime, map[string]string{"method": pb.Coordinator_Heartbeat_FullMethodName}); v < 1 {
		t.Errorf("follower: no %s observation for Heartbeat", coordinator.MetricGRPCHandlingTime)
	}

	// Trainer a stays silent: its lease expires once and its trial goes back
	// to the queue (and stays there: no live trainer is left).
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		if n := sumOver(t, c, coordinator.MetricLeaseExpiries, nil); n != 1 {
			return fmt.Errorf("%s = %v over the group, want 1", coordinator.MetricLeaseExpiries, n)
		}
		if v, _ := metricValue(t, c.Members[leader].Metrics(), coordinator.MetricTrials, trials("pending")); v != 3 {
			return fmt.Errorf("leader: %v pending trials, want 3", v)
		}
		return nil
	})
}

// TestMetricsScrapeManyTrials scrapes /metrics over HTTP from a coordinator
// holding 10,000 trials: the answer is complete and the series count does
// not grow with the trials (no per-trial labels). It logs the scrape time.
func TestMetricsScrapeManyTrials(t *testing.T) {
	c := coordinatortest.NewCluster(t, 1, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
	}})
	c.WaitForLeader(10 * time.Second)
	url := c.Members[0].HTTPURL() + "metrics"
	client := &http.Client{Timeout: 30 * time.Second}
	scrape := func() (string, time.Duration) {
		start := time.Now()
		code, body := get(t, client, url)
		if code != http.StatusOK {
			t.Fatalf("GET /metrics: %d %.200s", code, body)
		}
		return body, time.Since(start)
	}
	var before string
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Ten sweeps of 1,000: one sweep of 10,000 takes longer to validate
	// under the race detector than a client's attempt deadline.
	const n, per = 10000, 1000
	for s := range n / per {
		sw := &pb.Sweep{Name: fmt.Sprintf("big%d", s), DatasetSha256: "abc"}
		for i := range per {
			sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("big%d-t%05d", s, i), Index: int32(i), Rank: 8, Alpha: 16})
		}
		start := time.Now()
		if err := c.Client().LaunchSweep(ctx, sw); err != nil {
			t.Fatal(err)
		}
		t.Logf("launched %s in %v", sw.GetName(), time.Since(start))
		if s == 0 {
			before, _ = scrape() // every series the later sweeps could add is there
		}
	}
	after, _ := scrape()
	if !strings.Contains(after, coordinator.MetricTrials+`{state="pending"} 10000`) {
		t.Fatalf("/metrics with %d pending trials lacks %s{state=\"pending\"} %d", n, coordinator.MetricTrials, n)
	}
	if a, b := seriesNames(after), seriesNames(before); len(a) != len(b) {
		t.Errorf("%d series with %d trials, %d with %d: want the same", len(a), n, len(b), per)
	}
	var times []time.Duration
	for range 20 {
		_, d := scrape()
		times = append(times, d)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("GET /metrics with %d trials in the FSM: median %v, max %v over %d scrapes (%d bytes)", n, times[len(times)/2], times[len(times)-1], len(times), len(after))
}

// seriesNames lists the loraft_ sample lines' names and labels of a
// text exposition.
func seriesNames(body string) []string {
	var out []string
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "loraft_") {
			name, _, _ := strings.Cut(line, " ")
			out = append(out, name)
		}
	}
	return out
}
