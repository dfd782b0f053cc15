package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
	"google.golang.org/protobuf/proto"
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
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(w, []byte("not really weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec *pb.TrainSettings // as the spec gives it, paths on the launcher
		want string
	}{
		{&pb.TrainSettings{}, model.ConfigTiny},
		{&pb.TrainSettings{Weights: w}, model.ConfigBase},
		{&pb.TrainSettings{Config: model.ConfigTiny, Weights: w}, model.ConfigTiny},
	} {
		ts := proto.Clone(tc.spec).(*pb.TrainSettings)
		if _, err := UploadSweepBase(ctx, store, ts); err != nil {
			t.Fatal(err)
		}
		b, err := BaseFor(ctx, store, t.TempDir(), ts)
		if err != nil || b.ConfigName != tc.want || b.Quant != model.NF4 {
			t.Errorf("BaseFor(%v) = %q %q, %v; want %q nf4", ts, b.ConfigName, b.Quant, err, tc.want)
		}
	}
}

// TestBuiltinConfigsAreModels: every config name the coordinator lets a
// sweep name is one model.LoadConfig knows without opening a file, and the
// defaults are among them.
func TestBuiltinConfigsAreModels(t *testing.T) {
	t.Chdir(t.TempDir()) // a name that were a path would not be found here
	names := coordinator.BuiltinConfigs()
	for _, n := range names {
		if _, err := model.LoadConfig(n); err != nil {
			t.Errorf("coordinator allows train.config %q, model.LoadConfig: %v", n, err)
		}
	}
	for _, n := range []string{model.ConfigTiny, model.ConfigBase, model.DefaultConfigName(true), model.DefaultConfigName(false)} {
		if !slices.Contains(names, n) {
			t.Errorf("model config %q is not in coordinator.BuiltinConfigs %v", n, names)
		}
	}
}

// TestBaseForRefusesPaths: a trainer opens no path that train settings
// name, even settings no coordinator should have accepted (issue #12: a
// sweep with weights /dev/zero spun its trainer forever).
func TestBaseForRefusesPaths(t *testing.T) {
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ts   *pb.TrainSettings
		want string
	}{
		{&pb.TrainSettings{Weights: "/dev/zero"}, `train.weights "/dev/zero"`},
		{&pb.TrainSettings{Base: "/dev/zero"}, `train.base "/dev/zero"`},
		{&pb.TrainSettings{Base: "bert-base-cased", BaseSha256: strings.Repeat("a", 64)}, `train.base "bert-base-cased"`},
		{&pb.TrainSettings{Config: "tiny", Weights: "/dev/zero", BaseSha256: strings.Repeat("a", 64)}, "train.weights"},
		{&pb.TrainSettings{Config: "/dev/zero"}, `train.config "/dev/zero"`},
		{&pb.TrainSettings{Config: "config.json"}, "train.config"},
		{&pb.TrainSettings{BaseSha256: "../../dev/zero"}, "train.base_sha256"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := BaseFor(context.Background(), store, t.TempDir(), tc.ts)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("BaseFor(%v) = %v, want an error naming %s", tc.ts, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("BaseFor(%v) still running after 10s", tc.ts)
		}
	}
}

// smallConfig is a BERT small enough to train in seconds, with BERT's
// vocabulary (the tokenizer's ids).
func smallConfig() model.Config {
	c := model.Tiny()
	c.HiddenSize, c.NumLayers, c.NumHeads, c.IntermediateSize, c.MaxPositions = 32, 1, 2, 64, 64
	c.NameOrPath = "loraft/test-bert-h32"
	return c
}

