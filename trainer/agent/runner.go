package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/loraft/loraft/checkpoint"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/allreduce"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/sugarme/gotch"
	"google.golang.org/protobuf/proto"
)

// JobRunner trains assignments with libtorch: it fetches the sweep's
// dataset from the store, splits and tokenizes it exactly as every other
// rank does, resumes from the committed checkpoint and trains.
type JobRunner struct {
	Store checkpoint.Store
	// CacheDir holds fetched datasets, bases (CacheDir/bases) and token caches.
	CacheDir string
	// NoTokenCache tokenizes every dataset afresh instead of using the
	// token cache under CacheDir.
	NoTokenCache bool
	Device       gotch.Device
	// Compute is the compute dtype, fp32 (default) or bf16.
	Compute string
	// Recompute is trainer.Job's: --grad-checkpoint.
	Recompute bool
	// Listen, when set, is where this trainer's all-reduce listens when
	// that is not the address its ring peers dial (the one it registered:
	// behind a proxy or NAT); empty: the registered one.
	Listen string
	// StepTimeout bounds each all-reduce; TLS configures the ring's mutual TLS (nil: plaintext).
	StepTimeout          time.Duration
	ServerTLS, ClientTLS *tls.Config
	// Retention prunes each trial's checkpoints after every save.
	Retention checkpoint.Retention
	// SpoolDir keeps the checkpoints waiting for the store on local disk
	// (trainer.Job.SpoolDir); empty: CacheDir/spool.
	SpoolDir string
	// Log receives one line per notice (resume point, skipped checkpoints); nil drops them.
	Log func(msg string)
	// Metrics, when set, measures every job (steps, all-reduce, checkpoints).
	Metrics *Metrics
}

// Run trains rank a.Rank of the assigned trial.
func (r *JobRunner) Run(ctx context.Context, a *pb.Assignment, rep Reporter) (*pb.TrialResult, error) {
	t, ts := a.GetTrial(), a.GetTrain()
	path, err := checkpoint.FetchDataset(ctx, r.Store, a.GetDatasetSha256(), filepath.Join(r.CacheDir, "datasets"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRetryable, err)
	}
	ds, err := shard.ReadFile(path, shard.Options{})
	if err != nil {
		return nil, err
	}
	ratios, err := splitRatios(ts)
	if err != nil {
		return nil, err
	}
	sp, err := shard.NewSplit(ds, ts.GetSplitSeed(), ratios)
	if err != nil {
		return nil, err
	}
	// The base comes first: its vocab.txt and do_lower_case tokenize the
	// data (the token cache's key holds both).
	sb, err := sweepBaseFor(ctx, r.Store, r.CacheDir, ts)
	if err != nil {
		return nil, err
	}
	base, tok := sb.base, sb.tok
	maxLen := int(ts.GetMaxLen())
	tokenCache := filepath.Join(r.CacheDir, "tokens")
	if r.NoTokenCache {
		tokenCache = ""
	}
	tokens, _, err := shard.LoadOrTokenize(ctx, tokenCache, ds, tok, maxLen, nil)
	if err != nil {
		return nil, err
	}
	if r.Compute != "" {
		base.Compute = r.Compute
	}
	h := trainer.DefaultHyper()
	h.Epochs, h.BatchSize, h.LR, h.Seed = int(ts.GetEpochs()), int(ts.GetBatchSize()), t.GetLearningRate(), t.GetSeed()
	h.EvalEvery, h.BucketByLength = int(ts.GetEvalEvery()), ts.GetBucketByLength()
	if ts.WarmupRatio != nil {
		h.WarmupRatio = ts.GetWarmupRatio()
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("trial %s: %w", t.GetName(), err)
	}
	lc := lora.Config{Rank: int(t.GetRank()), Alpha: t.GetAlpha(), Dropout: t.GetLoraDropout(), Targets: lora.ParseTargets(t.GetTargetModules())}
	if err := lc.Validate(); err != nil {
		return nil, fmt.Errorf("trial %s: %w", t.GetName(), err)
	}
	metric, err := metrics.ParseSelection(a.GetMetric())
	if err != nil {
		return nil, fmt.Errorf("trial %s: %w", t.GetName(), err)
	}
	retention := r.Retention
	if retention.KeepBest > 0 {
		retention.Metric = metric // keep the checkpoints the sweep ranks by
	}
	job := trainer.Job{Run: t.GetName(), Base: base, LoRA: lc, Hyper: h,
		Data:      &trainer.Data{DS: ds, Split: sp, Tokens: tokens, PadID: tok.PadID()},
		Tokenizer: trainer.Tokenizer{VocabSHA256: tok.VocabSHA256(), MaxLen: maxLen, LowerCase: tok.LowerCase()},
		Vocab:     sb.vocab, Device: r.Device, Recompute: r.Recompute, Store: r.Store,
		CheckpointEvery: int(ts.GetCheckpointEvery()), Retention: retention, Metric: metric, ResumeAt: int(a.GetCheckpointStep()), Generation: a.GetGeneration(),
		Rank: int(a.GetRank()), World: int(a.GetWorld()), Warn: r.Log, SpoolDir: r.SpoolDir}
	if job.SpoolDir == "" && r.CacheDir != "" {
		job.SpoolDir = filepath.Join(r.CacheDir, "spool")
	}
	if a.GetWorld() > 1 {
		peers := a.GetPeers()
		if r.Listen != "" && int(a.GetRank()) < len(peers) {
			// A rank only listens on its own entry; its peers dial the advertised one.
			peers = slices.Clone(peers)
			peers[a.GetRank()] = r.Listen
		}
		ring, err := allreduce.Listen(ctx, allreduce.Config{Rank: int(a.GetRank()), World: int(a.GetWorld()), Peers: peers,
			RunID: t.GetName(), Generation: a.GetGeneration(), StepTimeout: r.StepTimeout, ServerTLS: r.ServerTLS, ClientTLS: r.ClientTLS,
			PeerIDs: ringIDs(r.ServerTLS != nil, t.GetTrainers(), int(a.GetWorld()))})
		if err != nil {
			return nil, fmt.Errorf("%w: all-reduce ring for %s: %w", ErrRetryable, t.GetName(), err)
		}
		defer ring.Close()
		job.Reducer = ring
	}

	var eta etaClock
	var last struct {
		sync.Mutex
		loss        float64
		progress    *pb.Progress
		failingFrom time.Time // first failed checkpoint write since the last stored one
		warning     string
	}
	job.Progress = func(p trainer.Progress) {
		pp := &pb.Progress{Step: int64(p.Step), Steps: int64(p.Steps), Loss: p.Loss, Epoch: int64(p.Epoch), EtaMs: eta.left(p.Step, p.Steps).Milliseconds()}
		if p.Eval != nil {
			pp.Metric, pp.HasMetric = p.Eval.Metric(metric)
		}
		last.Lock()
		if p.Loss != 0 {
			last.loss = p.Loss
		}
		pp.Warning, last.progress = last.warning, pp
		last.Unlock()
		rep.Progress(pp)
	}
	job.Authorized = rep.Authorized
	job.Saved = func(ctx context.Context, step int, scores map[string]float64) {
		last.Lock()
		last.failingFrom, last.warning = time.Time{}, ""
		last.Unlock()
		v, ok := scores[metric]
		rep.Checkpoint(ctx, int64(step), v, ok)
	}
	// Failed writes show in `sweep status` through the heartbeat's progress,
	// even while training waits on the store for its final checkpoint.
	job.SaveFailed = func(step int, err error) {
		last.Lock()
		if last.failingFrom.IsZero() {
			last.failingFrom = time.Now()
		}
		last.warning = storeWarning(time.Since(last.failingFrom), step, err)
		var pp *pb.Progress
		if last.progress != nil {
			pp = proto.Clone(last.progress).(*pb.Progress)
			pp.Warning = last.warning
		}
		last.Unlock()
		if pp != nil {
			rep.Progress(pp)
		}
	}
	endMetrics := r.Metrics.observe(&job, h.BatchSize*h.GradAccum/max(1, int(a.GetWorld())))
	m, _, res, err := trainer.RunJob(ctx, job)
	endMetrics()
	if err != nil {
		return nil, err
	}
	m.Drop()
	last.Lock()
	defer last.Unlock()
	return &pb.TrialResult{Steps: int64(res.Steps), ValMacroF1: res.Val.MacroF1, ValAccuracy: res.Val.Accuracy,
		TestMacroF1: res.Test.MacroF1, TestAccuracy: res.Test.Accuracy, Temperature: res.Temperature, ValEce: res.Val.ECE, FinalLoss: last.loss}, nil
}

