package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/proc"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
)

// ServeConfig tunes the serve benchmark.
type ServeConfig struct {
	// Hey is the load generator (Debian's hey; default: hey on PATH).
	Hey string
	// Models are the configurations served, each a random-init base with
	// a random LoRA adapter: "tiny" and/or "base" (default both).
	Models []string
	// Concurrency are hey's -c values (default 1, 8, 64).
	Concurrency []int
	// Duration is hey's -z for each measurement of the tiny model (default
	// 10 s); BaseDuration for bert-base (default 40 s: at concurrency 64 an
	// answer takes seconds on 2 cores, and requests/s over a span of only a
	// few answer times counts the ramp-up and the tail).
	Duration, BaseDuration time.Duration
	// MaxBatch and MaxWait are serve's batching flags for the batching-on
	// runs (default 32 and 5 ms); batching off is --max-batch 1.
	MaxBatch int
	MaxWait  time.Duration
	// Workers is serve's --workers (0: serve's default).
	Workers int
}

// serveGoal is the goal: at concurrency 64 on the tiny config,
// batching gives at least 4× the requests/s with p99 at most 200 ms.
const (
	serveGoalSpeedup = 4.0
	serveGoalP99     = 200 * time.Millisecond
	serveGoalConc    = 64
)

// serveText is every request's one statement: a typical short post.
const serveText = "i have not slept in three days and my thoughts keep racing about work"

// Serve measures `loraft serve` as a real process on loopback under
// Debian's hey: requests/s and p50/p99 latency of single-text requests at
// each concurrency, with dynamic batching on and off, for each model size.
// The adapters are random (a random-init base and LoRA): the answers are
// meaningless, the arithmetic is that of a trained adapter of the size.
func (r *Runner) Serve(ctx context.Context, cfg ServeConfig) (Report, error) {
	if cfg.Hey == "" {
		cfg.Hey = "hey"
	}
	hey, err := exec.LookPath(cfg.Hey)
	if err != nil {
		return nil, fmt.Errorf("bench serve: load generator: %w (apt-get install hey, or make setup)", err)
	}
	if len(cfg.Models) == 0 {
		cfg.Models = []string{model.ConfigTiny, model.ConfigBase}
	}
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{1, 8, 64}
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.BaseDuration <= 0 {
		cfg.BaseDuration = 40 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 32
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Millisecond
	}
	dir, err := os.MkdirTemp("", "loraft-bench-serve-")
	if err != nil {
		return nil, fmt.Errorf("bench serve: %w", err)
	}
	defer os.RemoveAll(dir)
	body, err := json.Marshal(map[string][]string{"texts": {serveText}})
	if err != nil {
		return nil, fmt.Errorf("bench serve: %w", err)
	}

	models := map[string]any{}
	rep := Report{"version": r.Version, "machine": machineInfo(), "load_generator": "Debian's hey: -z per measurement, -c connections, -o csv (percentiles over every answered request)",
		"request": string(body), "concurrency": cfg.Concurrency, "models": models,
		"note": "random-init base and LoRA adapter (NF4 base, fp32 compute, r=8 on every linear layer, max length 128); " +
			"hey runs on the same machine and takes CPU from the server"}
	rep["load_average_1m_before"] = loadAverage()
	for _, name := range cfg.Models {
		c, err := model.LoadConfig(name)
		if err != nil {
			return nil, fmt.Errorf("bench serve: model %s: %w", name, err)
		}
		adapter := filepath.Join(dir, "adapter-"+name)
		r.logf("bench serve: writing a random %s adapter …\n", name)
		if err := writeRandomAdapter(adapter, name, c); err != nil {
			return nil, fmt.Errorf("bench serve: %w", err)
		}
		dur := cfg.Duration
		if name != model.ConfigTiny {
			dur = cfg.BaseDuration
		}
		modes := []struct {
			name string
			args []string
		}{
			{"batching", []string{"--max-batch", strconv.Itoa(cfg.MaxBatch), "--max-wait", cfg.MaxWait.String()}},
			{"no_batching", []string{"--max-batch", "1", "--max-wait", "0s"}},
		}
		byMode := map[string]any{}
		rps64 := map[string]float64{}
		for _, mode := range modes {
			args := append([]string{"serve", "--adapter", adapter}, mode.args...)
			if cfg.Workers > 0 {
				args = append(args, "--workers", strconv.Itoa(cfg.Workers))
			}
			runs, err := r.serveRuns(ctx, hey, args, filepath.Join(dir, name+"-"+mode.name+".log"), body, cfg.Concurrency, dur)
			if err != nil {
				return nil, fmt.Errorf("bench serve: %s %s: %w", name, mode.name, err)
			}
			byConc := map[string]any{}
			for _, run := range runs {
				byConc[strconv.Itoa(run.Concurrency)] = run
				r.logf("bench serve: %s %s c=%d: %.1f req/s, p50 %.1f ms, p99 %.1f ms, %d errors\n",
					name, mode.name, run.Concurrency, run.RPS, run.P50ms, run.P99ms, run.Errors)
				if run.Concurrency == serveGoalConc {
					rps64[mode.name] = run.RPS
				}
			}
			byMode[mode.name] = map[string]any{"serve_args": args[3:], "by_concurrency": byConc}
		}
		m := map[string]any{"config": name, "hidden": c.HiddenSize, "layers": c.NumLayers, "duration_s": dur.Seconds(), "modes": byMode,
			"load_average_1m_after": loadAverage()}
		if rps64["no_batching"] > 0 {
			m["speedup_c64"] = round3(rps64["batching"] / rps64["no_batching"])
		}
		if name == model.ConfigTiny {
			m["goal"] = serveGoal(byMode, m["speedup_c64"])
		}
		models[name] = m
	}
	return rep, nil
}

