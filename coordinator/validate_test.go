package coordinator

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// validSweep is a sweep as `loraft sweep launch` sends it: n trials and
// every train setting.
func validSweep(name string, n int) *pb.Sweep {
	spec, err := ParseSweepSpec([]byte("name: "+name+"\nsearch: random\ntrials: "+strconv.Itoa(n)+"\n"), "v.yaml")
	if err != nil {
		panic(err)
	}
	return spec.Sweep([]byte("name: "+name), "abc", time.Unix(1, 0))
}

func TestCheckSweep(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(sw *pb.Sweep)
		max    int
		wantOK bool
		want   string // the error's text
	}{
		{name: "a launched spec", edit: func(*pb.Sweep) {}, wantOK: true},
		{name: "no train settings (simulated trainers)", edit: func(sw *pb.Sweep) { sw.Train = nil }, wantOK: true},
		{name: "rank", edit: func(sw *pb.Sweep) { sw.Trials[3].Rank = 4096 }, want: "sweep.trials[3].rank: 4096, want 1..1024"},
		{name: "rank 0", edit: func(sw *pb.Sweep) { sw.Trials[0].Rank = 0 }, want: "sweep.trials[0].rank: 0, want 1..1024"},
		{name: "alpha NaN", edit: func(sw *pb.Sweep) { sw.Trials[1].Alpha = math.NaN() }, want: "sweep.trials[1].alpha: NaN, want a finite number > 0"},
		{name: "alpha Inf", edit: func(sw *pb.Sweep) { sw.Trials[1].Alpha = math.Inf(1) }, want: "sweep.trials[1].alpha: +Inf, want a finite number > 0"},
		{name: "learning rate NaN", edit: func(sw *pb.Sweep) { sw.Trials[0].LearningRate = math.NaN() }, want: "sweep.trials[0].learning_rate: NaN"},
		{name: "dropout", edit: func(sw *pb.Sweep) { sw.Trials[0].LoraDropout = 1 }, want: "sweep.trials[0].lora_dropout: 1, want in [0, 1)"},
		{name: "duplicate trial names", edit: func(sw *pb.Sweep) { sw.Trials[2].Name = sw.Trials[0].Name },
			want: "sweep.trials[2].name: v-t000, the same as sweep.trials[0]"},
		{name: "trial name with a slash", edit: func(sw *pb.Sweep) { sw.Trials[0].Name = "../etc" }, want: "sweep.trials[0].name: \"../etc\": want letters"},
		{name: "trial name too long", edit: func(sw *pb.Sweep) { sw.Trials[0].Name = strings.Repeat("a", 129) }, want: "sweep.trials[0].name: 129 bytes, want at most 128"},
		{name: "longest name", edit: func(sw *pb.Sweep) { sw.Trials[0].Name = strings.Repeat("a", 128) }, wantOK: true},
		{name: "sweep name", edit: func(sw *pb.Sweep) { sw.Name = "" }, want: "sweep.name: required"},
		{name: "sweep name charset", edit: func(sw *pb.Sweep) { sw.Name = "a b" }, want: "sweep.name: \"a b\""},
		{name: "a trial's state is the coordinator's", edit: func(sw *pb.Sweep) { sw.Trials[0].State = pb.TrialState_TRIAL_STATE_SUCCEEDED },
			want: "sweep.trials[0].state: set, want unset"},
		{name: "a trial's generation is the coordinator's", edit: func(sw *pb.Sweep) { sw.Trials[0].Generation = 9 }, want: "sweep.trials[0].generation"},
		{name: "a trial's history is the coordinator's", edit: func(sw *pb.Sweep) { sw.Trials[0].History = []*pb.MetricPoint{{Step: 1}} }, want: "sweep.trials[0].history"},
		{name: "epochs 0 (2^32 truncated)", edit: func(sw *pb.Sweep) { sw.Train.Epochs = 0 }, want: "sweep.train.epochs: 0, want 1..10000"},
		{name: "epochs too many", edit: func(sw *pb.Sweep) { sw.Train.Epochs = math.MaxInt32 }, want: "sweep.train.epochs: 2147483647"},
		{name: "batch size", edit: func(sw *pb.Sweep) { sw.Train.BatchSize = -1 }, want: "sweep.train.batch_size: -1, want 1..65536"},
		{name: "max len", edit: func(sw *pb.Sweep) { sw.Train.MaxLen = 1 << 20 }, want: "sweep.train.max_len"},
		{name: "checkpoint every", edit: func(sw *pb.Sweep) { sw.Train.CheckpointEvery = 0 }, want: "sweep.train.checkpoint_every: 0"},
		{name: "warmup NaN", edit: func(sw *pb.Sweep) { w := math.NaN(); sw.Train.WarmupRatio = &w }, want: "sweep.train.warmup_ratio: NaN"},
		{name: "quant", edit: func(sw *pb.Sweep) { sw.Train.Quant = "int3" }, want: "sweep.train.quant"},
		{name: "split", edit: func(sw *pb.Sweep) { sw.Train.SplitRatios = "1/1" }, want: "sweep.train.split_ratios"},
		// Nothing from the network names a path on a trainer (issue #12: a
		// sweep with weights /dev/zero made its trainer spin forever).
		{name: "weights /dev/zero", edit: func(sw *pb.Sweep) { sw.Train.Weights = "/dev/zero" }, want: `sweep.train.weights: "/dev/zero": want none`},
		{name: "weights relative path", edit: func(sw *pb.Sweep) { sw.Train.Weights = "bert/model.safetensors" }, want: "sweep.train.weights"},
		{name: "weights with a base", edit: func(sw *pb.Sweep) {
			sw.Train.Weights, sw.Train.BaseSha256 = "model.safetensors", strings.Repeat("a", 64)
		},
			want: "sweep.train.weights"},
		// train.base names a directory, hub id or file on the launcher:
		// sweep launch uploads it and clears the field.
		{name: "base not uploaded", edit: func(sw *pb.Sweep) { sw.Train.Base = "/models/bert-base-cased" }, want: `sweep.train.base: "/models/bert-base-cased": want none`},
		{name: "base hub id with a base", edit: func(sw *pb.Sweep) {
			sw.Train.Base, sw.Train.BaseSha256 = "bert-base-cased", strings.Repeat("a", 64)
		},
			want: "sweep.train.base"},
		{name: "config path", edit: func(sw *pb.Sweep) { sw.Train.Config = "/etc/shadow" }, want: `sweep.train.config: "/etc/shadow": want a built-in config (base, bert-base-uncased, tiny)`},
		{name: "config.json", edit: func(sw *pb.Sweep) { sw.Train.Config = "config.json" }, want: "sweep.train.config"},
		{name: "config long path cut", edit: func(sw *pb.Sweep) { sw.Train.Config = strings.Repeat("/x", 5000) }, want: `sweep.train.config: "` + strings.Repeat("/x", 32) + `"…`},
		{name: "config tiny", edit: func(sw *pb.Sweep) { sw.Train.Config = "tiny" }, wantOK: true},
		{name: "config bert-base-uncased with a base", edit: func(sw *pb.Sweep) {
			sw.Train.Config, sw.Train.BaseSha256, sw.Train.BaseName = "bert-base-uncased", strings.Repeat("0", 64), "bert-base-uncased"
		}, wantOK: true},
		{name: "base sha256 uppercase", edit: func(sw *pb.Sweep) { sw.Train.BaseSha256 = strings.Repeat("A", 64) }, want: "sweep.train.base_sha256"},
		{name: "base sha256 a path", edit: func(sw *pb.Sweep) { sw.Train.BaseSha256 = "../../bases/x" }, want: `sweep.train.base_sha256: "../../bases/x": want 64 lowercase hex`},
		{name: "base name escape", edit: func(sw *pb.Sweep) { sw.Train.BaseName = "bert\x1b]0;pwned\a" }, want: "sweep.train.base_name"},
		{name: "base name too long", edit: func(sw *pb.Sweep) { sw.Train.BaseName = strings.Repeat("b", 257) }, want: "sweep.train.base_name: 257 bytes"},
		{name: "max concurrent -1 (2^32-1 truncated)", edit: func(sw *pb.Sweep) { sw.MaxConcurrent = -1 }, want: "sweep.max_concurrent: -1, want 0..1048576"},
		{name: "trainers per trial", edit: func(sw *pb.Sweep) { sw.TrainersPerTrial = 65 }, want: "sweep.trainers_per_trial: 65, want 1..64"},
		{name: "batch below the ring", edit: func(sw *pb.Sweep) { sw.TrainersPerTrial, sw.Train.BatchSize = 8, 4 }, want: "sweep.train.batch_size: 4 is smaller"},
		{name: "metric", edit: func(sw *pb.Sweep) { sw.Metric = "loss" }, want: "sweep.metric"},
		{name: "early stopping rule", edit: func(sw *pb.Sweep) { sw.EarlyStopping = &pb.EarlyStopping{Rule: "hyperband"} }, want: "sweep.early_stopping.rule"},
		{name: "grace steps", edit: func(sw *pb.Sweep) { sw.EarlyStopping = &pb.EarlyStopping{Rule: "asha", GraceSteps: math.MaxInt64} },
			want: "sweep.early_stopping.grace_steps"},
		{name: "reduction factor", edit: func(sw *pb.Sweep) { sw.EarlyStopping = &pb.EarlyStopping{Rule: "asha", ReductionFactor: 1} },
			want: "sweep.early_stopping.reduction_factor: 1"},
		{name: "spec too big", edit: func(sw *pb.Sweep) { sw.SpecYaml = make([]byte, MaxSpecYAMLBytes+1) }, want: "sweep.spec_yaml: 1048577 bytes, want at most 1048576"},
		{name: "cancelled", edit: func(sw *pb.Sweep) { sw.Cancelled = true }, want: "sweep.cancelled"},
		{name: "too many trials", edit: func(*pb.Sweep) {}, max: 4, want: "sweep.trials: 5 trials, want at most 4"},
		{name: "trial nil", edit: func(sw *pb.Sweep) { sw.Trials[4] = nil }, want: "sweep.trials[4]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sw := validSweep("v", 5)
			tc.edit(sw)
			err := checkSweep(sw, tc.max)
			if tc.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *ArgumentError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("checkSweep: %v, want an *ArgumentError starting %q", err, tc.want)
			}
			// The FSM refuses it too (except the count, which is the server's) and changes nothing.
			if tc.max == 0 {
				f := newFSM()
				before := proto.Clone(f.state())
				if err := f.apply(&pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: sw}}}); !errors.Is(err, ErrBadCommand) || !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("FSM: %v, want ErrBadCommand and ErrInvalidArgument", err)
				}
				if !proto.Equal(before, f.state()) {
					t.Fatal("a refused sweep changed the state")
				}
			}
		})
	}
}

