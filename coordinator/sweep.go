package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora/loraconfig"
	"github.com/loraft/loraft/trainer/metrics"
	"go.yaml.in/yaml/v3"
)

// Search strategies.
const (
	SearchGrid   = "grid"
	SearchRandom = "random"
)

// Range is a continuous search range for random search.
type Range struct {
	Min float64 `yaml:"min"`
	Max float64 `yaml:"max"`
	// Log samples uniformly in log space (learning rates).
	Log bool `yaml:"log"`
}

// Space lists the values each hyperparameter takes. Grid search takes the
// cartesian product of the lists; random search draws from the lists, or
// from a Range where one is given.
type Space struct {
	Rank          []int     `yaml:"rank"`
	Alpha         []float64 `yaml:"alpha"`
	LearningRate  []float64 `yaml:"learning_rate"`
	LRRange       *Range    `yaml:"learning_rate_range"`
	Dropout       []float64 `yaml:"lora_dropout"`
	TargetModules []string  `yaml:"target_modules"` // each entry: "query,value" or "all-linear"
	Seed          []uint64  `yaml:"seed"`
}

// EarlyStopping stops weak trials at evaluation points.
type EarlyStopping struct {
	// Rule is "median" (stop a trial whose metric is below the median of the
	// other trials at the same step) or "asha" (successive halving: keep the
	// top 1/ReductionFactor at each rung).
	Rule            string `yaml:"rule"`
	GraceSteps      int    `yaml:"grace_steps"`
	ReductionFactor int    `yaml:"reduction_factor"`
}

// TrainSettings are the fixed training settings every trial shares.
type TrainSettings struct {
	// Base is the base as `loraft train --base` takes it, on the launching
	// machine: a model directory, a Hugging Face hub id resolved offline from
	// the HF cache, or a single weights file. It brings its own config.json,
	// vocab.txt and do_lower_case, so it excludes Config and Weights.
	Base string `yaml:"base"`
	// Config is tiny, base or a config.json on the launching machine; empty:
	// base with Weights, tiny without (model.ResolveConfig, on each trainer).
	// Weights is an HF model.safetensors on the launching machine, empty for
	// random init. `sweep launch` uploads Base, or Config and Weights
	// (agent.UploadSweepBase), and the sweep names them by
	// TrainSettings.base_sha256: the coordinator refuses any other path
	// (checkTrainBase).
	Config    string `yaml:"config"`
	Weights   string `yaml:"weights"`
	Epochs    int    `yaml:"epochs"`
	BatchSize int    `yaml:"batch_size"`
	MaxLen    int    `yaml:"max_len"`
	EvalEvery int    `yaml:"eval_every"`
	Quant     string `yaml:"quant"`
	// WarmupRatio is nil for the trainer's default (the same as `loraft train`'s).
	WarmupRatio *float64 `yaml:"warmup_ratio"`
	// CheckpointEvery saves (and reports) a checkpoint every N steps; EvalEvery defaults to it.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// SplitSeed and Split fix the train/validation/test split every trial
	// shares; Split is any spelling shard.ParseRatios reads ("80/10/10",
	// "0.8,0.1,0.1").
	SplitSeed uint64 `yaml:"split_seed"`
	Split     string `yaml:"split"`
	// BucketByLength batches rows of similar token length together
	// (`loraft train --bucket-by-length`).
	BucketByLength bool `yaml:"bucket_by_length"`
}

// SweepSpec is a sweep as its YAML file describes it.
type SweepSpec struct {
	Name             string         `yaml:"name"`
	Search           string         `yaml:"search"`
	Trials           int            `yaml:"trials"` // random: how many; grid: 0 = the whole grid
	SearchSeed       uint64         `yaml:"search_seed"`
	TrainersPerTrial int            `yaml:"trainers_per_trial"`
	MaxConcurrent    int            `yaml:"max_concurrent"`
	Metric           string         `yaml:"metric"`
	EarlyStopping    *EarlyStopping `yaml:"early_stopping"`
	Space            Space          `yaml:"space"`
	Train            TrainSettings  `yaml:"train"`
}

// TrialSpec is one point of the sweep's search space.
type TrialSpec struct {
	Index         int     `json:"index"`
	Name          string  `json:"name"` // <sweep>-tNNN, also the run name in the store
	Rank          int     `json:"rank"`
	Alpha         float64 `json:"alpha"`
	LearningRate  float64 `json:"learning_rate"`
	Dropout       float64 `json:"lora_dropout"`
	TargetModules string  `json:"target_modules"`
	Seed          uint64  `json:"seed"`
}

