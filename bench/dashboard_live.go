package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
)

// liveUpdateWait bounds how long one live update may take to reach the
// client before the benchmark gives up: many times the stream's interval.
const liveUpdateWait = 20 * dashboardInterval

// sseMessage is one default ("message") event of a sweep's event stream
// and when its data line arrived.
type sseMessage struct {
	at   time.Time
	data []byte
}

// liveUpdates opens the sweep page's event stream (the one app.js opens)
// at url and times n live updates: alternately a trainer heartbeat with
// new progress and a checkpoint report of one of the running trials, from
// just before the RPC leaves the client until the stream's event showing
// the new step (or checkpoint step) arrives. Each update waits a random
// fraction of the stream's interval first, so that updates do not keep
// in step with its ticker.
func (r *Runner) liveUpdates(ctx context.Context, cl *coordinator.Client, url string, running []*runningTrial, n int) (Report, error) {
	if len(running) == 0 {
		return nil, errors.New("live updates: ASHA stopped every running trial before the benchmark began")
	}
	r.logf("bench dashboard: %d live updates through %s …\n", n, url)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n)*(dashboardInterval+liveUpdateWait))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("live updates: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	// No client timeout: the stream lives as long as ctx.
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("live updates: opening the event stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("live updates: opening the event stream: GET %s: %s", url, resp.Status)
	}
	msgs := make(chan sseMessage, 64)
	go readSSE(ctx, resp.Body, msgs)
	// The stream's first event is the view as it is: wait for it, so that
	// every timed update is a change.
	select {
	case _, ok := <-msgs:
		if !ok {
			return nil, errors.New("live updates: the event stream ended before its first event")
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("live updates: waiting for the stream's first event: %w", ctx.Err())
	}

	var all, beats, checkpoints, rpcs []float64
	for k := range n {
		select {
		case <-time.After(rand.N(dashboardInterval)):
		case <-ctx.Done():
			return nil, fmt.Errorf("live updates: %w", ctx.Err())
		}
		for drained := false; !drained; { // events of earlier changes
			select {
			case <-msgs:
			default:
				drained = true
			}
		}
		rt := running[k%len(running)]
		checkpoint := k%2 == 1
		start := time.Now()
		if checkpoint {
			rt.checkpoint, rt.metric = rt.checkpoint+20, max(rt.metric, 0.9)+0.001 // the best metric of the sweep: ASHA keeps it
			resp, err := cl.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: rt.trial, Generation: rt.generation, Step: rt.checkpoint,
				HasMetric: true, Metric: rt.metric})
			if err != nil {
				return nil, fmt.Errorf("live updates: checkpoint of %s: %w", rt.trial, err)
			}
			if resp.GetStop() {
				return nil, fmt.Errorf("live updates: ASHA stopped %s at step %d", rt.trial, rt.checkpoint)
			}
		} else {
			rt.step += 7
			if _, err := cl.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: rt.trainer, Trial: rt.trial, Generation: rt.generation,
				Progress: &pb.Progress{Step: rt.step, Steps: 300, Loss: 1.2 - 0.001*float64(rt.step), EtaMs: 60000}}); err != nil {
				return nil, fmt.Errorf("live updates: heartbeat of %s: %w", rt.trainer, err)
			}
		}
		rpcs = append(rpcs, ms(time.Since(start)))
		at, err := awaitUpdate(ctx, msgs, start, rt, checkpoint)
		if err != nil {
			return nil, fmt.Errorf("live updates: %w", err)
		}
		d := ms(at.Sub(start))
		all = append(all, d)
		if checkpoint {
			checkpoints = append(checkpoints, d)
		} else {
			beats = append(beats, d)
		}
	}
	r.logf("bench dashboard: first live update p50 %.1f ms, p90 %.1f, max %.1f (stream interval %v)\n",
		median(all), percentile(all, 0.9), percentile(all, 1), dashboardInterval)
	return Report{
		"live_update_what": "a sweep page's event stream (GET /api/sweeps/{name}/events, as app.js opens it) is open; a trainer heartbeat " +
			"with a new step, or a checkpoint report (half each), is sent to the leader after a random wait of up to one stream interval; " +
			"time from just before the RPC leaves until the stream's event carrying the new step arrives at the client. The stream " +
			"looks at the sweep every interval (Config.Interval, polling the leader's state rather than being woken by the change), " +
			"so the expected latency is about half an interval and the worst one interval plus the RPC",
		"live_updates": n, "stream_interval_ms": dashboardInterval.Milliseconds(),
		"live_update_ms_p50": round3(median(all)), "live_update_ms_p90": round3(percentile(all, 0.9)), "live_update_ms_max": round3(percentile(all, 1)),
		"live_update_heartbeat_ms_p50": round3(median(beats)), "live_update_checkpoint_ms_p50": round3(median(checkpoints)),
		"live_update_rpc_ms_p50": round3(median(rpcs)),
	}, nil
}