func TestCheckRequests(t *testing.T) {
	f := newFSM()
	sw := validSweep("r", 1)
	sw.Train.Epochs, sw.Train.BatchSize = 2, 10
	if err := f.createSweep(&pb.CreateSweep{Sweep: sw, Dataset: &pb.Dataset{Sha256: "abc", Rows: 95}}); err != nil {
		t.Fatal(err)
	}
	nosettings := validSweep("n", 1)
	nosettings.Train = nil
	if err := f.createSweep(&pb.CreateSweep{Sweep: nosettings}); err != nil {
		t.Fatal(err)
	}
	ck := func(trial string, step int64, metric float64) func() error {
		return func() error {
			return checkReport(f, &pb.RecordCheckpoint{Trial: trial, Step: step, HasMetric: true, Metric: metric})
		}
	}
	tests := []struct {
		name  string
		check func() error
		want  string // "" for ok
	}{
		{"step at the total (2 epochs × ⌈95/10⌉)", ck("r-t000", 20, 0.5), ""},
		{"step past the total", ck("r-t000", 21, 0.5), "step: 21, want 0..20"},
		{"step near 2^63, total unknown", ck("n-t000", math.MaxInt64, 0.5), "step: 9223372036854775807, want 0..1099511627776"},
		{"negative step", ck("n-t000", -1, 0.5), "step: -1"},
		{"NaN metric", ck("r-t000", 1, math.NaN()), "metric: NaN, want a finite number"},
		{"Inf metric", ck("r-t000", 1, math.Inf(-1)), "metric: -Inf"},
		{"bad trial name", ck("", 1, 0.5), "trial: required"},
		{"trainer", func() error { return checkTrainer(&pb.TrainerRecord{Id: "t1", Address: "10.0.0.1:7500"}) }, ""},
		{"trainer id", func() error { return checkTrainer(&pb.TrainerRecord{Id: "t 1", Address: "h:1"}) }, "trainer.id"},
		{"default trainer id", func() error {
			return checkTrainer(&pb.TrainerRecord{Id: "gpu7-127.0.0.1:7500", Address: "127.0.0.1:7500"})
		}, ""},
		{"default trainer id, IPv6", func() error { return checkTrainer(&pb.TrainerRecord{Id: "gpu7-[::]:7500", Address: "[::1]:7500"}) }, ""},
		{"trainer id with a slash", func() error { return checkTrainer(&pb.TrainerRecord{Id: "a/b", Address: "h:1"}) }, "trainer.id"},
		{"trainer id of dots", func() error { return checkTrainer(&pb.TrainerRecord{Id: "..", Address: "h:1"}) }, "trainer.id"},
		{"trainer address", func() error { return checkTrainer(&pb.TrainerRecord{Id: "t1", Address: "no-port"}) }, "trainer.address: \"no-port\": want host:port"},
		{"trainer port", func() error { return checkTrainer(&pb.TrainerRecord{Id: "t1", Address: "h:99999"}) }, "trainer.address"},
		{"member", func() error {
			return checkMember(&pb.Member{Id: "n4", RaftAddress: "[::1]:1", ApiAddress: "h:2"}, true)
		}, ""},
		{"member api", func() error { return checkMember(&pb.Member{Id: "n4", RaftAddress: "h:1"}, true) }, "member.api_address: required"},
		{"result NaN", func() error { return checkResult(&pb.TrialResult{ValEce: math.NaN()}) }, "result.val_ece: NaN"},
		{"result steps", func() error { return checkResult(&pb.TrialResult{Steps: -1}) }, "result.steps: -1"},
		{"dataset rows", func() error { return checkDataset(&pb.Dataset{Sha256: "abc", Rows: -1}) }, "dataset.rows: -1"},
		{"ring duplicates", func() error { return checkRing([]string{"a", "a"}) }, "trainers[1]: a listed twice"},
		{"ring empty", func() error { return checkRing(nil) }, "trainers: 0 trainers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("%v, want an invalid argument starting %q", err, tc.want)
			}
		})
	}
}