var sweepName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseSweepSpec reads a YAML sweep spec; file names it in errors. Unknown
// fields are errors (a typo must not silently fall back to a default). It
// decodes the spec, applies the defaults (see applyDefaults), then validates
// every field; on failure the error is SpecErrors, one *SpecError per bad
// field or list entry, each with its file, line and field.
func ParseSweepSpec(data []byte, file string) (*SweepSpec, error) {
	s, lines, err := decodeSweepSpec(data, file)
	if err != nil {
		return nil, err
	}
	s.applyDefaults()
	v := &specCheck{file: file, lines: lines}
	s.validate(v)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return s, nil
}

// decodeSweepSpec decodes the YAML strictly (unknown fields are errors) and
// keeps its node tree for the lines of fields.
func decodeSweepSpec(data []byte, file string) (*SweepSpec, specLines, error) {
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root) // a syntax error is reported by Decode below
	s := &SweepSpec{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty spec")
		}
		return nil, specLines{}, yamlErrors(file, &root, err)
	}
	return s, specLines{root: &root}, nil
}

// Sweep-only defaults: the trial seed, and the checkpoint interval (the
// same as `loraft train --checkpoint-every`). The other settings' defaults
// come from the packages that own them: the LoRA space from loraconfig, the
// metric from metrics, the split and max_len from shard, the base model
// config from model.ResolveConfig on the trainer. Epochs, batch size and
// learning rate are those of trainer.DefaultHyper, which the coordinator
// cannot import (it links libtorch); a test in trainer/agent keeps them equal.
const (
	defaultTrialSeed       = 42
	defaultCheckpointEvery = 50
	defaultEpochs          = 3
	defaultBatchSize       = 16
	defaultLearningRate    = 2e-4
	defaultQuant           = "nf4"
	defaultASHAReduction   = 3
	maxTrainersPerTrial    = 64
)

// applyDefaults fills what the spec leaves out: grid search, 1 trainer per
// trial, every trial concurrently, metric macro_f1, the LoRA defaults of
// loraconfig (rank 8, alpha 16, dropout 0.05, targets query,value), learning
// rate 2e-4, seed 42; train: 3 epochs, batch 16, max length 128, NF4, a
// checkpoint (and evaluation) every 50 steps, split 80/10/10 with seed 42.
// train.config stays empty unless given: each trainer resolves it with
// model.ResolveConfig, as `loraft train` does (base with train.weights,
// tiny without).
func (s *SweepSpec) applyDefaults() {
	if s.Search == "" {
		s.Search = SearchGrid
	}
	if s.TrainersPerTrial == 0 {
		s.TrainersPerTrial = 1
	}
	if s.Metric == "" {
		s.Metric = metrics.DefaultSelection
	}
	if es := s.EarlyStopping; es != nil && es.Rule == "asha" && es.ReductionFactor == 0 {
		es.ReductionFactor = defaultASHAReduction
	}
	sp := &s.Space
	if len(sp.Rank) == 0 {
		sp.Rank = []int{loraconfig.DefaultRank}
	}
	if len(sp.Alpha) == 0 {
		sp.Alpha = []float64{loraconfig.DefaultAlpha}
	}
	if len(sp.LearningRate) == 0 && sp.LRRange == nil {
		sp.LearningRate = []float64{defaultLearningRate}
	}
	if len(sp.Dropout) == 0 {
		sp.Dropout = []float64{loraconfig.DefaultDropout}
	}
	if len(sp.TargetModules) == 0 {
		sp.TargetModules = []string{loraconfig.DefaultTargets}
	}
	if len(sp.Seed) == 0 {
		sp.Seed = []uint64{defaultTrialSeed}
	}
	tr := &s.Train
	if tr.Epochs == 0 {
		tr.Epochs = defaultEpochs
	}
	if tr.BatchSize == 0 {
		tr.BatchSize = defaultBatchSize
	}
	if tr.MaxLen == 0 {
		tr.MaxLen = shard.DefaultMaxLen
	}
	if tr.Quant == "" {
		tr.Quant = defaultQuant
	}
	if tr.CheckpointEvery == 0 {
		tr.CheckpointEvery = defaultCheckpointEvery
	}
	if tr.EvalEvery == 0 && tr.CheckpointEvery > 0 {
		tr.EvalEvery = tr.CheckpointEvery
	}
	if tr.SplitSeed == 0 {
		tr.SplitSeed = shard.DefaultSplitSeed
	}
	if tr.Split == "" {
		tr.Split = shard.DefaultRatios.String()
	}
}

