package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/loopback"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// DashboardConfig tunes the dashboard benchmark.
type DashboardConfig struct {
	// Trials in the sweep (default 100); Running of them get a trainer,
	// live progress and Checkpoints metric reports each.
	Trials, Running, Checkpoints int
	// Loads is how many first paints are timed (default 20).
	Loads int
	// Updates is how many live updates are timed (default 20), half of
	// them heartbeats with new progress and half checkpoint reports.
	Updates int
	// MetricsTrials is how many trials the FSM holds when /metrics is
	// scraped (default 10,000), and Scrapes how many scrapes are timed
	// (default 20).
	MetricsTrials, Scrapes int
}

// dashboardInterval is how often the benchmark's sweep event stream looks
// for a change: the dashboard's default, set here so that the report can
// name it.
const dashboardInterval = 500 * time.Millisecond

// dashboardBudget is the goal for a 100-trial sweep's first paint.
const dashboardBudget = 300 * time.Millisecond

// Dashboard times the first paint of a sweep page on loopback: the server
// time of the page's HTML, its initial /api JSON and every script and
// stylesheet the HTML names, requested one after another as a browser
// with an empty cache would (the sum of their latencies), against one
// in-process coordinator holding a sweep of cfg.Trials trials. It then
// times the page's first live update (liveUpdates) and the coordinator's
// /metrics with cfg.MetricsTrials trials in the FSM (scrapeMetrics).
func (r *Runner) Dashboard(ctx context.Context, cfg DashboardConfig) (Report, error) {
	if cfg.Trials <= 0 {
		cfg.Trials = 100
	}
	if cfg.Running <= 0 {
		cfg.Running = min(10, cfg.Trials)
	}
	if cfg.Checkpoints <= 0 {
		cfg.Checkpoints = 5
	}
	if cfg.Loads <= 0 {
		cfg.Loads = 20
	}
	if cfg.Updates <= 0 {
		cfg.Updates = 20
	}
	if cfg.MetricsTrials <= 0 {
		cfg.MetricsTrials = 10000
	}
	if cfg.MetricsTrials < cfg.Trials {
		cfg.MetricsTrials = cfg.Trials
	}
	if cfg.Scrapes <= 0 {
		cfg.Scrapes = 20
	}
	load := loadAverage()
	dir, err := os.MkdirTemp("", "loraft-bench-dashboard-")
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer os.RemoveAll(dir)
	addrs, err := loopback.Addrs(4)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	cc := coordinator.DefaultConfig()
	cc.ID, cc.Dir, cc.RaftAddr, cc.APIAddr, cc.HTTPAddr = "b1", dir, addrs[0], addrs[1], addrs[3]
	cc.Peers = []coordinator.Peer{{ID: "b1", RaftAddr: addrs[0], APIAddr: addrs[1]}}
	cc.Logger = slog.New(slog.DiscardHandler)
	cc.Scheduler.Lease = 10 * time.Minute // the trainers report once; their trials stay theirs
	c, err := coordinator.Open(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer c.Close()
	r.logf("bench dashboard: a coordinator with a %d-trial sweep, %d trials running …\n", cfg.Trials, cfg.Running)
	cl, err := coordinator.NewClient([]string{addrs[1]})
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer cl.Close()
	running, err := fillDashboardSweep(ctx, cl, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}

	h, err := dashboard.New(dashboard.Config{Backend: coordinator.DashboardBackend(c), Logger: cc.Logger, Interval: dashboardInterval})
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer h.Close()
	lis, err := net.Listen("tcp", addrs[2])
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis) //nolint:errcheck // ends with Close below
	defer srv.Close()
	base := "http://" + lis.Addr().String()

	var htmlMs, apiMs, assetsMs, totalMs []float64
	var bytes, htmlBytes, apiBytes, assetBytes int64
	var assets int
	for i := range cfg.Loads {
		// A new client per load: a new connection and an empty cache, as
		// for a browser's first visit.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
		html, d, n, err := fetch(ctx, client, base+"/sweeps/bench")
		if err != nil {
			return nil, fmt.Errorf("bench dashboard: %w", err)
		}
		total, hb := d, n
		_, da, na, err := fetch(ctx, client, base+"/api/sweeps/bench")
		if err != nil {
			return nil, fmt.Errorf("bench dashboard: %w", err)
		}
		total += da
		var dAssets time.Duration
		var nAssets int64
		refs := assetRef.FindAllStringSubmatch(string(html), -1)
		for _, m := range refs {
			_, d, n, err := fetch(ctx, client, base+m[1])
			if err != nil {
				return nil, fmt.Errorf("bench dashboard: %w", err)
			}
			dAssets, nAssets = dAssets+d, nAssets+n
		}
		total += dAssets
		client.CloseIdleConnections()
		htmlMs, apiMs, assetsMs, totalMs = append(htmlMs, ms(d)), append(apiMs, ms(da)), append(assetsMs, ms(dAssets)), append(totalMs, ms(total))
		if i == 0 {
			htmlBytes, apiBytes, assetBytes, bytes, assets = hb, na, nAssets, hb+na+nAssets, len(refs)
		}
	}
	p50 := median(totalMs)
	report := Report{
		"benchmark": "dashboard", "loraft": r.Version, "date": time.Now().UTC().Format(time.RFC3339), "machine": machineInfo(),
		"what": "first paint of a sweep page on loopback: sweep page HTML + its /api/sweeps/{name} JSON + every script and stylesheet " +
			"it names, requested sequentially on a fresh connection with an empty cache; sum of the request latencies (server time " +
			"plus loopback transfer), p50 over the loads; browser parse and layout not included",
		"trials": cfg.Trials, "running": cfg.Running, "checkpoints_per_running_trial": cfg.Checkpoints, "loads": cfg.Loads,
		"html_ms": round3(median(htmlMs)), "api_ms": round3(median(apiMs)), "assets_ms": round3(median(assetsMs)), "assets": assets,
		"first_paint_ms_p50": round3(p50), "first_paint_ms_p90": round3(percentile(totalMs, 0.9)), "first_paint_ms_max": round3(percentile(totalMs, 1)),
		"bytes": bytes, "html_bytes": htmlBytes, "api_bytes": apiBytes, "assets_bytes": assetBytes,
		"budget_ms": dashboardBudget.Milliseconds(), "within_budget": p50 < float64(dashboardBudget.Milliseconds()),
		// The benchmark shares the CPUs with whatever else runs.
		"load_avg_1m_at_start": load,
	}
	r.logf("bench dashboard: first paint p50 %.1f ms (html %.1f, api %.1f, %d assets %.1f), %d bytes\n",
		p50, median(htmlMs), median(apiMs), assets, median(assetsMs), bytes)

	live, err := r.liveUpdates(ctx, cl, base+"/api/sweeps/bench/events", running, cfg.Updates)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	maps.Copy(report, live)
	scrape, err := r.scrapeMetrics(ctx, cl, c.HTTPURL()+"metrics", cfg)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	maps.Copy(report, scrape)
	report["load_avg_1m_at_end"] = loadAverage()
	return report, nil
}