// serveGoal checks the goal on the tiny model's runs.
func serveGoal(byMode map[string]any, speedup any) map[string]any {
	sp, _ := speedup.(float64)
	var p99 float64
	errs := 0
	if bm, ok := byMode["batching"].(map[string]any); ok {
		if run, ok := bm["by_concurrency"].(map[string]any)[strconv.Itoa(serveGoalConc)].(heyRun); ok {
			p99, errs = run.P99ms, run.Errors
		}
	}
	return map[string]any{"speedup_c64_min": serveGoalSpeedup, "p99_ms_max": ms(serveGoalP99),
		"speedup_c64": sp, "p99_ms_c64_batching": p99, "errors_c64_batching": errs,
		"met": sp >= serveGoalSpeedup && p99 > 0 && p99 <= ms(serveGoalP99) && errs == 0}
}

// serveRuns starts `loraft serve` with args on a loopback port, waits until
// it is ready, warms it up and runs hey at each concurrency in turn.
func (r *Runner) serveRuns(ctx context.Context, hey string, args []string, log string, body []byte, conc []int, dur time.Duration) ([]heyRun, error) {
	addrs, err := loopback.Addrs(1)
	if err != nil {
		return nil, err
	}
	// On loopback serve needs no token; none is passed on a command line.
	p := &proc.Proc{Name: "loraft serve", Bin: r.Bin, Args: append(args, "--listen", addrs[0]), Log: log}
	if err := p.Start(); err != nil {
		return nil, err
	}
	defer p.Stop(10 * time.Second)
	url := "http://" + addrs[0]
	if err := waitServeReady(ctx, url, p); err != nil {
		return nil, err
	}
	r.logf("bench serve: %s ready; warming up\n", strings.Join(args[3:], " "))
	if _, err := runHey(ctx, hey, url+"/v1/classify", body, 8, 2*time.Second); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var out []heyRun
	for _, c := range conc {
		run, err := runHey(ctx, hey, url+"/v1/classify", body, c, dur)
		if err != nil {
			return nil, fmt.Errorf("hey -c %d: %w", c, err)
		}
		if !p.Running() {
			return nil, fmt.Errorf("serve exited under load: %s", p.Tail(20))
		}
		out = append(out, run)
	}
	return out, nil
}

// waitServeReady polls /readyz until the model is loaded (bert-base's
// random init and quantization take a while on a small machine).
func waitServeReady(ctx context.Context, url string, p *proc.Proc) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := cl.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("serve not ready: %w; log: %s", ctx.Err(), p.Tail(20))
		case <-p.Done():
			return fmt.Errorf("serve exited before it was ready: %s", p.Tail(20))
		case <-tick.C:
		}
	}
}