// awaitUpdate returns when the event showing rt's new step (or, with
// checkpoint, its new checkpoint step) arrived.
func awaitUpdate(ctx context.Context, msgs <-chan sseMessage, since time.Time, rt *runningTrial, checkpoint bool) (time.Time, error) {
	wait := time.NewTimer(liveUpdateWait)
	defer wait.Stop()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return time.Time{}, errors.New("the event stream ended")
			}
			if m.at.Before(since) {
				continue
			}
			var v struct {
				Trials []struct {
					Name       string `json:"name"`
					Step       *int64 `json:"step"`
					Checkpoint int64  `json:"checkpoint_step"`
				} `json:"trials"`
			}
			if err := json.Unmarshal(m.data, &v); err != nil {
				return time.Time{}, fmt.Errorf("an event of the stream: %w", err)
			}
			for _, t := range v.Trials {
				if t.Name != rt.trial {
					continue
				}
				if (checkpoint && t.Checkpoint >= rt.checkpoint) || (!checkpoint && t.Step != nil && *t.Step >= rt.step) {
					return m.at, nil
				}
			}
		case <-wait.C:
			what := fmt.Sprintf("step %d", rt.step)
			if checkpoint {
				what = fmt.Sprintf("checkpoint step %d", rt.checkpoint)
			}
			return time.Time{}, fmt.Errorf("no event showed %s of %s within %v", what, rt.trial, liveUpdateWait)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// readSSE sends the default events of a server-sent event stream to out,
// stamped with the arrival of their data line, until the stream or ctx
// ends; it closes out.
func readSSE(ctx context.Context, body io.Reader, out chan<- sseMessage) {
	defer close(out)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a view of a large sweep is one long line
	var named bool
	var m sseMessage
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // the end of an event
			if !named && m.data != nil {
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			}
			named, m = false, sseMessage{}
		case bytes.HasPrefix(line, []byte("event:")):
			named = true // curves or problem: not the view
		case bytes.HasPrefix(line, []byte("data:")):
			m.at = time.Now()
			m.data = bytes.Clone(bytes.TrimSpace(line[len("data:"):]))
		}
	}
}

// fillSweepTrials is the size of the sweeps scrapeMetrics launches.
const fillSweepTrials = 1000