func TestCutReason(t *testing.T) {
	long := strings.Repeat("é", MaxReasonBytes) // two bytes each
	got := cutReason(long)
	if len(got) > MaxReasonBytes || !strings.HasSuffix(got, " …") || !strings.HasPrefix(long, strings.TrimSuffix(got, " …")) {
		t.Fatalf("cut to %d bytes, suffix %q", len(got), got[len(got)-8:])
	}
	if cutReason("short") != "short" {
		t.Fatal("a short reason was changed")
	}
}

// TestSpecBoundsBeforeInt32: counts beyond int32 are refused by the spec
// parser, and Sweep saturates rather than wraps should one get through.
func TestSpecBoundsBeforeInt32(t *testing.T) {
	for _, tc := range []struct{ field, yaml string }{
		{"train.epochs", "train: {epochs: 4294967296}"},
		{"train.batch_size", "train: {batch_size: 4294967296}"},
		{"max_concurrent", "max_concurrent: 4294967295"},
		{"train.checkpoint_every", "train: {checkpoint_every: 4294967297}"},
		{"train.eval_every", "train: {eval_every: 4294967297}"},
		{"early_stopping.reduction_factor", "early_stopping: {rule: asha, reduction_factor: 4294967298}"},
		{"trials", "trials: 4294967296"},
		{"space", "space: {seed: [" + strings.Repeat("1,", 1100) + "1], rank: [" + strings.Repeat("8,", 1000) + "8]}"},
	} {
		_, err := ParseSweepSpec([]byte("name: b\n"+tc.yaml+"\n"), "b.yaml")
		var ses SpecErrors
		found := false
		if errors.As(err, &ses) {
			for _, se := range ses {
				found = found || se.Field == tc.field
			}
		}
		if !found {
			t.Errorf("%s: %v, want an error on %s", tc.yaml, err, tc.field)
		}
	}
	s := &SweepSpec{Name: "w", MaxConcurrent: 1 << 32, Train: TrainSettings{Epochs: 1<<32 + 1}}
	sw := s.Sweep(nil, "", time.Unix(0, 0))
	if sw.GetMaxConcurrent() != math.MaxInt32 || sw.GetTrain().GetEpochs() != math.MaxInt32 {
		t.Fatalf("max_concurrent %d epochs %d, want both saturated at %d", sw.GetMaxConcurrent(), sw.GetTrain().GetEpochs(), math.MaxInt32)
	}
	if err := checkSweep(sw, 0); err == nil {
		t.Fatal("a saturated sweep passed the coordinator's checks")
	}
}

