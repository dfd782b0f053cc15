package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/trainer/agent"
	"go.yaml.in/yaml/v3"
)

// cluster is a 3-coordinator group with HTTP listeners and one trainer's
// metrics server, as the scrape targets of a real deployment.
type cluster struct {
	coordinators []string // host:port of each coordinator's HTTP listener
	trainer      string   // host:port of the trainer's /metrics
}

func startCluster(t *testing.T) cluster {
	t.Helper()
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Configure: func(_ int, cfg *coordinator.Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
	}})
	c.WaitForLeader(20 * time.Second)
	// One answered RPC, so that the per-method RPC series exist.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Client().State(ctx); err != nil {
		t.Fatal(err)
	}
	var out cluster
	for _, m := range c.Members {
		out.coordinators = append(out.coordinators, m.HTTPAddr())
	}
	ms, err := agent.ServeMetrics("127.0.0.1:0", agent.NewMetrics().Gatherer(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	out.trainer = ms.Addr()
	return out
}

// scrapeNames returns the metric family names of a /metrics answer.
func scrapeNames(t *testing.T, addr string) []string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %s %v", addr, resp.Status, err)
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(name)[0])
		}
	}
	return names
}

// seriesName matches the metric names in a PromQL expression.
var seriesName = regexp.MustCompile(`\b((?:loraft|process|go)_[a-z0-9_]+)`)

// TestGrafanaDashboardQueriesExportedSeries: deploy/grafana/loraft.json is
// valid JSON, every panel has a query, and every series a query names is
// one a real coordinator or trainer exports; the dashboard's job names are
// the scrape configuration's, and every coordinator and trainer series of
// the issue is on some panel.
func TestGrafanaDashboardQueriesExportedSeries(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana/loraft.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name, Query string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/loraft.json: %v", err)
	}
	cl := startCluster(t)
	exported := map[string]bool{}
	for _, addr := range append(slices.Clone(cl.coordinators), cl.trainer) {
		for _, n := range scrapeNames(t, addr) {
			exported[n] = true
		}
	}
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range seriesName.FindAllStringSubmatch(tg.Expr, -1) {
				name := m[1]
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] {
						name = base
					}
				}
				queried[name] = true
				if !exported[name] {
					t.Errorf("panel %q queries %s, which no coordinator or trainer exports", p.Title, m[1])
				}
			}
		}
	}
	for _, want := range []string{coordinator.MetricRaftState, coordinator.MetricRaftTerm, coordinator.MetricRaftCommitIndex, coordinator.MetricRaftAppliedIndex,
		coordinator.MetricRaftLastContact, coordinator.MetricRaftLeaderChanges, coordinator.MetricFSMApply, coordinator.MetricTrials, coordinator.MetricHeartbeats,
		coordinator.MetricLeaseExpiries, coordinator.MetricSchedulingLatency, coordinator.MetricGRPCHandled,
		agent.MetricStepDuration, agent.MetricSamplesPerSecond, agent.MetricLoss, agent.MetricAllReduceDuration, agent.MetricCheckpointSave,
		agent.MetricCheckpointLoad, agent.MetricCheckpointFailures, "process_resident_memory_bytes"} {
		if !queried[want] {
			t.Errorf("no panel shows %s", want)
		}
	}

	// The dashboard selects the jobs the scrape configuration defines.
	y, err := os.ReadFile("../../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(y, &cfg); err != nil {
		t.Fatalf("deploy/prometheus/prometheus.yml: %v", err)
	}
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	for _, v := range dash.Templating.List {
		if strings.HasSuffix(v.Name, "_job") && !slices.Contains(jobs, v.Query) {
			t.Errorf("dashboard variable %s = %q is not a job of prometheus.yml (%v)", v.Name, v.Query, jobs)
		}
	}
}

// prometheusBinary finds Debian's prometheus server, or fails the test
// saying how to install it.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("Debian's prometheus server is not installed (%v): run `make setup` or `apt-get install prometheus`", err)
	}
	return p
}

// TestRealPrometheusScrapesCluster starts Debian's prometheus with a
// configuration naming the cluster's coordinators and trainer, and waits
// through its HTTP API until every target is up and the coordinators'
// raft term and the trainer's step counter are stored, one series each.
// The deploy configuration is checked by promtool too.
func TestRealPrometheusScrapesCluster(t *testing.T) {
	bin := prometheusBinary(t)
	if out, err := exec.Command(filepath.Join(filepath.Dir(bin), "promtool"), "check", "config", "--syntax-only", "../../deploy/prometheus/prometheus.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool check config deploy/prometheus/prometheus.yml: %v\n%s", err, out)
	}
	cl := startCluster(t)
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	quoted := func(as []string) string { return `["` + strings.Join(as, `", "`) + `"]` }
	config := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: loraft-coordinators
    static_configs: [{targets: %s}]
  - job_name: loraft-trainers
    static_configs: [{targets: %s}]
`, quoted(cl.coordinators), quoted([]string{cl.trainer}))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &proc.Proc{Name: "prometheus", Bin: proc.Binary{Path: bin}, Log: filepath.Join(dir, "prometheus.log"),
		Args: []string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "tsdb"), "--web.listen-address=" + addrs[0]}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(p.Log)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	client := &http.Client{Timeout: 5 * time.Second}
	query := func(q string) (map[string]string, error) { // instance → value
		resp, err := client.Get("http://" + addrs[0] + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return nil, fmt.Errorf("query %s: %w", q, err)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("query %s: status %q", q, r.Status)
		}
		out := map[string]string{}
		for _, s := range r.Data.Result {
			out[s.Metric["instance"]], _ = s.Value[1].(string)
		}
		return out, nil
	}
	coordinatortest.Eventually(t, 90*time.Second, func() error {
		if !p.Running() {
			return fmt.Errorf("prometheus exited: %v", p.ExitErr())
		}
		up, err := query("up")
		if err != nil {
			return err
		}
		for _, target := range append(slices.Clone(cl.coordinators), cl.trainer) {
			if up[target] != "1" {
				return fmt.Errorf("up{instance=%q} = %q, want 1 (all: %v)", target, up[target], up)
			}
		}
		terms, err := query(coordinator.MetricRaftTerm)
		if err != nil {
			return err
		}
		for _, target := range cl.coordinators {
			if v := terms[target]; v == "" || v == "0" {
				return fmt.Errorf("%s{instance=%q} = %q, want a term ≥ 1", coordinator.MetricRaftTerm, target, v)
			}
		}
		if len(terms) != len(cl.coordinators) {
			return fmt.Errorf("%s has %d series, want one per coordinator: %v", coordinator.MetricRaftTerm, len(terms), terms)
		}
		leaders, err := query(coordinator.MetricRaftState + `{state="leader"} == 1`)
		if err != nil {
			return err
		}
		if len(leaders) != 1 {
			return fmt.Errorf("%d coordinators report leading, want 1: %v", len(leaders), leaders)
		}
		steps, err := query(agent.MetricSteps)
		if err != nil {
			return err
		}
		if _, ok := steps[cl.trainer]; !ok || len(steps) != 1 {
			return fmt.Errorf("%s: %v, want the trainer's series", agent.MetricSteps, steps)
		}
		return nil
	})
}
