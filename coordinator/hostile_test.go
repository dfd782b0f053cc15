package coordinator_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/coordinatortest"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// securityJSON names a file for TestHostileClient's figures (attacks,
// refusals, state changes, heartbeat latencies); `go run ./bench/security`
// sets it to build bench/results/security.json.
var securityJSON = flag.String("security-json", "", "write TestHostileClient's figures as JSON to this `file`")

// attackRecord is one attack's outcome as TestHostileClient saw it.
type attackRecord struct {
	Name         string `json:"name"`
	WantCode     string `json:"want_code"`
	GotCode      string `json:"got_code"`
	Refused      bool   `json:"refused"`
	StateChanged bool   `json:"state_changed"`
}

// securityFigures is what -security-json writes.
type securityFigures struct {
	What           string         `json:"what"`
	AttacksTried   int            `json:"attacks_tried"`
	AttacksRefused int            `json:"attacks_refused"`
	StateChanges   int            `json:"state_changes"`
	Heartbeats     int            `json:"heartbeats"`
	HeartbeatP50   float64        `json:"heartbeat_p50_ms"`
	HeartbeatP99   float64        `json:"heartbeat_p99_ms"`
	HeartbeatMax   float64        `json:"heartbeat_max_ms"`
	Attacks        []attackRecord `json:"attacks"`
}

// latencyQuantile is the q-quantile (0..1) of sorted, nearest rank, in ms.
func latencyQuantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := max(0, min(int(math.Ceil(q*float64(len(sorted))))-1, len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

// hostileSweep is a valid sweep as the CLI sends it: n trials, every train
// setting, ASHA early stopping; with 95 dataset rows, 2 epochs of batch 10
// make 20 steps per trial.
func hostileSweep(name string, n int) *pb.Sweep {
	sw := &pb.Sweep{Name: name, DatasetSha256: "hostile", TrainersPerTrial: 1, Metric: "macro_f1",
		EarlyStopping: &pb.EarlyStopping{Rule: "asha", GraceSteps: 1, ReductionFactor: 3},
		Train:         &pb.TrainSettings{Epochs: 2, BatchSize: 10, MaxLen: 128, EvalEvery: 5, CheckpointEvery: 5, Quant: "nf4", SplitSeed: 42, SplitRatios: "80/10/10"}}
	for i := range n {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: fmt.Sprintf("%s-t%03d", name, i), Index: int32(i), Rank: 8, Alpha: 16, LearningRate: 2e-4, LoraDropout: 0.05, TargetModules: "query,value", Seed: 42})
	}
	return sw
}

