package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/proccluster"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/protobuf/proto"
)

// Goals of the scale benchmark (issue #12).
const (
	scaleGoalLeaderCores    = 1.0
	scaleGoalHeartbeatP99MS = 50.0
)

// ScaleConfig tunes the scale benchmark.
type ScaleConfig struct {
	// Trainers simulated trainers register and heartbeat at the interval
	// the leader gives them, over Conns shared gRPC connections.
	Trainers, Conns int
	// Trials is the size of the sweep launched, listed and deleted.
	Trials int
	// PageSize is the ListTrials page size.
	PageSize int32
	// Lease is the coordinators' --lease (the heartbeat interval is a sixth of it).
	Lease time.Duration
	// Hold is how long the trainers heartbeat before the launch and again
	// while the sweep's trials run.
	Hold time.Duration
}

// scaleBeat is one heartbeat's latency and the phase it was sent in.
type scaleBeat struct {
	phase string
	ms    float64
}

// Scale runs 3 coordinator processes on loopback under Trainers simulated
// trainers heartbeating at their interval, launches a Trials-trial sweep,
// lets the trainers run their assigned trials (heartbeats with progress),
// lists the sweep's trials page by page, cancels and deletes it, and
// records the leader's CPU and RSS, heartbeat latency per phase, raft log
// growth, FSM snapshot size and encode time, and list page latency.
func (r *Runner) Scale(ctx context.Context, cfg ScaleConfig) (Report, error) {
	if cfg.Trainers < 1 || cfg.Trials < 1 || cfg.Conns < 1 {
		return nil, errors.New("scale: need at least one trainer, one trial and one connection")
	}
	dir, err := os.MkdirTemp("", "loraft-bench-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r.logf("bench scale: starting 3 coordinators …\n")
	cl, err := proccluster.Start(proccluster.Config{Bin: r.Bin, Dir: dir, Coordinators: 3, Lease: cfg.Lease})
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = cl.Close()
		}
	}()
	leader, err := waitHealthy(ctx, cl, nil)
	if err != nil {
		return nil, err
	}
	client, err := coordinator.NewClient(cl.APIAddrs())
	if err != nil {
		return nil, err
	}
	defer client.Close()

	r.logf("bench scale: registering %d trainers with leader %s …\n", cfg.Trainers, leader.ID)
	ids := make([]string, cfg.Trainers)
	for i := range ids {
		ids[i] = fmt.Sprintf("sim-%04d", i)
	}
	interval, err := registerAll(ctx, client, ids)
	if err != nil {
		return nil, fmt.Errorf("registering trainers: %w", err)
	}

	// The trainers: each heartbeats every interval (first beats spread
	// over one interval), naming the trial it was assigned with progress,
	// as `loraft trainer` does.
	var apis []pb.CoordinatorClient
	for range cfg.Conns {
		cc, api, err := proccluster.DialAPI(leader.APIAddr)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		apis = append(apis, api)
	}
	var phase atomic.Value
	phase.Store("idle")
	beats := make([][]scaleBeat, len(ids))
	var beatErrs atomic.Int64
	var firstErr atomic.Value
	hctx, stopBeats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := apis[i%len(apis)]
			var trial string
			var gen uint64
			step := int64(0)
			tick := time.NewTimer(time.Duration(i) * interval / time.Duration(len(ids)))
			defer tick.Stop()
			for {
				select {
				case <-hctx.Done():
					return
				case <-tick.C:
				}
				tick.Reset(interval)
				req := &pb.HeartbeatRequest{TrainerId: id, Trial: trial, Generation: gen}
				if trial != "" {
					step++
					req.Progress = &pb.Progress{Step: step, Steps: 1000, Loss: 1.5}
				}
				p := phase.Load().(string)
				start := time.Now()
				cctx, cancel := context.WithTimeout(hctx, 5*time.Second)
				resp, err := api.Heartbeat(cctx, req)
				cancel()
				if hctx.Err() != nil {
					return
				}
				if err != nil {
					beatErrs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				beats[i] = append(beats[i], scaleBeat{p, float64(time.Since(start).Nanoseconds()) / 1e6})
				a := resp.GetAssignment()
				if a.GetTrial().GetName() != trial || a.GetGeneration() != gen {
					trial, gen, step = a.GetTrial().GetName(), a.GetGeneration(), 0
				}
			}
		}()
	}
	defer func() { stopBeats(); wg.Wait() }()

	pid := leader.PID()
	cpu0, t0 := procCPU(pid), time.Now()
	report := Report{"benchmark": "scale", "loraft": r.Version, "date": time.Now().UTC().Format(time.RFC3339), "machine": machineInfo(),
		"trainers": cfg.Trainers, "trials": cfg.Trials, "page_size": cfg.PageSize, "lease_ms": cfg.Lease.Milliseconds(),
		"heartbeat_interval_ms": interval.Milliseconds(), "grpc_connections": cfg.Conns, "leader": leader.ID}
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	r.logf("bench scale: %d trainers idle for %s (heartbeat every %s) …\n", cfg.Trainers, cfg.Hold, interval)
	if err := sleep(cfg.Hold); err != nil {
		return nil, err
	}
	before, err := stateSize(ctx, client)
	if err != nil {
		return nil, err
	}
	cpuIdle := procCPU(pid) - cpu0
	idleS := time.Since(t0).Seconds()

	// Launch.
	sw, ds := scaleSweep("scale", cfg.Trials)
	phase.Store("launch")
	cpu1, t1 := procCPU(pid), time.Now()
	launchStart := time.Now()
	if err := client.LaunchSweepWithDataset(ctx, sw, ds); err != nil {
		return nil, fmt.Errorf("launching %d trials: %w", cfg.Trials, err)
	}
	launchMS := ms(time.Since(launchStart))
	r.logf("bench scale: launched %d trials in %.0f ms (request %d bytes); waiting for %d to run …\n", cfg.Trials, launchMS, proto.Size(&pb.LaunchSweepRequest{Sweep: sw, Dataset: ds}), min(cfg.Trainers, cfg.Trials))
	placeStart := time.Now()
	want := int32(min(cfg.Trainers, cfg.Trials))
	for {
		page, err := client.ListSweeps(ctx, 1, "")
		if err != nil {
			return nil, err
		}
		if len(page.GetSweeps()) == 1 && page.GetSweeps()[0].GetRunning() >= want {
			break
		}
		if time.Since(placeStart) > 2*time.Minute {
			return nil, fmt.Errorf("after 2 minutes, %v", page.GetSweeps())
		}
		if err := sleep(100 * time.Millisecond); err != nil {
			return nil, err
		}
	}
	placeMS := ms(time.Since(placeStart))
	phase.Store("running")
	r.logf("bench scale: %d trials running after %.0f ms; heartbeats with progress for %s …\n", want, placeMS, cfg.Hold)
	if err := sleep(cfg.Hold); err != nil {
		return nil, err
	}
	launched, err := stateSize(ctx, client)
	if err != nil {
		return nil, err
	}

	// List page by page.
	phase.Store("list")
	var pages []float64
	listed, token := 0, ""
	for {
		start := time.Now()
		page, err := client.ListTrials(ctx, sw.GetName(), pb.TrialState_TRIAL_STATE_UNSPECIFIED, cfg.PageSize, token)
		if err != nil {
			return nil, fmt.Errorf("listing trials, page %d: %w", len(pages)+1, err)
		}
		pages = append(pages, ms(time.Since(start)))
		listed += len(page.GetTrials())
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if listed != cfg.Trials {
		return nil, fmt.Errorf("listed %d trials of %d", listed, cfg.Trials)
	}
	r.logf("bench scale: listed %d trials in %d pages, p99 %.1f ms …\n", listed, len(pages), percentile(pages, 0.99))

	// Cancel and delete.
	phase.Store("delete")
	delStart := time.Now()
	if err := client.CancelSweep(ctx, sw.GetName()); err != nil {
		return nil, err
	}
	cancelMS := ms(time.Since(delStart))
	delStart = time.Now()
	if err := client.DeleteSweep(ctx, sw.GetName()); err != nil {
		return nil, fmt.Errorf("deleting the sweep: %w", err)
	}
	deleteMS := ms(time.Since(delStart))
	phase.Store("after")
	if err := sleep(cfg.Hold / 2); err != nil {
		return nil, err
	}
	after, err := stateSize(ctx, client)
	if err != nil {
		return nil, err
	}
	cpuBusy := procCPU(pid) - cpu1
	busyS := time.Since(t1).Seconds()
	rssPeak, rssNow := procStatusKBOf(pid, "VmHWM"), procStatusKBOf(pid, "VmRSS")
	stopBeats()
	wg.Wait()
	end, err := waitHealthy(ctx, cl, nil)
	if err != nil {
		return nil, err
	}

	// Heartbeats by phase.
	byPhase := map[string][]float64{}
	var all []float64
	for _, bs := range beats {
		for _, b := range bs {
			byPhase[b.phase] = append(byPhase[b.phase], b.ms)
			all = append(all, b.ms)
		}
	}
	if len(all) == 0 {
		e, _ := firstErr.Load().(error)
		return nil, fmt.Errorf("no heartbeat answered: %v", e)
	}
	hb := map[string]any{}
	for p, v := range byPhase {
		hb[p] = map[string]any{"n": len(v), "p50": round3(percentile(v, 0.5)), "p99": round3(percentile(v, 0.99)), "max": round3(percentile(v, 1))}
	}
	hb["all"] = map[string]any{"n": len(all), "p50": round3(percentile(all, 0.5)), "p99": round3(percentile(all, 0.99)), "max": round3(percentile(all, 1))}
	hb["errors"] = beatErrs.Load()
	if e, _ := firstErr.Load().(error); e != nil {
		hb["first_error"] = e.Error()
	}
	report["heartbeat_latency_ms"] = hb

	// The raft log, read from the leader's store once the group is down.
	leaderDir := leader.Dir
	closed = true
	if err := cl.Close(); err != nil {
		r.logf("bench scale: closing the cluster: %v\n", err)
	}
	raftLog, err := raftLogGrowth(leaderDir, sw.GetName())
	if err != nil {
		return nil, err
	}

	report["leader_cpu_cores"] = map[string]float64{"idle_trainers": round3(cpuIdle.Seconds() / idleS), "launch_to_delete": round3(cpuBusy.Seconds() / busyS)}
	report["leader_rss_mb"] = map[string]float64{"peak": round1(float64(rssPeak) / 1024), "end": round1(float64(rssNow) / 1024)}
	report["leader_unchanged"] = end.ID == leader.ID
	report["launch_ms"] = round1(launchMS)
	report["placement_ms"] = round1(placeMS)
	report["cancel_ms"] = round1(cancelMS)
	report["delete_ms"] = round1(deleteMS)
	report["list_pages"] = len(pages)
	report["list_page_ms"] = map[string]float64{"p50": round3(percentile(pages, 0.5)), "p99": round3(percentile(pages, 0.99)), "max": round3(percentile(pages, 1))}
	report["state_bytes"] = map[string]int{"before_launch": before.bytes, "after_launch": launched.bytes, "after_delete": after.bytes}
	report["state_after_delete_equals_before"] = proto.Equal(before.state, after.state)
	report["snapshot"] = map[string]any{"bytes_after_launch": launched.bytes, "encode_ms": round3(launched.encodeMS), "decode_ms": round3(launched.decodeMS),
		"bytes_before_launch": before.bytes, "encode_ms_before_launch": round3(before.encodeMS)}
	report["raft_log"] = raftLog
	p99 := percentile(all, 0.99)
	met := map[string]bool{
		"leader_under_1_core":      cpuBusy.Seconds()/busyS < scaleGoalLeaderCores,
		"heartbeat_p99_under_50ms": p99 < scaleGoalHeartbeatP99MS,
		"delete_restores_state":    proto.Equal(before.state, after.state),
	}
	report["goals"] = map[string]any{"leader_cores": scaleGoalLeaderCores, "heartbeat_p99_ms": scaleGoalHeartbeatP99MS, "state_after_delete": "equal to before launch"}
	report["met"] = met
	report["note"] = "3 `loraft coordinator` processes (insecure loopback, so every caller is allowed everything; no TLS handshakes) and this process's " +
		"simulated trainers share one machine's cores. Trainers are goroutines over grpc_connections connections to the leader; each heartbeats every " +
		"heartbeat_interval_ms, naming its assigned trial with progress once it has one. Leader CPU: utime+stime from /proc/<pid>/stat over the phase, " +
		"divided by wall time; RSS peak: VmHWM. State and snapshot bytes: the consistent GetState message, which is exactly what the FSM snapshot " +
		"persists (fsm.state()); encode_ms/decode_ms time proto marshal (deterministic, as Persist does) and unmarshal of it in this process: the " +
		"coordinators have no snapshot RPC. raft_log: entries read back from the leader's raft.db after the run: index before the sweep's CreateSweep, " +
		"its DeleteSweep's, and the entries and bytes in between (assignments, requeues, cancel, delete, and the empty barrier entries of consistent reads). The sweep is cancelled before it is deleted " +
		"(a sweep with running trials cannot be)."
	r.logf("bench scale: leader %.2f cores, heartbeat p99 %.1f ms, state %d → %d → %d bytes; goals met: %v\n",
		cpuBusy.Seconds()/busyS, p99, before.bytes, launched.bytes, after.bytes, met)
	return report, nil
}

