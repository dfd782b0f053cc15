package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
)

// TestSweepDefaultsAreTrainDefaults: a sweep that names nothing trains its
// trial with `loraft train`'s defaults: the same hyperparameters, LoRA
// configuration, split and base model config.
func TestSweepDefaultsAreTrainDefaults(t *testing.T) {
	spec, err := coordinator.ParseSweepSpec([]byte("name: a\n"), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sw := spec.Sweep(nil, "sha", time.Unix(0, 0))
	ts, tr := sw.GetTrain(), sw.GetTrials()[0]
	h, l := trainer.DefaultHyper(), lora.DefaultConfig()
	if int(ts.GetEpochs()) != h.Epochs || int(ts.GetBatchSize()) != h.BatchSize || tr.GetLearningRate() != h.LR || tr.GetSeed() != h.Seed || ts.WarmupRatio != nil {
		t.Errorf("sweep epochs %d batch %d lr %v seed %d warmup %v; trainer.DefaultHyper %+v", ts.GetEpochs(), ts.GetBatchSize(), tr.GetLearningRate(), tr.GetSeed(), ts.WarmupRatio, h)
	}
	if int(tr.GetRank()) != l.Rank || tr.GetAlpha() != l.Alpha || tr.GetLoraDropout() != l.Dropout || !slices.Equal(lora.ParseTargets(tr.GetTargetModules()), l.Targets) {
		t.Errorf("sweep LoRA r=%d alpha=%v dropout=%v targets=%q; lora.DefaultConfig %+v", tr.GetRank(), tr.GetAlpha(), tr.GetLoraDropout(), tr.GetTargetModules(), l)
	}
	if int(ts.GetMaxLen()) != shard.DefaultMaxLen || ts.GetSplitSeed() != shard.DefaultSplitSeed {
		t.Errorf("sweep max_len %d split seed %d", ts.GetMaxLen(), ts.GetSplitSeed())
	}
	if r, err := splitRatios(ts); err != nil || r != shard.DefaultRatios {
		t.Errorf("sweep split %q = %v, %v; want %v", ts.GetSplitRatios(), r, err, shard.DefaultRatios)
	}
	if r, err := splitRatios(&pb.TrainSettings{}); err != nil || r != shard.DefaultRatios {
		t.Errorf("record without a split = %v, %v", r, err)
	}
	if r, err := splitRatios(&pb.TrainSettings{SplitRatios: "0.8,0.1,0.1"}); err != nil || r != shard.DefaultRatios {
		t.Errorf("an older record's 0.8,0.1,0.1 = %v, %v", r, err)
	}
}

// TestBaseForResolvesLikeTrain: a sweep's train.config resolves as
// `loraft train --config` does: tiny without weights, base with them.
func TestBaseForResolvesLikeTrain(t *testing.T) {
	w := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(w, []byte("not really weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ts   *pb.TrainSettings
		want string
	}{
		{&pb.TrainSettings{}, model.ConfigTiny},
		{&pb.TrainSettings{Weights: w}, model.ConfigBase},
		{&pb.TrainSettings{Config: model.ConfigTiny, Weights: w}, model.ConfigTiny},
	} {
		b, err := BaseFor(tc.ts)
		if err != nil || b.ConfigName != tc.want || b.Quant != model.NF4 {
			t.Errorf("BaseFor(%v) = %q %q, %v; want %q nf4", tc.ts, b.ConfigName, b.Quant, err, tc.want)
		}
	}
}