// writeBase writes a config.json and random weights for c, as a user's
// model directory would hold them.
func writeBase(t *testing.T, c model.Config) (cfgPath, weightsPath string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath, weightsPath = filepath.Join(dir, "config.json"), filepath.Join(dir, "model.safetensors")
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sw := &safetensors.Writer{}
	for name, tensor := range model.RandomWeights(c, 7) {
		if err := sw.AddFloat32(name, tensor.Shape, tensor.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.WriteFile(weightsPath); err != nil {
		t.Fatal(err)
	}
	return cfgPath, weightsPath
}

// TestUploadSweepBase: sweep launch sends no path; what it sends gives
// every trainer the base the launcher named.
func TestUploadSweepBase(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := smallConfig()
	cfgPath, weightsPath := writeBase(t, c)
	weightsSHA, err := checkpoint.FileSHA256(weightsPath)
	if err != nil {
		t.Fatal(err)
	}
	noName := c
	noName.NameOrPath = ""
	cfgNoName := filepath.Join(t.TempDir(), "my-config.json")
	if b, err := json.Marshal(noName); err != nil || os.WriteFile(cfgNoName, b, 0o644) != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		spec        *pb.TrainSettings
		upload      bool
		wantConfig  string // ts.Config after the upload
		wantName    string
		wantWeights bool
		wantHidden  int
		wantCard    string // trainer.Base.NameOrPath on the trainer
	}{
		{"built-in, random init", &pb.TrainSettings{Config: "tiny"}, false, "tiny", "", false, 128, "random-init bert-tiny (loraft test config, init seed 0)"},
		{"no config, random init", &pb.TrainSettings{}, false, "", "", false, 128, "random-init bert-tiny (loraft test config, init seed 0)"},
		{"config.json and weights", &pb.TrainSettings{Config: cfgPath, Weights: weightsPath}, true, "", "loraft/test-bert-h32", true, 32, "loraft/test-bert-h32"},
		{"config.json alone", &pb.TrainSettings{Config: cfgNoName}, true, "", "my-config.json", false, 32, "random-init BERT L-1 H-32 A-2 (loraft, init seed 0)"},
		{"built-in config and weights", &pb.TrainSettings{Config: "tiny", Weights: weightsPath}, true, "tiny", "model.safetensors", true, 128, "model.safetensors"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := proto.Clone(tc.spec).(*pb.TrainSettings)
			ts.Quant = "nf4"
			sha, err := UploadSweepBase(ctx, store, ts)
			if err != nil {
				t.Fatal(err)
			}
			if (sha != "") != tc.upload || ts.GetBaseSha256() != sha || ts.GetWeights() != "" || ts.GetConfig() != tc.wantConfig || ts.GetBaseName() != tc.wantName {
				t.Fatalf("after upload (sha %q): %v; want config %q, name %q, no weights, uploaded %v", sha, ts, tc.wantConfig, tc.wantName, tc.upload)
			}
			cache := t.TempDir()
			b, err := BaseFor(ctx, store, cache, ts)
			if err != nil {
				t.Fatal(err)
			}
			if b.Config.HiddenSize != tc.wantHidden {
				t.Errorf("trainer's base has hidden size %d, want %d", b.Config.HiddenSize, tc.wantHidden)
			}
			if tc.wantWeights {
				if b.WeightsSHA256 != weightsSHA || !strings.HasPrefix(b.Weights, filepath.Join(cache, "bases", sha)+string(filepath.Separator)) {
					t.Errorf("trainer's weights %s (sha256 %s), want the fetched copy under %s of sha256 %s", b.Weights, b.WeightsSHA256, cache, weightsSHA)
				}
			} else if b.Weights != "" {
				t.Errorf("trainer's base has weights %s, want a random init", b.Weights)
			}
			if got := b.NameOrPath(); got != tc.wantCard {
				t.Errorf("model card base %q, want %q", got, tc.wantCard)
			}
		})
	}
	// Launch-time errors name the field, before anything is uploaded.
	for _, ts := range []*pb.TrainSettings{
		{Weights: "/dev/zero"},
		{Config: "/dev/zero"},
		{Config: t.TempDir()},
		{Config: filepath.Join(t.TempDir(), "missing.json")},
		{Config: weightsPath}, // not JSON
	} {
		if _, err := UploadSweepBase(ctx, store, ts); err == nil || !strings.Contains(err.Error(), "sweep train.") {
			t.Errorf("UploadSweepBase(%v) = %v, want an error naming the sweep's train field", ts, err)
		}
	}
}

// nopReporter accepts everything a job reports.
type nopReporter struct{ checkpoints atomic.Int64 }

func (*nopReporter) Progress(*pb.Progress) {}
func (r *nopReporter) Checkpoint(context.Context, int64, float64, bool) {
	r.checkpoints.Add(1)
}
func (*nopReporter) Authorized() error { return nil }

// TestRunnerTrainsFetchedBase: a trainer given only a base's sha256 trains
// on that base, fetched from the store, and its checkpoints record it.
func TestRunnerTrainsFetchedBase(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := smallConfig()
	cfgPath, weightsPath := writeBase(t, c)
	weightsSHA, err := checkpoint.FileSHA256(weightsPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := coordinator.ParseSweepSpec([]byte("name: fb\ntrain:\n  config: "+cfgPath+"\n  weights: "+weightsPath+
		"\n  epochs: 1\n  batch_size: 32\n  max_len: 32\n  checkpoint_every: 1000\n"), "fb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dataSHA, _, _, err := checkpoint.UploadDataset(ctx, store, "../../experiments/data/demo.csv")
	if err != nil {
		t.Fatal(err)
	}
	sw := spec.Sweep(nil, dataSHA, time.Unix(0, 0))
	if _, err := UploadSweepBase(ctx, store, sw.GetTrain()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(weightsPath); err != nil { // the trainer has no copy of its own
		t.Fatal(err)
	}
	tr := sw.GetTrials()[0]
	a := &pb.Assignment{Trial: tr, Train: sw.GetTrain(), DatasetSha256: dataSHA, Metric: sw.GetMetric(), Generation: 1, World: 1}
	cache := t.TempDir()
	rep := &nopReporter{}
	r := &JobRunner{Store: store, CacheDir: cache, NoTokenCache: true, Device: gotch.CPU}
	res, err := r.Run(ctx, a, rep)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetSteps() < 1 || rep.checkpoints.Load() < 1 {
		t.Fatalf("trained %d steps, reported %d checkpoints", res.GetSteps(), rep.checkpoints.Load())
	}
	_, files, err := checkpoint.LoadLatest(ctx, store, tr.GetName(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := trainer.StateFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	b := st.Manifest.Base
	if b.WeightsSHA256 != weightsSHA || b.Config.HiddenSize != 32 || b.Config.NumLayers != 1 || b.NameOrPath() != c.NameOrPath {
		t.Fatalf("checkpoint's base: weights sha256 %s, hidden %d, layers %d, card %q; want sha256 %s, 32, 1, %q",
			b.WeightsSHA256, b.Config.HiddenSize, b.Config.NumLayers, b.NameOrPath(), weightsSHA, c.NameOrPath)
	}
	if !strings.HasPrefix(b.Weights, cache) {
		t.Fatalf("checkpoint's base weights %s, want the fetched copy under %s", b.Weights, cache)
	}
	// Another trainer resumes the trial: it opens its own copy of the
	// base, not the path the checkpoint recorded (gone with the first
	// trainer's cache).
	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	a.Generation, a.CheckpointStep = 2, int64(st.Step)
	r2 := &JobRunner{Store: store, CacheDir: t.TempDir(), NoTokenCache: true, Device: gotch.CPU}
	if _, err := r2.Run(ctx, a, &nopReporter{}); err != nil {
		t.Fatalf("resuming on another trainer: %v", err)
	}
}