// heyRun is one hey measurement.
type heyRun struct {
	Concurrency int `json:"concurrency"`
	// Requests are those hey got an answer to.
	Requests int `json:"requests"`
	// RPS counts the requests answered 200 per second.
	RPS   float64 `json:"rps"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	// Errors are answers other than 200 plus requests the server handled
	// that hey got no answer to (it gave up after -t).
	Errors int            `json:"errors"`
	Codes  map[string]int `json:"status_codes,omitempty"`
}

// heyTimeout is hey's -t: long, so that bert-base without batching at
// concurrency 64 on 2 busy cores (a request waits for 63 others, one
// forward pass each) is measured rather than timed out.
const heyTimeout = 2 * time.Minute

// runHey runs hey for dur at concurrency c against url (serve's
// /v1/classify) and reads every answered request from its CSV: hey's own
// summary prints its percentiles from too few samples to trust below 100
// answers (bert-base at concurrency 1). Requests hey got no answer to are
// not in its CSV; serve's request counter tells them.
func runHey(ctx context.Context, hey, url string, body []byte, c int, dur time.Duration) (heyRun, error) {
	metricsURL := strings.TrimSuffix(url, "/v1/classify") + "/metrics"
	before, err := serveRequests(ctx, metricsURL)
	if err != nil {
		return heyRun{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, dur+heyTimeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(hctx, hey, "-c", strconv.Itoa(c), "-z", dur.String(), "-t", strconv.Itoa(int(heyTimeout.Seconds())), "-o", "csv",
		"-m", "POST", "-T", "application/json", "-d", string(body), url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return heyRun{}, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	run, err := parseHeyCSV(out)
	if err != nil {
		return run, err
	}
	run.Concurrency = c
	after, err := serveRequests(ctx, metricsURL)
	if err != nil {
		return run, err
	}
	if lost := int(after-before) - run.Requests; lost > 0 {
		run.Errors += lost
	}
	return run, nil
}

// parseHeyCSV reads `hey -o csv`: one row per answered request with its
// response time, status code and start offset (seconds). Requests/s are
// the 200 answers over the span from the first start to the last answer.
func parseHeyCSV(out []byte) (heyRun, error) {
	run := heyRun{Codes: map[string]int{}}
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		return run, fmt.Errorf("hey CSV: %w", err)
	}
	if len(rows) == 0 || len(rows[0]) < 8 || rows[0][0] != "response-time" || rows[0][6] != "status-code" || rows[0][7] != "offset" {
		return run, fmt.Errorf("hey CSV: unexpected header in %q", lastLine(out))
	}
	var lats []float64
	span := 0.0
	for i, row := range rows[1:] {
		rt, err1 := strconv.ParseFloat(row[0], 64)
		off, err2 := strconv.ParseFloat(row[7], 64)
		if err := errors.Join(err1, err2); err != nil {
			return run, fmt.Errorf("hey CSV row %d: %w", i+1, err)
		}
		run.Codes[row[6]]++
		if row[6] != "200" {
			run.Errors++
		}
		lats = append(lats, rt*1000)
		span = max(span, off+rt)
	}
	run.Requests = len(lats)
	if run.Requests == 0 {
		return run, errors.New("hey CSV: no request was answered")
	}
	run.P50ms, run.P99ms = round1(percentile(lats, 0.5)), round1(percentile(lats, 0.99))
	if span > 0 {
		run.RPS = round1(float64(run.Requests-run.Errors) / span)
	}
	return run, nil
}

// serveRequests sums serve's loraft_serve_requests_total over the HTTP
// front's status codes.
func serveRequests(ctx context.Context, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("serve metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("serve metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("serve metrics: %w", err)
	}
	total := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "loraft_serve_requests_total{") && strings.Contains(line, `front="http"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return 0, fmt.Errorf("serve metrics line %q: %w", line, err)
			}
			total += v
		}
	}
	return total, nil
}

// writeRandomAdapter writes an adapter directory for config c on a random
// base: what `loraft serve --adapter` loads, regenerating the base from
// its seed instead of reading weights.
func writeRandomAdapter(dir, name string, c model.Config) error {
	l := lora.Config{Rank: 8, Alpha: 16, Targets: []string{lora.AllLinear}}
	m, err := model.New(c, model.RandomWeights(c, 0), nil, nil, model.Options{Quant: model.NF4, Compute: gotch.Float,
		Device: gotch.CPU, LoRA: l, Labels: shard.NumLabels, Seed: 1})
	if err != nil {
		return fmt.Errorf("random %s model: %w", name, err)
	}
	defer m.Drop()
	man := trainer.Manifest{Base: trainer.Base{ConfigName: name, Config: c, Quant: model.NF4, Compute: "fp32"},
		LoRA: l, Hyper: trainer.DefaultHyper(), Temperature: 1, Labels: shard.LabelNames(),
		Tokenizer: trainer.Tokenizer{MaxLen: shard.DefaultMaxLen, LowerCase: true}}
	man.Hyper.Seed = 1
	res := &trainer.Result{Temperature: 1, Val: metrics.Report{N: 1, ReviewBelow: 0.5, ReviewTarget: 0.9}}
	if err := trainer.SaveAdapter(dir, m, man, res, wordpiece.BertBaseUncasedVocab()); err != nil {
		return fmt.Errorf("random %s adapter: %w", name, err)
	}
	return nil
}

// loadAverage is the machine's 1-minute load average (0 when unknown): the
// other processes the server shared the CPUs with.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(b))
	if err != nil || len(fields) == 0 {
		return 0
	}
	f, _ := strconv.ParseFloat(fields[0], 64)
	return f
}