// registerAll registers the trainers (8 at a time) and returns the
// heartbeat interval the leader asks for.
func registerAll(ctx context.Context, client *coordinator.Client, ids []string) (time.Duration, error) {
	var interval atomic.Int64
	var regErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				resp, err := client.RegisterTrainer(cctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: ids[i], Address: fmt.Sprintf("127.0.0.1:%d", 20000+i)}})
				cancel()
				if err != nil {
					regErr.CompareAndSwap(nil, err)
					return
				}
				interval.Store(resp.GetHeartbeatIntervalMs())
			}
		}()
	}
	wg.Wait()
	if e, _ := regErr.Load().(error); e != nil {
		return 0, e
	}
	return time.Duration(interval.Load()) * time.Millisecond, nil
}

// scaleSweep is a sweep of n trials as `loraft sweep launch` sends one.
func scaleSweep(name string, n int) (*pb.Sweep, *pb.Dataset) {
	spec := fmt.Sprintf("name: %s\nmetric: macro_f1\ngrid:\n  rank: [4, 8, 16, 32]\n  alpha: [8, 16, 32, 64]\n  lr: [1e-4, 2e-4, 5e-4]\n  seed: [1..%d]\n", name, n)
	sw := &pb.Sweep{Name: name, SpecYaml: []byte(spec), DatasetSha256: strings.Repeat("ab", 32), TrainersPerTrial: 1, Metric: "macro_f1",
		CreatedUnixMs: time.Now().UnixMilli(), EarlyStopping: &pb.EarlyStopping{Rule: "asha", GraceSteps: 100, ReductionFactor: 3},
		Train: &pb.TrainSettings{Epochs: 3, BatchSize: 16, MaxLen: 128, EvalEvery: 50, CheckpointEvery: 50, Quant: "nf4", SplitSeed: 42, SplitRatios: "80/10/10"}}
	ranks, alphas, lrs := []int32{4, 8, 16, 32}, []float64{8, 16, 32, 64}, []float64{1e-4, 2e-4, 5e-4}
	for i := range n {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("%s-t%05d", name, i), Index: int32(i), Rank: ranks[i%4], Alpha: alphas[(i/4)%4],
			LearningRate: lrs[(i/16)%3], LoraDropout: 0.05, TargetModules: "query,value", Seed: uint64(i)})
	}
	return sw, &pb.Dataset{Sha256: sw.GetDatasetSha256(), Name: "Combined Data.csv", Size: 31_000_000, Rows: 53_043}
}