// TestFailureWithNaNResult: only a success's result is checked (and
// recorded); a failure carrying non-finite numbers still ends the trial.
func TestFailureWithNaNResult(t *testing.T) {
	f := planFSM(t, 1, 1, 0, "a")
	if err := applyCmd(t, f, &pb.Command{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "sw-t000", Trainers: []string{"a"}}}}); err != nil {
		t.Fatal(err)
	}
	nan := &pb.TrialResult{FinalLoss: math.NaN()}
	set := func(s pb.TrialState) error {
		return applyCmd(t, f, &pb.Command{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "sw-t000", Generation: 1, State: s, Result: nan}}})
	}
	if err := set(pb.TrialState_TRIAL_STATE_SUCCEEDED); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a success with a NaN result: %v, want invalid", err)
	}
	if err := set(pb.TrialState_TRIAL_STATE_FAILED); err != nil {
		t.Fatalf("a failure with a NaN result: %v", err)
	}
	if st := f.trials["sw-t000"].GetState(); st != pb.TrialState_TRIAL_STATE_FAILED || f.trials["sw-t000"].GetResult() != nil {
		t.Fatalf("trial %s result %v, want FAILED without a result", st, f.trials["sw-t000"].GetResult())
	}
}

// TestRefusedReportsWriteNothing: a report the server refuses before raft
// (invalid, or of an older generation) adds no entry to the raft log.
func TestRefusedReportsWriteNothing(t *testing.T) {
	n := singleNode(t)
	ctx := context.Background()
	for _, c := range []*pb.Command{
		{Cmd: &pb.Command_RegisterTrainer{RegisterTrainer: &pb.RegisterTrainer{Trainer: &pb.TrainerRecord{Id: "a", Address: "a:1"}}}},
		sweepCmd("w", 1),
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "w-t000", Trainers: []string{"a"}}}},
		{Cmd: &pb.Command_SetTrialState{SetTrialState: &pb.SetTrialState{Trial: "w-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_PENDING}}},
		{Cmd: &pb.Command_AssignTrial{AssignTrial: &pb.AssignTrial{Trial: "w-t000", Trainers: []string{"a"}}}},
	} {
		if err := n.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	s := newServer(n, ServerConfig{})
	last := n.raft.LastIndex()
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"step past the bound", func() error {
			_, err := s.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: "w-t000", Generation: 2, Step: math.MaxInt64})
			return err
		}, codes.InvalidArgument},
		{"checkpoint of an old generation", func() error {
			_, err := s.ReportCheckpoint(ctx, &pb.ReportCheckpointRequest{Trial: "w-t000", Generation: 1, Step: 5})
			return err
		}, pb.FencedCode},
		{"result of an old generation", func() error {
			_, err := s.ReportResult(ctx, &pb.ReportResultRequest{Trial: "w-t000", Generation: 1, State: pb.TrialState_TRIAL_STATE_FAILED})
			return err
		}, pb.FencedCode},
		{"invalid sweep", func() error {
			_, err := s.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: &pb.Sweep{Name: "x", Trials: []*pb.Trial{{Name: "x-t0", Rank: 0}}}})
			return err
		}, codes.InvalidArgument},
	} {
		if err := tc.call(); status.Code(err) != tc.code {
			t.Fatalf("%s: %v, want %s", tc.name, err, tc.code)
		}
		if got := n.raft.LastIndex(); got != last {
			t.Fatalf("%s: wrote %d raft entries", tc.name, got-last)
		}
	}
}
