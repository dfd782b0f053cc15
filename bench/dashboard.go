package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
}

// dashboardBudget is the goal for a 100-trial sweep's first paint.
const dashboardBudget = 300 * time.Millisecond

// Dashboard times the first paint of a sweep page on loopback: the server
// time of the page's HTML, its initial /api JSON and every script and
// stylesheet the HTML names, requested one after another as a browser
// with an empty cache would (the sum of their latencies), against one
// in-process coordinator holding a sweep of cfg.Trials trials.
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
	dir, err := os.MkdirTemp("", "loraft-bench-dashboard-")
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer os.RemoveAll(dir)
	addrs, err := loopback.Addrs(3)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	cc := coordinator.DefaultConfig()
	cc.ID, cc.Dir, cc.RaftAddr, cc.APIAddr = "b1", dir, addrs[0], addrs[1]
	cc.Peers = []coordinator.Peer{{ID: "b1", RaftAddr: addrs[0], APIAddr: addrs[1]}}
	cc.Logger = slog.New(slog.DiscardHandler)
	cc.Scheduler.Lease = 10 * time.Minute // the trainers report once; their trials stay theirs
	c, err := coordinator.Open(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}
	defer c.Close()
	r.logf("bench dashboard: a coordinator with a %d-trial sweep, %d trials running …\n", cfg.Trials, cfg.Running)
	if err := fillDashboardSweep(ctx, addrs[1], cfg); err != nil {
		return nil, fmt.Errorf("bench dashboard: %w", err)
	}

	h, err := dashboard.New(dashboard.Config{Backend: coordinator.DashboardBackend(c), Logger: cc.Logger})
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
	}
	r.logf("bench dashboard: first paint p50 %.1f ms (html %.1f, api %.1f, %d assets %.1f), %d bytes\n",
		p50, median(htmlMs), median(apiMs), assets, median(assetsMs), bytes)
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

// fillDashboardSweep launches the benchmark's sweep (a rank × alpha ×
// learning-rate grid) and has cfg.Running trainers take a trial each,
// report live progress and cfg.Checkpoints checkpoints with a metric.
func fillDashboardSweep(ctx context.Context, api string, cfg DashboardConfig) error {
	cl, err := coordinator.NewClient([]string{api})
	if err != nil {
		return err
	}
	defer cl.Close()
	sw := &pb.Sweep{Name: "bench", DatasetSha256: "bench", TrainersPerTrial: 1, Metric: "macro_f1", CreatedUnixMs: time.Now().UnixMilli(),
		EarlyStopping: &pb.EarlyStopping{Rule: "asha", GraceSteps: 50, ReductionFactor: 3},
		Train:         &pb.TrainSettings{Epochs: 3, BatchSize: 16, MaxLen: 128, EvalEvery: 20, CheckpointEvery: 20, Quant: "nf4", SplitSeed: 42, SplitRatios: "80/10/10"}}
	ranks, alphas := []int32{4, 8, 16, 32, 64}, []float64{8, 16, 32, 64, 128}
	for i := range cfg.Trials {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("bench-t%03d", i), Index: int32(i), Rank: ranks[i%5], Alpha: alphas[i/5%5],
			LearningRate: []float64{1e-4, 2e-4, 5e-4, 1e-3}[i/25%4], LoraDropout: 0.05, TargetModules: "query,value", Seed: 42})
	}
	if err := cl.LaunchSweepWithDataset(ctx, sw, &pb.Dataset{Sha256: "bench", Name: "bench.csv", Rows: 1000, Size: 100000}); err != nil {
		return fmt.Errorf("launching the sweep: %w", err)
	}
	for i := range cfg.Running {
		id := fmt.Sprintf("trainer%02d", i)
		if _, err := cl.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: fmt.Sprintf("127.0.0.1:%d", 7600+i)}}); err != nil {
			return fmt.Errorf("registering %s: %w", id, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := range cfg.Running {
		id := fmt.Sprintf("trainer%02d", i)
		var a *pb.Assignment
		for a == nil {
			if time.Now().After(deadline) {
				return errors.New("the trainers got no assignments within 30 s")
			}
			resp, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id})
			if err != nil {
				return fmt.Errorf("heartbeat of %s: %w", id, err)
			}
			if a = resp.GetAssignment(); a == nil {
				time.Sleep(20 * time.Millisecond) // the scheduler ticks every 50 ms
			}
		}
		trial, gen := a.GetTrial().GetName(), a.GetGeneration()
		stopped := false
		for k := 1; k <= cfg.Checkpoints && !stopped; k++ {
			resp, err := cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: trial, Generation: gen, Step: int64(20 * k), HasMetric: true,
				Metric: 0.2 + 0.05*float64(k) + 0.01*float64(i)})
			if err != nil {
				return fmt.Errorf("checkpoint of %s: %w", trial, err)
			}
			stopped = resp.GetStop() // ASHA stopped it: an event on the page
		}
		if stopped {
			continue
		}
		if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: id, Trial: trial, Generation: gen,
			Progress: &pb.Progress{Step: int64(20*cfg.Checkpoints + 5), Steps: 300, Loss: 1.2, EtaMs: 60000}}); err != nil {
			return fmt.Errorf("progress of %s: %w", trial, err)
		}
	}
	return nil
}