type sizedState struct {
	state              *pb.State
	bytes              int
	encodeMS, decodeMS float64
}

// stateSize reads the consistent state and times its encoding as a snapshot.
func stateSize(ctx context.Context, client *coordinator.Client) (sizedState, error) {
	st, err := client.ConsistentState(ctx)
	if err != nil {
		return sizedState{}, fmt.Errorf("reading the state: %w", err)
	}
	const reps = 5
	var data []byte
	start := time.Now()
	for range reps {
		if data, err = (proto.MarshalOptions{Deterministic: true}).Marshal(st); err != nil {
			return sizedState{}, err
		}
	}
	enc := ms(time.Since(start)) / reps
	start = time.Now()
	for range reps {
		if err := proto.Unmarshal(data, &pb.State{}); err != nil {
			return sizedState{}, err
		}
	}
	return sizedState{state: st, bytes: len(data), encodeMS: enc, decodeMS: ms(time.Since(start)) / reps}, nil
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

// procStatusKBOf reads a "Vm…" line of /proc/<pid>/status in kB.
func procStatusKBOf(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// raftLogGrowth reads the raft log in dir and finds the sweep's CreateSweep
// and DeleteSweep entries.
func raftLogGrowth(dir, sweep string) (map[string]any, error) {
	stores, err := coordinator.OpenStores(dir, io.Discard)
	if err != nil {
		return nil, err
	}
	defer stores.Close()
	first, err := stores.Log.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := stores.Log.LastIndex()
	if err != nil {
		return nil, err
	}
	var create, del uint64
	var bytesBetween, entriesBetween int
	var log raft.Log
	for i := first; i <= last; i++ {
		if err := stores.Log.GetLog(i, &log); err != nil {
			continue // compacted or not a command
		}
		var c pb.Command
		if proto.Unmarshal(log.Data, &c) != nil {
			continue
		}
		switch {
		case c.GetCreateSweep().GetSweep().GetName() == sweep && create == 0:
			create = i
		case c.GetDeleteSweep().GetName() == sweep:
			del = i
		}
		if create != 0 && del == 0 || i == del {
			bytesBetween += len(log.Data)
			entriesBetween++
		}
	}
	if create == 0 || del == 0 {
		return nil, fmt.Errorf("raft log %d..%d of %s: the sweep's CreateSweep (%d) or DeleteSweep (%d) not found", first, last, dir, create, del)
	}
	return map[string]any{"first_index": first, "last_index": last, "index_before_launch": create - 1, "index_of_delete": del,
		"entries_launch_to_delete": entriesBetween, "bytes_launch_to_delete": bytesBetween}, nil
}