// scrapeMetrics times GET url (the coordinator's /metrics) cfg.Scrapes
// times with the benchmark's sweep alone in the FSM, then again after
// launching sweeps that bring the FSM to cfg.MetricsTrials trials.
func (r *Runner) scrapeMetrics(ctx context.Context, cl *coordinator.Client, url string, cfg DashboardConfig) (Report, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	before, err := timeScrapes(ctx, client, url, cfg.Scrapes, cfg.Trials)
	if err != nil {
		return nil, fmt.Errorf("/metrics with %d trials: %w", cfg.Trials, err)
	}
	r.logf("bench dashboard: launching sweeps up to %d trials …\n", cfg.MetricsTrials)
	start := time.Now()
	sweeps := 1
	for have := cfg.Trials; have < cfg.MetricsTrials; sweeps++ {
		n := min(fillSweepTrials, cfg.MetricsTrials-have)
		if err := cl.LaunchSweepWithDataset(ctx, benchSweep(fmt.Sprintf("fill%02d", sweeps), n), benchDataset); err != nil {
			return nil, fmt.Errorf("launching sweep fill%02d: %w", sweeps, err)
		}
		have += n
	}
	launch := time.Since(start)
	after, err := timeScrapes(ctx, client, url, cfg.Scrapes, cfg.MetricsTrials)
	if err != nil {
		return nil, fmt.Errorf("/metrics with %d trials: %w", cfg.MetricsTrials, err)
	}
	gz, err := gzipSize(ctx, client, url)
	if err != nil {
		return nil, err
	}
	r.logf("bench dashboard: /metrics with %d trials p50 %.2f ms, max %.2f, %d bytes (%d gzipped), %d series; with %d trials p50 %.2f ms\n",
		cfg.MetricsTrials, median(after.ms), percentile(after.ms, 1), after.bytes, gz, after.series, cfg.Trials, median(before.ms))
	return Report{
		"metrics_what": "GET /metrics of the coordinator's HTTP listener (the handler Prometheus scrapes), on one kept-alive connection, " +
			"uncompressed body read in full; first with the benchmark's sweep alone in the FSM, then after launching sweeps up to " +
			"metrics_trials trials. Trials are exported as one gauge per state (loraft_fsm_trials{state}), counted under the FSM's " +
			"read lock at scrape time, never one series per trial or sweep: the series count and the size do not grow with trials",
		"metrics_trials": cfg.MetricsTrials, "metrics_sweeps": sweeps, "metrics_launch_s": round3(launch.Seconds()), "scrapes": cfg.Scrapes,
		"metrics_ms_p50": round3(median(after.ms)), "metrics_ms_p90": round3(percentile(after.ms, 0.9)), "metrics_ms_max": round3(percentile(after.ms, 1)),
		"metrics_bytes": after.bytes, "metrics_gzip_bytes": gz, "metrics_series": after.series,
		"metrics_ms_p50_sweep_only": round3(median(before.ms)), "metrics_bytes_sweep_only": before.bytes, "metrics_series_sweep_only": before.series,
	}, nil
}

// scrapes are timed scrapes of /metrics: their milliseconds, and the
// body size and number of series of the last one.
type scrapes struct {
	ms     []float64
	bytes  int64
	series int
}

// timeScrapes GETs url n times, and checks that the scraped trial gauges
// add up to trials.
func timeScrapes(ctx context.Context, client *http.Client, url string, n, trials int) (scrapes, error) {
	var s scrapes
	for range n {
		body, d, size, err := fetch(ctx, client, url)
		if err != nil {
			return s, err
		}
		s.ms, s.bytes = append(s.ms, ms(d)), size
		var sum float64
		s.series = 0
		for line := range strings.Lines(string(body)) {
			if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
				continue
			}
			s.series++
			if rest, ok := strings.CutPrefix(line, coordinator.MetricTrials+"{"); ok {
				f := strings.Fields(rest)
				v, err := strconv.ParseFloat(f[len(f)-1], 64)
				if err != nil {
					return s, fmt.Errorf("the sample %q: %w", line, err)
				}
				sum += v
			}
		}
		if int(sum) != trials {
			return s, fmt.Errorf("%s adds up to %v trials, want %d", coordinator.MetricTrials, sum, trials)
		}
	}
	return s, nil
}

// gzipSize is the size of url's body as a Prometheus server receives it
// (it asks for gzip).
func gzipSize(ctx context.Context, client *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	// Set by hand, the transport leaves the body compressed.
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("the gzipped /metrics: %w", err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, fmt.Errorf("the gzipped /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		return 0, fmt.Errorf("the gzipped /metrics: %s, Content-Encoding %q", resp.Status, resp.Header.Get("Content-Encoding"))
	}
	return n, nil
}