// TestHostileClient sends a table of malformed and malicious requests to
// the leader of a real 3-coordinator group. Each gets its documented code;
// a refused one leaves the replicated state exactly as it was; and a
// well-behaved trainer's heartbeats are answered promptly throughout.
func TestHostileClient(t *testing.T) {
	base := coordinator.DefaultConfig() // hashicorp/raft's timeouts: no elections from a loaded test machine
	base.MaxTrialsPerSweep = 50
	base.Scheduler.Tick = 20 * time.Millisecond
	c := coordinatortest.NewCluster(t, 3, coordinatortest.Options{Base: &base})
	leader := c.WaitForLeader(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := dial(t, c.APIAddrs[leader])

	if _, err := api.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: hostileSweep("ok", 2), Dataset: &pb.Dataset{Sha256: "hostile", Name: "d.csv", Rows: 95, Size: 1000}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"good", "evil"} {
		if _, err := api.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: id, Address: id + ":7500"}}); err != nil {
			t.Fatal(err)
		}
	}

	// Both trainers heartbeat in the background, "good" with live progress
	// for its own trial; every answer is timed.
	var mu sync.Mutex
	assigned := map[string]*pb.Assignment{}
	var beats int
	var slowest time.Duration
	var beatErrs []error
	// Every answered heartbeat's latency from the first attack to the last:
	// the figure the issue asks for is the p99 while the leader is attacked.
	var attacking bool
	var latencies []time.Duration
	bctx, stopBeats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond) // often enough for a p99 over a second of attacks
		defer tick.Stop()
		for bctx.Err() == nil {
			for _, id := range []string{"good", "evil"} {
				req := &pb.HeartbeatRequest{TrainerId: id}
				mu.Lock()
				if a := assigned[id]; a != nil {
					req.Trial, req.Generation = a.GetTrial().GetName(), a.GetGeneration()
					if id == "good" {
						req.Progress = &pb.Progress{Step: 3, Steps: 20}
					}
				}
				mu.Unlock()
				start := time.Now()
				hctx, hcancel := context.WithTimeout(bctx, 5*time.Second)
				resp, err := api.Heartbeat(hctx, req)
				hcancel()
				took := time.Since(start)
				mu.Lock()
				if err != nil && bctx.Err() == nil {
					beatErrs = append(beatErrs, fmt.Errorf("%s: %w", id, err))
				} else if err == nil {
					beats++
					slowest = max(slowest, took)
					if attacking {
						latencies = append(latencies, took)
					}
					assigned[id] = resp.GetAssignment()
				}
				mu.Unlock()
			}
			select {
			case <-bctx.Done():
			case <-tick.C:
			}
		}
	}()
	defer wg.Wait()
	defer stopBeats()

	// Figures are made once the heartbeats have stopped (cleanups run after
	// the defers above), and also when an assertion failed, so a failing
	// run still logs its p99 and leaves its record.
	var records []attackRecord
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(latencies)
		figures := securityFigures{
			What: "attacks from TestHostileClient against the leader of a real 3-coordinator group on loopback; refused: " +
				"answered with the documented code and message (a spoofed heartbeat: answered OK and its progress ignored); " +
				"state_changed: GetState(consistent) before and after differ; heartbeats: two trainers heartbeating every " +
				"5 ms, latency of each answered one sent between the first attack and the last",
			AttacksTried: len(records), Heartbeats: len(latencies), Attacks: records,
			HeartbeatP50: latencyQuantile(latencies, 0.5), HeartbeatP99: latencyQuantile(latencies, 0.99), HeartbeatMax: latencyQuantile(latencies, 1),
		}
		for _, r := range records {
			if r.Refused {
				figures.AttacksRefused++
			}
			if r.StateChanged {
				figures.StateChanges++
			}
		}
		t.Logf("%d attacks, %d refused, %d state changes; heartbeat p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d during the attacks",
			figures.AttacksTried, figures.AttacksRefused, figures.StateChanges, figures.HeartbeatP50, figures.HeartbeatP99, figures.HeartbeatMax, figures.Heartbeats)
		if *securityJSON != "" {
			b, err := json.MarshalIndent(figures, "", "  ")
			if err != nil {
				t.Errorf("security figures: %v", err)
				return
			}
			if err := os.WriteFile(*securityJSON, append(b, '\n'), 0o644); err != nil {
				t.Errorf("security figures: %v", err)
				return
			}
		}
	})

	var good, evil *pb.Assignment
	coordinatortest.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		good, evil = assigned["good"], assigned["evil"]
		if good == nil || evil == nil {
			return fmt.Errorf("assignments: good %v, evil %v", good, evil)
		}
		return nil
	})
	gt, gg := good.GetTrial().GetName(), good.GetGeneration()
	// A legitimate report first, so the trial has history.
	if _, err := api.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: gt, Generation: gg, Step: 5, HasMetric: true, Metric: 0.5}); err != nil {
		t.Fatal(err)
	}

	dup := hostileSweep("dup", 3)
	dup.Trials[2].Name = dup.Trials[0].Name
	rank := hostileSweep("rank", 5)
	rank.Trials[3].Rank = 4096
	epochs := hostileSweep("epochs", 1)
	epochs.Train.Epochs = 0 // what 2^32 epochs became through int32
	conc := hostileSweep("conc", 1)
	conc.MaxConcurrent = -1 // what 2^32-1 became: "no limit"
	nan := hostileSweep("nan", 1)
	nan.Trials[0].Alpha = math.NaN()
	owned := hostileSweep("owned", 1)
	owned.Trials[0].State, owned.Trials[0].Generation = pb.TrialState_TRIAL_STATE_SUCCEEDED, 7
	bigSpec := hostileSweep("bigspec", 1)
	bigSpec.SpecYaml = make([]byte, coordinator.MaxSpecYAMLBytes+1)
	slash := hostileSweep("slash", 1)
	slash.Trials[0].Name = "../../etc/passwd"
	devZero := hostileSweep("devzero", 1)
	devZero.Train.Weights = "/dev/zero" // spun its trainer at 100% CPU before issue #12
	cfgPath := hostileSweep("cfgpath", 1)
	cfgPath.Train.Config = "/etc/passwd"
	badBase := hostileSweep("badbase", 1)
	badBase.Train.BaseSha256 = "../../../../dev/zero"
	taken := hostileSweep("taken", 1)
	taken.Trials[0].Name = gt // another sweep's trial
	launch := func(sw *pb.Sweep) func() error {
		return func() error { _, err := api.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: sw}); return err }
	}
	report := func(trial string, gen uint64, step int64, metric float64) func() error {
		return func() error {
			_, err := api.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: trial, Generation: gen, Step: step, HasMetric: true, Metric: metric})
			return err
		}
	}
	attacks := []struct {
		name string
		call func() error
		code codes.Code
		msg  string // a substring of the status message
	}{
		{"checkpoint at step 2^63-1 (froze ASHA)", report(gt, gg, math.MaxInt64, 0.9), codes.InvalidArgument, "step: 9223372036854775807, want 0..20"},
		{"checkpoint past the trial's total steps", report(gt, gg, 21, 0.9), codes.InvalidArgument, "step: 21"},
		{"checkpoint at a negative step", report(gt, gg, -1, 0.9), codes.InvalidArgument, "step: -1"},
		{"checkpoint with a NaN metric", report(gt, gg, 10, math.NaN()), codes.InvalidArgument, "metric: NaN"},
		{"checkpoint with an infinite metric", report(gt, gg, 10, math.Inf(1)), codes.InvalidArgument, "metric: +Inf"},
		{"checkpoint of a future generation", report(gt, gg+100, 10, 0.9), pb.FencedCode, "stale generation"},
		{"checkpoint of an unknown trial", report("nope-t000", 1, 10, 0.9), codes.NotFound, "not found"},
		{"sweep with two trials of one name", launch(dup), codes.InvalidArgument, "sweep.trials[2].name: dup-t000, the same as sweep.trials[0]"},
		{"rank 4096", launch(rank), codes.InvalidArgument, "sweep.trials[3].rank: 4096, want 1..1024"},
		{"epochs 0", launch(epochs), codes.InvalidArgument, "sweep.train.epochs: 0"},
		{"max_concurrent -1", launch(conc), codes.InvalidArgument, "sweep.max_concurrent: -1"},
		{"alpha NaN", launch(nan), codes.InvalidArgument, "sweep.trials[0].alpha: NaN"},
		{"trial state set by the client", launch(owned), codes.InvalidArgument, "sweep.trials[0].state"},
		{"spec_yaml over 1 MiB", launch(bigSpec), codes.InvalidArgument, "sweep.spec_yaml: 1048577 bytes"},
		{"more trials than the limit", launch(hostileSweep("many", 51)), codes.InvalidArgument, "sweep.trials: 51 trials, want at most 50"},
		{"trial name with a path", launch(slash), codes.InvalidArgument, "sweep.trials[0].name"},
		{"weights /dev/zero", launch(devZero), codes.InvalidArgument, `sweep.train.weights: "/dev/zero"`},
		{"config a path", launch(cfgPath), codes.InvalidArgument, `sweep.train.config: "/etc/passwd"`},
		{"base sha256 a path", launch(badBase), codes.InvalidArgument, "sweep.train.base_sha256"},
		{"trial name of another sweep", launch(taken), codes.AlreadyExists, gt},
		{"no sweep", launch(nil), codes.InvalidArgument, "sweep: required"},
		{"sweep name too long", launch(hostileSweep(strings.Repeat("s", 200), 1)), codes.InvalidArgument, "sweep.name: 200 bytes"},
		{"dataset with negative rows", func() error {
			_, err := api.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: hostileSweep("ds", 1), Dataset: &pb.Dataset{Sha256: "x", Rows: -5}})
			return err
		}, codes.InvalidArgument, "dataset.rows: -5"},
		{"result with a NaN metric", func() error {
			_, err := api.ReportResult(ctx, &pb.ReportResultRequest{Trial: gt, Generation: gg, State: pb.TrialState_TRIAL_STATE_SUCCEEDED, Result: &pb.TrialResult{ValMacroF1: math.NaN()}})
			return err
		}, codes.InvalidArgument, "result.val_macro_f1: NaN"},
		{"checkpoint of a trial name with a path", report("../ok-t000", gg, 10, 0.9), codes.InvalidArgument, "trial"},
		{"result in a state a trainer cannot set", func() error {
			_, err := api.ReportResult(ctx, &pb.ReportResultRequest{Trial: gt, Generation: gg, State: pb.TrialState_TRIAL_STATE_CANCELLED})
			return err
		}, codes.InvalidArgument, "state"},
		{"trainer id with a slash", func() error {
			_, err := api.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "a/b", Address: "h:1"}})
			return err
		}, codes.InvalidArgument, "trainer.id"},
		{"trainer address without a port", func() error {
			_, err := api.RegisterTrainer(ctx, &pb.RegisterTrainerRequest{Trainer: &pb.TrainerRecord{Id: "t9", Address: "nowhere"}})
			return err
		}, codes.InvalidArgument, "trainer.address"},
		{"heartbeat without a trainer id", func() error { _, err := api.Heartbeat(ctx, &pb.HeartbeatRequest{}); return err }, codes.InvalidArgument, "trainer_id: required"},
		{"heartbeat of an unknown trainer", func() error { _, err := api.Heartbeat(ctx, &pb.HeartbeatRequest{TrainerId: "ghost"}); return err }, codes.NotFound, "ghost"},
		{"cancel without a name", func() error { _, err := api.CancelSweep(ctx, &pb.CancelSweepRequest{}); return err }, codes.InvalidArgument, "name: required"},
		{"resume a path", func() error { _, err := api.ResumeRun(ctx, &pb.ResumeRunRequest{Run: "../ok-t000"}); return err }, codes.InvalidArgument, "run"},
		{"sweep status of a huge name", func() error {
			_, err := api.GetSweep(ctx, &pb.GetSweepRequest{Name: strings.Repeat("x", 10000)})
			return err
		}, codes.InvalidArgument, "name: 10000 bytes"},
		{"best trial of a bad name", func() error { _, err := api.BestTrial(ctx, &pb.BestTrialRequest{Sweep: "a b"}); return err }, codes.InvalidArgument, "sweep"},
		{"add a voter at a bad address", func() error {
			_, err := api.AddVoter(ctx, &pb.AddVoterRequest{Member: &pb.Member{Id: "n9", RaftAddress: "bad", ApiAddress: "h:1"}})
			return err
		}, codes.InvalidArgument, "member.raft_address"},
		{"remove a voter without an id", func() error { _, err := api.RemoveVoter(ctx, &pb.RemoveVoterRequest{}); return err }, codes.InvalidArgument, "id: required"},
		{"list trials with page_size 10^6", func() error { _, err := api.ListTrials(ctx, &pb.ListTrialsRequest{PageSize: 1_000_000}); return err }, codes.InvalidArgument, "page_size: 1000000, want 1 to 1000"},
		{"list sweeps with a negative page_size", func() error { _, err := api.ListSweeps(ctx, &pb.ListSweepsRequest{PageSize: -1}); return err }, codes.InvalidArgument, "page_size: -1"},
		{"list trials with a bogus page token", func() error {
			_, err := api.ListTrials(ctx, &pb.ListTrialsRequest{PageToken: "not base64!"})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"list sweeps with a trial list's token", func() error {
			_, err := api.ListSweeps(ctx, &pb.ListSweepsRequest{PageToken: "dDE6b2stdDAwMA"}) // base64 of "t1:ok-t000"
			return err
		}, codes.InvalidArgument, "page_token"},
		{"list sweeps with a 1 MB page token", func() error {
			_, err := api.ListSweeps(ctx, &pb.ListSweepsRequest{PageToken: strings.Repeat("A", 1<<20)})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"list trials in state 99", func() error { _, err := api.ListTrials(ctx, &pb.ListTrialsRequest{State: 99}); return err }, codes.InvalidArgument, "state"},
		{"delete a sweep with running trials", func() error { _, err := api.DeleteSweep(ctx, &pb.DeleteSweepRequest{Name: "ok"}); return err }, codes.FailedPrecondition, gt + " (RUNNING)"},
		{"delete an unknown sweep", func() error { _, err := api.DeleteSweep(ctx, &pb.DeleteSweepRequest{Name: "ghost"}); return err }, codes.NotFound, "ghost"},
		{"delete a path", func() error { _, err := api.DeleteSweep(ctx, &pb.DeleteSweepRequest{Name: "../ok"}); return err }, codes.InvalidArgument, "name"},
	}
	consistent := func() *pb.State {
		t.Helper()
		st, err := api.GetState(ctx, &pb.GetStateRequest{Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	mu.Lock()
	attacking = true // heartbeat latencies count from here to the last spoof
	mu.Unlock()
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			before := consistent()
			err := a.call()
			st, _ := status.FromError(err)
			after := consistent()
			refused := err != nil && st.Code() == a.code && strings.Contains(st.Message(), a.msg)
			changed := !proto.Equal(before, after)
			// Recorded before any assertion, so a failed attack is in the figures too.
			records = append(records, attackRecord{Name: a.name, WantCode: a.code.String(), GotCode: st.Code().String(), Refused: refused, StateChanged: changed})
			if !refused {
				t.Fatalf("%v, want %s containing %q", err, a.code, a.msg)
			}
			if changed {
				t.Fatalf("the refused request changed the state:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// A heartbeat's progress counts only for the caller's own trial at its
	// generation: "evil" cannot spoof "good"'s live progress, nor grow the
	// leader's progress map with trials of its invention.
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		s, err := api.GetSweep(ctx, &pb.GetSweepRequest{Name: "ok"})
		if err != nil {
			return err
		}
		if s.GetProgress()[gt].GetStep() != 3 {
			return fmt.Errorf("good's live progress: %v, want step 3", s.GetProgress()[gt])
		}
		return nil
	})
	// Each spoof is an attack of its own in the figures: answered OK (a
	// trainer must not be cut off for it), refused meaning its progress was
	// ignored all 20 times.
	spoofs := []struct {
		name string
		req  func(i int) *pb.HeartbeatRequest
	}{
		{"heartbeat with progress for another trainer's trial", func(int) *pb.HeartbeatRequest {
			return &pb.HeartbeatRequest{TrainerId: "evil", Trial: gt, Generation: gg, Progress: &pb.Progress{Step: 12345}}
		}},
		{"heartbeat with progress for invented trials", func(i int) *pb.HeartbeatRequest {
			return &pb.HeartbeatRequest{TrainerId: "evil", Trial: fmt.Sprintf("invented-t%03d", i), Generation: 1, Progress: &pb.Progress{Step: 12345}}
		}},
		{"heartbeat with progress past the trial's steps and a NaN loss", func(int) *pb.HeartbeatRequest {
			return &pb.HeartbeatRequest{TrainerId: "good", Trial: gt, Generation: gg, Progress: &pb.Progress{Step: 12345, Loss: math.NaN()}}
		}},
	}
	for _, sp := range spoofs {
		before := consistent()
		rec := attackRecord{Name: sp.name + " (20 times)", WantCode: codes.OK.String(), GotCode: codes.OK.String(), Refused: true}
		for i := range 20 {
			if _, err := api.Heartbeat(ctx, sp.req(i)); err != nil {
				rec.GotCode, rec.Refused = status.Code(err).String(), false
				records = append(records, rec)
				t.Fatalf("a heartbeat with progress to ignore: %v, want it answered", err)
			}
			s, err := api.GetSweep(ctx, &pb.GetSweepRequest{Name: "ok"})
			if err != nil {
				t.Fatal(err)
			}
			for trial, p := range s.GetProgress() {
				if p.GetStep() == 12345 {
					rec.Refused = false
					records = append(records, rec)
					t.Fatalf("spoofed progress shown for %s: %v", trial, p)
				}
			}
		}
		rec.StateChanged = !proto.Equal(before, consistent())
		records = append(records, rec)
		if rec.StateChanged {
			t.Errorf("%s changed the replicated state", sp.name)
		}
	}

	mu.Lock()
	attacking = false
	mu.Unlock()
	stopBeats()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(beatErrs) > 0 {
		t.Fatalf("heartbeats failed during the attacks: %v", beatErrs)
	}
	if slowest > 2*time.Second || beats == 0 {
		t.Fatalf("%d heartbeats answered, the slowest in %v: the leader stalled", beats, slowest)
	}
	t.Logf("%d heartbeats answered during the attacks, the slowest in %v", beats, slowest)
}