// storeWarning says for how long checkpoint writes have been failing, in at
// most coordinator.MaxWarningBytes (the error is cut to fit).
func storeWarning(failing time.Duration, step int, err error) string {
	w := fmt.Sprintf("checkpoint saves failing for %s (step %d waits): %v", failing.Round(time.Second), step, err)
	if len(w) > 500 {
		w = strings.ToValidUTF8(w[:497], "") + "..."
	}
	return w
}

// splitRatios are the sweep's split ratios, read as `loraft train --split`
// reads them; a sweep record without them gets shard.DefaultRatios.
func splitRatios(ts *pb.TrainSettings) (shard.Ratios, error) {
	if ts.GetSplitRatios() == "" {
		return shard.DefaultRatios, nil
	}
	r, err := shard.ParseRatios(ts.GetSplitRatios())
	if err != nil {
		return shard.Ratios{}, fmt.Errorf("sweep train.split: %w", err)
	}
	return r, nil
}

// etaClock estimates the time left from the rate since the first step seen.
type etaClock struct {
	start     time.Time
	startStep int
}

func (e *etaClock) left(step, steps int) time.Duration {
	now := time.Now()
	if e.start.IsZero() || step <= e.startStep {
		e.start, e.startStep = now, step
		return 0
	}
	per := now.Sub(e.start) / time.Duration(step-e.startStep)
	return per * time.Duration(steps-step)
}

// ringIDs are the trainer ids of the ranks that the all-reduce admits
// under TLS (their certificates name them), or none without TLS or when
// the assignment does not list one per rank.
func ringIDs(tlsOn bool, trainers []string, world int) []string {
	if !tlsOn || len(trainers) != world {
		return nil
	}
	return trainers
}