// specCheck collects the problems validation finds.
type specCheck struct {
	file  string
	lines specLines
	errs  SpecErrors
}

// fail records a problem with the field at the dotted path.
func (v *specCheck) fail(field, format string, args ...any) {
	v.errs = append(v.errs, &SpecError{File: v.file, Line: v.lines.line(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// failItem records a problem with the index-th entry of a list field.
func (v *specCheck) failItem(field string, index int, err error) {
	v.errs = append(v.errs, &SpecError{File: v.file, Line: v.lines.item(field, index), Field: field, Msg: err.Error()})
}

// validate checks every field (defaults applied), in file order.
func (s *SweepSpec) validate(v *specCheck) {
	s.validateHeader(v)
	s.validateEarlyStopping(v)
	s.validateSpace(v)
	s.validateTrain(v)
	slices.SortStableFunc(v.errs, func(a, b *SpecError) int { return a.Line - b.Line })
}

// validateHeader checks the top-level scalars.
func (s *SweepSpec) validateHeader(v *specCheck) {
	switch {
	case s.Name == "":
		v.fail("name", "is required")
	case !sweepName.MatchString(s.Name):
		v.fail("name", "%q: letters, digits, '.', '_' and '-', at most 64", s.Name)
	}
	if s.Search != SearchGrid && s.Search != SearchRandom {
		v.fail("search", "%q, want grid or random", s.Search)
	}
	if s.Trials < 0 || (s.Search == SearchRandom && s.Trials == 0) {
		v.fail("trials", "%d, want a positive number (random search needs one)", s.Trials)
	} else if s.Trials > maxSpecTrials {
		v.fail("trials", "%d, want at most %d", s.Trials, maxSpecTrials)
	} else if n, ok := s.gridSize(); s.Search == SearchGrid && s.Trials == 0 && (!ok || n > maxSpecTrials) {
		v.fail("space", "the grid has more than %d points; set trials to take its first ones", maxSpecTrials)
	}
	if s.TrainersPerTrial < 1 || s.TrainersPerTrial > maxTrainersPerTrial {
		v.fail("trainers_per_trial", "%d, want 1..%d", s.TrainersPerTrial, maxTrainersPerTrial)
	}
	if s.MaxConcurrent < 0 || s.MaxConcurrent > MaxConcurrent {
		v.fail("max_concurrent", "%d, want 0..%d (0: no limit)", s.MaxConcurrent, MaxConcurrent)
	}
	if _, err := metrics.ParseSelection(s.Metric); err != nil {
		v.fail("metric", "%v", err)
	}
}

// validateEarlyStopping checks the early-stopping rule, when there is one.
func (s *SweepSpec) validateEarlyStopping(v *specCheck) {
	es := s.EarlyStopping
	if es == nil {
		return
	}
	if es.Rule != "median" && es.Rule != "asha" {
		v.fail("early_stopping.rule", "%q, want median or asha", es.Rule)
	}
	if es.GraceSteps < 0 || es.GraceSteps > MaxStep {
		v.fail("early_stopping.grace_steps", "%d, want 0..%d", es.GraceSteps, MaxStep)
	}
	if es.ReductionFactor < 0 || (es.Rule == "asha" && es.ReductionFactor < 2) || es.ReductionFactor > MaxReductionFactor {
		v.fail("early_stopping.reduction_factor", "%d, want 2..%d", es.ReductionFactor, MaxReductionFactor)
	}
}

// validateSpace checks every listed value of the search space; the LoRA
// fields with loraconfig's checks, the same as `loraft train`'s flags.
func (s *SweepSpec) validateSpace(v *specCheck) {
	sp := &s.Space
	for i, r := range sp.Rank {
		if err := loraconfig.CheckRank(r); err != nil {
			v.failItem("space.rank", i, err)
		}
	}
	for i, a := range sp.Alpha {
		if err := loraconfig.CheckAlpha(a); err != nil {
			v.failItem("space.alpha", i, err)
		}
	}
	for i, lr := range sp.LearningRate {
		if !(lr > 0) || lr > 1 {
			v.failItem("space.learning_rate", i, fmt.Errorf("%v, want in (0, 1]", lr))
		}
	}
	if r := sp.LRRange; r != nil {
		if s.Search == SearchGrid {
			v.fail("space.learning_rate_range", "ranges need random search; give a list for grid search")
		} else if !(r.Min > 0) || !(r.Max > r.Min) || r.Max > 1 {
			v.fail("space.learning_rate_range", "min %v max %v, want 0 < min < max ≤ 1", r.Min, r.Max)
		}
	}
	for i, d := range sp.Dropout {
		if err := loraconfig.CheckDropout(d); err != nil {
			v.failItem("space.lora_dropout", i, err)
		}
	}
	for i, t := range sp.TargetModules {
		if err := loraconfig.CheckTargets(loraconfig.ParseTargets(t)); err != nil {
			v.failItem("space.target_modules", i, fmt.Errorf("entry %q: %w", t, err))
		}
	}
}

// validateTrain checks the shared training settings.
func (s *SweepSpec) validateTrain(v *specCheck) {
	tr := &s.Train
	if tr.Base != "" {
		// The base's own config.json and weights: a second source for either
		// would leave it unclear which one trains.
		if tr.Config != "" {
			v.fail("train.config", "%q with train.base %q: give one (the base brings its config.json)", tr.Config, tr.Base)
		}
		if tr.Weights != "" {
			v.fail("train.weights", "%q with train.base %q: give one (the base brings its weights)", tr.Weights, tr.Base)
		}
	}
	if tr.Epochs < 1 || tr.Epochs > MaxEpochs {
		v.fail("train.epochs", "%d, want 1..%d", tr.Epochs, MaxEpochs)
	}
	if tr.BatchSize < 1 || tr.BatchSize > MaxBatchSize {
		v.fail("train.batch_size", "%d, want 1..%d", tr.BatchSize, MaxBatchSize)
	} else if s.TrainersPerTrial > 1 && tr.BatchSize < s.TrainersPerTrial {
		v.fail("train.batch_size", "%d is smaller than trainers_per_trial %d", tr.BatchSize, s.TrainersPerTrial)
	}
	if err := shard.CheckMaxLen(tr.MaxLen); err != nil {
		v.fail("train.max_len", "%v", err)
	}
	if tr.EvalEvery < 0 || tr.EvalEvery > math.MaxInt32 {
		v.fail("train.eval_every", "%d, want 0..%d (0: at the end)", tr.EvalEvery, math.MaxInt32)
	}
	if w := tr.WarmupRatio; w != nil && !(*w >= 0 && *w < 1) {
		v.fail("train.warmup_ratio", "%v, want in [0, 1)", *w)
	}
	if tr.CheckpointEvery < 1 || tr.CheckpointEvery > math.MaxInt32 {
		v.fail("train.checkpoint_every", "%d, want 1..%d", tr.CheckpointEvery, math.MaxInt32)
	}
	if tr.Quant != "nf4" && tr.Quant != "fp32" {
		v.fail("train.quant", "%q, want nf4 or fp32", tr.Quant)
	}
	if _, err := shard.ParseRatios(tr.Split); err != nil {
		v.fail("train.split", "%v", err)
	}
}

// TrialName is the name of a sweep's index-th trial, <sweep>-tNNN, which is
// also its run name in the store. Trial names are unique across sweeps.
func TrialName(sweep string, index int) string { return fmt.Sprintf("%s-t%03d", sweep, index) }

// TrialSweep is the sweep whose trial TrialName named run, and false for a
// run name TrialName cannot give. It is exact where a prefix is not: the
// trials of sweep "demo-2" (demo-2-t000) are not trials of sweep "demo".
func TrialSweep(run string) (string, bool) {
	i := strings.LastIndex(run, "-t")
	if i < 0 {
		return "", false
	}
	sweep, digits := run[:i], run[i+2:]
	index, err := strconv.Atoi(digits)
	if err != nil || index < 0 || digits != fmt.Sprintf("%03d", index) || !sweepName.MatchString(sweep) {
		return "", false
	}
	return sweep, true
}

// GridSize is the number of points in the cartesian product of the space's
// lists (math.MaxInt when that does not fit an int).
func (s *SweepSpec) GridSize() int {
	n, ok := s.gridSize()
	if !ok {
		return math.MaxInt
	}
	return n
}

// gridSize is GridSize, and false when the product overflows.
func (s *SweepSpec) gridSize() (int, bool) {
	sp := s.Space
	n := 1
	for _, k := range []int{len(sp.Rank), len(sp.Alpha), max(1, len(sp.LearningRate)), len(sp.Dropout), len(sp.TargetModules), len(sp.Seed)} {
		if k != 0 && n > math.MaxInt/k {
			return 0, false
		}
		n *= k
	}
	return n, true
}

// maxSpecTrials bounds the trials a spec expands to, so Expand stays
// small; the coordinator refuses sweeps above its own MaxTrialsPerSweep.
const maxSpecTrials = 1 << 20

// Expand lists the sweep's trials, deterministically: grid search walks the
// cartesian product (rank slowest, seed fastest), truncated to Trials when
// set; random search draws Trials points with a PCG seeded by SearchSeed.
func (s *SweepSpec) Expand() []TrialSpec {
	sp := s.Space
	var out []TrialSpec
	add := func(t TrialSpec) {
		t.Index = len(out)
		t.Name = TrialName(s.Name, t.Index)
		out = append(out, t)
	}
	if s.Search == SearchGrid {
		for _, r := range sp.Rank {
			for _, a := range sp.Alpha {
				for _, lr := range sp.LearningRate {
					for _, d := range sp.Dropout {
						for _, tm := range sp.TargetModules {
							for _, seed := range sp.Seed {
								if s.Trials > 0 && len(out) == s.Trials {
									return out
								}
								add(TrialSpec{Rank: r, Alpha: a, LearningRate: lr, Dropout: d, TargetModules: tm, Seed: seed})
							}
						}
					}
				}
			}
		}
		return out
	}
	rng := rand.New(rand.NewPCG(s.SearchSeed, 0x7377656570)) // "sweep"
	pick := func(n int) int { return int(rng.Uint64() % uint64(n)) }
	for range s.Trials {
		t := TrialSpec{Rank: sp.Rank[pick(len(sp.Rank))], Alpha: sp.Alpha[pick(len(sp.Alpha))],
			Dropout: sp.Dropout[pick(len(sp.Dropout))], TargetModules: sp.TargetModules[pick(len(sp.TargetModules))],
			Seed: sp.Seed[pick(len(sp.Seed))]}
		if r := sp.LRRange; r != nil {
			u := float64(rng.Uint64()>>11) / (1 << 53)
			if r.Log {
				t.LearningRate = math.Exp(math.Log(r.Min) + u*(math.Log(r.Max)-math.Log(r.Min)))
			} else {
				t.LearningRate = r.Min + u*(r.Max-r.Min)
			}
		} else {
			t.LearningRate = sp.LearningRate[pick(len(sp.LearningRate))]
		}
		add(t)
	}
	return out
}

// Sweep is the sweep record to launch: the spec's trials (pending), its
// shared settings and the dataset's hash. specYAML is kept verbatim. The
// spec is valid (ParseSweepSpec's bounds keep every count within int32);
// should one not be, a count beyond int32 saturates rather than wraps, so
// the coordinator refuses it instead of reading 2^32 epochs as 0.
func (s *SweepSpec) Sweep(specYAML []byte, datasetSHA string, now time.Time) *pb.Sweep {
	tr := s.Train
	sw := &pb.Sweep{Name: s.Name, SpecYaml: specYAML, DatasetSha256: datasetSHA, CreatedUnixMs: now.UnixMilli(),
		TrainersPerTrial: sat32(s.TrainersPerTrial), MaxConcurrent: sat32(s.MaxConcurrent), Metric: s.Metric,
		Train: &pb.TrainSettings{Base: tr.Base, Config: tr.Config, Weights: tr.Weights, Epochs: sat32(tr.Epochs), BatchSize: sat32(tr.BatchSize),
			MaxLen: sat32(tr.MaxLen), EvalEvery: sat32(tr.EvalEvery), Quant: tr.Quant, WarmupRatio: tr.WarmupRatio,
			CheckpointEvery: sat32(tr.CheckpointEvery), SplitSeed: tr.SplitSeed, SplitRatios: tr.Split, BucketByLength: tr.BucketByLength}}
	if es := s.EarlyStopping; es != nil {
		sw.EarlyStopping = &pb.EarlyStopping{Rule: es.Rule, GraceSteps: int64(es.GraceSteps), ReductionFactor: sat32(es.ReductionFactor)}
	}
	for _, t := range s.Expand() {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: t.Name, Index: sat32(t.Index), Rank: sat32(t.Rank), Alpha: t.Alpha,
			LearningRate: t.LearningRate, LoraDropout: t.Dropout, TargetModules: t.TargetModules, Seed: t.Seed})
	}
	return sw
}

// sat32 converts n to int32, saturating at its bounds instead of wrapping.
func sat32(n int) int32 {
	return int32(min(max(n, math.MinInt32), math.MaxInt32))
}