// assetRef finds the scripts and stylesheets a page names.
var assetRef = regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`)

// fetch GETs url and reads the whole body.
func fetch(ctx context.Context, client *http.Client, url string) ([]byte, time.Duration, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	d := time.Since(start)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, d, int64(len(b)), nil
}

// runningTrial is a trial a benchmark trainer holds and still trains.
type runningTrial struct {
	trainer, trial string
	generation     uint64
	// step is the last step reported, checkpoint the last checkpoint's.
	step, checkpoint int64
	metric           float64
}

// benchSweep is a sweep of n trials named name-tNNNN over a rank × alpha
// × learning-rate grid.
func benchSweep(name string, n int) *pb.Sweep {
	sw := &pb.Sweep{Name: name, DatasetSha256: "bench", TrainersPerTrial: 1, Metric: "macro_f1", CreatedUnixMs: time.Now().UnixMilli(),
		EarlyStopping: &pb.EarlyStopping{Rule: "asha", GraceSteps: 50, ReductionFactor: 3},
		Train:         &pb.TrainSettings{Epochs: 3, BatchSize: 16, MaxLen: 128, EvalEvery: 20, CheckpointEvery: 20, Quant: "nf4", SplitSeed: 42, SplitRatios: "80/10/10"}}
	ranks, alphas := []int32{4, 8, 16, 32, 64}, []float64{8, 16, 32, 64, 128}
	for i := range n {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("%s-t%03d", name, i), Index: int32(i), Rank: ranks[i%5], Alpha: alphas[i/5%5],
			LearningRate: []float64{1e-4, 2e-4, 5e-4, 1e-3}[i/25%4], LoraDropout: 0.05, TargetModules: "query,value", Seed: 42})
	}
	return sw
}

// benchDataset is the dataset every benchmark sweep names.
var benchDataset = &pb.Dataset{Sha256: "bench", Name: "bench.csv", Rows: 1000, Size: 100000}

// fillDashboardSweep launches the benchmark's sweep and has cfg.Running
// trainers take a trial each, report live progress and cfg.Checkpoints
// checkpoints with a metric. It returns the trials still running (ASHA
// may have stopped some).
func fillDashboardSweep(ctx context.Context, cl *coordinator.Client, cfg DashboardConfig) ([]*runningTrial, error) {
	if err := cl.LaunchSweepWithDataset(ctx, benchSweep("bench", cfg.Trials), benchDataset); err != nil {
		return nil, fmt.Errorf("launching the sweep: %w", err)
	}
	for i := range cfg.Running {
		id := fmt.Sprintf("trainer%02d", i)
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: fmt.Sprintf("127.0.0.1:%d", 7600+i)}}); err != nil {
			return nil, fmt.Errorf("registering %s: %w", id, err)
		}
	}
	var running []*runningTrial
	deadline := time.Now().Add(30 * time.Second)
	for i := range cfg.Running {
		id := fmt.Sprintf("trainer%02d", i)
		var a *pb.Assignment
		for a == nil {
			if time.Now().After(deadline) {
				return nil, errors.New("the trainers got no assignments within 30 s")
			}
			resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id})
			if err != nil {
				return nil, fmt.Errorf("heartbeat of %s: %w", id, err)
			}
			if a = resp.GetAssignment(); a == nil {
				time.Sleep(20 * time.Millisecond) // the scheduler ticks every 50 ms
			}
		}
		rt := &runningTrial{trainer: id, trial: a.GetTrial().GetName(), generation: a.GetGeneration()}
		stopped := false
		for k := 1; k <= cfg.Checkpoints && !stopped; k++ {
			rt.checkpoint, rt.metric = int64(20*k), 0.2+0.05*float64(k)+0.01*float64(i)
			resp, err := cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: rt.trial, Generation: rt.generation, Step: rt.checkpoint,
				HasMetric: true, Metric: rt.metric})
			if err != nil {
				return nil, fmt.Errorf("checkpoint of %s: %w", rt.trial, err)
			}
			stopped = resp.GetStop() // ASHA stopped it: an event on the page
		}
		if stopped {
			continue
		}
		rt.step = int64(20*cfg.Checkpoints + 5)
		if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id, Trial: rt.trial, Generation: rt.generation,
			Progress: &pb.Progress{Step: rt.step, Steps: 300, Loss: 1.2, EtaMs: 60000}}); err != nil {
			return nil, fmt.Errorf("progress of %s: %w", rt.trial, err)
		}
		running = append(running, rt)
	}
	return running, nil
}
