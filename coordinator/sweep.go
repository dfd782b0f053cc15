package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"go.yaml.in/yaml/v3"
)

// ErrSpec reports an invalid sweep spec; a *SpecError wraps it with the
// file, line and field.
var ErrSpec = errors.New("invalid sweep spec")

// SpecError locates a problem in a sweep spec, like encoding/csv.ParseError.
type SpecError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *SpecError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: field %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

func (e *SpecError) Unwrap() error { return ErrSpec }

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
	Config    string `yaml:"config"`  // tiny, base or a config.json
	Weights   string `yaml:"weights"` // HF model.safetensors, empty for random init
	Epochs    int    `yaml:"epochs"`
	BatchSize int    `yaml:"batch_size"`
	MaxLen    int    `yaml:"max_len"`
	EvalEvery int    `yaml:"eval_every"`
	Quant     string `yaml:"quant"`
	// WarmupRatio is nil for the trainer's default (the same as `loraft train`'s).
	WarmupRatio *float64 `yaml:"warmup_ratio"`
	// CheckpointEvery saves (and reports) a checkpoint every N steps; EvalEvery defaults to it.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// SplitSeed and Split fix the train/validation/test split every trial shares.
	SplitSeed uint64 `yaml:"split_seed"`
	Split     string `yaml:"split"`
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

var splitRatios = regexp.MustCompile(`^\s*[0-9.]+\s*,\s*[0-9.]+\s*,\s*[0-9.]+\s*$`)

var sweepName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseSweepSpec reads a YAML sweep spec; file names it in errors. Unknown
// fields are errors (a typo must not silently fall back to a default).
// Defaults: grid search, 1 trainer per trial, every trial concurrently,
// metric macro_f1, rank 8, alpha 16, learning rate 2e-4, dropout 0.05,
// targets query,value, seed 42, tiny config, 3 epochs, batch 16, max length 128.
func ParseSweepSpec(data []byte, file string) (*SweepSpec, error) {
	s := &SweepSpec{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		return nil, yamlError(file, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	line := func(path ...string) int { return lineOf(&root, path...) }
	fail := func(field, format string, args ...any) error {
		return &SpecError{File: file, Line: line(strings.Split(field, ".")...), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if s.Name == "" {
		return nil, &SpecError{File: file, Field: "name", Msg: "is required"}
	}
	if !sweepName.MatchString(s.Name) {
		return nil, fail("name", "%q: letters, digits, '.', '_' and '-', at most 64", s.Name)
	}
	if s.Search == "" {
		s.Search = SearchGrid
	}
	if s.Search != SearchGrid && s.Search != SearchRandom {
		return nil, fail("search", "%q, want grid or random", s.Search)
	}
	if s.Trials < 0 || (s.Search == SearchRandom && s.Trials == 0) {
		return nil, fail("trials", "%d, want a positive number (random search needs one)", s.Trials)
	}
	if s.TrainersPerTrial == 0 {
		s.TrainersPerTrial = 1
	}
	if s.TrainersPerTrial < 0 || s.TrainersPerTrial > 64 {
		return nil, fail("trainers_per_trial", "%d, want 1..64", s.TrainersPerTrial)
	}
	if s.MaxConcurrent < 0 {
		return nil, fail("max_concurrent", "%d, want ≥ 0 (0: no limit)", s.MaxConcurrent)
	}
	if s.Metric == "" {
		s.Metric = "macro_f1"
	}
	if !slices.Contains([]string{"macro_f1", "accuracy", "weighted_f1"}, s.Metric) {
		return nil, fail("metric", "%q, want macro_f1, accuracy or weighted_f1 (all maximised)", s.Metric)
	}
	if es := s.EarlyStopping; es != nil {
		if es.Rule != "median" && es.Rule != "asha" {
			return nil, fail("early_stopping.rule", "%q, want median or asha", es.Rule)
		}
		if es.Rule == "asha" && es.ReductionFactor == 0 {
			es.ReductionFactor = 3
		}
		if es.GraceSteps < 0 || es.ReductionFactor < 0 || (es.Rule == "asha" && es.ReductionFactor < 2) {
			return nil, fail("early_stopping", "grace_steps must be ≥ 0 and reduction_factor ≥ 2")
		}
	}
	sp := &s.Space
	if len(sp.Rank) == 0 {
		sp.Rank = []int{8}
	}
	if len(sp.Alpha) == 0 {
		sp.Alpha = []float64{16}
	}
	if len(sp.LearningRate) == 0 && sp.LRRange == nil {
		sp.LearningRate = []float64{2e-4}
	}
	if len(sp.Dropout) == 0 {
		sp.Dropout = []float64{0.05}
	}
	if len(sp.TargetModules) == 0 {
		sp.TargetModules = []string{"query,value"}
	}
	if len(sp.Seed) == 0 {
		sp.Seed = []uint64{42}
	}
	for _, r := range sp.Rank {
		if r < 1 || r > 1024 {
			return nil, fail("space.rank", "%d, want 1..1024", r)
		}
	}
	for _, a := range sp.Alpha {
		if !(a > 0) || math.IsInf(a, 0) {
			return nil, fail("space.alpha", "%v, want > 0", a)
		}
	}
	for _, lr := range sp.LearningRate {
		if !(lr > 0) || lr > 1 {
			return nil, fail("space.learning_rate", "%v, want in (0, 1]", lr)
		}
	}
	if r := sp.LRRange; r != nil {
		if s.Search == SearchGrid {
			return nil, fail("space.learning_rate_range", "ranges need random search; give a list for grid search")
		}
		if !(r.Min > 0) || !(r.Max > r.Min) || r.Max > 1 {
			return nil, fail("space.learning_rate_range", "min %v max %v, want 0 < min < max ≤ 1", r.Min, r.Max)
		}
	}
	for _, d := range sp.Dropout {
		if d < 0 || d >= 1 {
			return nil, fail("space.lora_dropout", "%v, want in [0, 1)", d)
		}
	}
	for _, t := range sp.TargetModules {
		if strings.TrimSpace(t) == "" {
			return nil, fail("space.target_modules", "an entry is empty")
		}
	}
	tr := &s.Train
	if tr.Config == "" {
		tr.Config = "tiny"
	}
	if tr.Epochs == 0 {
		tr.Epochs = 3
	}
	if tr.BatchSize == 0 {
		tr.BatchSize = 16
	}
	if tr.MaxLen == 0 {
		tr.MaxLen = 128
	}
	if tr.Quant == "" {
		tr.Quant = "nf4"
	}
	if tr.CheckpointEvery == 0 {
		tr.CheckpointEvery = 50
	}
	if tr.EvalEvery == 0 {
		tr.EvalEvery = tr.CheckpointEvery
	}
	if tr.SplitSeed == 0 {
		tr.SplitSeed = 42
	}
	if tr.Split == "" {
		tr.Split = "0.8,0.1,0.1"
	}
	if tr.CheckpointEvery < 0 {
		return nil, fail("train.checkpoint_every", "%d, want ≥ 1", tr.CheckpointEvery)
	}
	if !splitRatios.MatchString(tr.Split) {
		return nil, fail("train.split", "%q, want three ratios like 0.8,0.1,0.1", tr.Split)
	}
	if tr.Epochs < 1 || tr.BatchSize < 1 || tr.MaxLen < 2 || tr.MaxLen > 512 || tr.EvalEvery < 0 || (tr.WarmupRatio != nil && (*tr.WarmupRatio < 0 || *tr.WarmupRatio >= 1)) {
		return nil, fail("train", "epochs, batch_size ≥ 1; max_len in 2..512; eval_every ≥ 0; warmup_ratio in [0, 1)")
	}
	if tr.Quant != "nf4" && tr.Quant != "fp32" {
		return nil, fail("train.quant", "%q, want nf4 or fp32", tr.Quant)
	}
	if s.TrainersPerTrial > 1 && tr.BatchSize < s.TrainersPerTrial {
		return nil, fail("train.batch_size", "%d is smaller than trainers_per_trial %d", tr.BatchSize, s.TrainersPerTrial)
	}
	return s, nil
}

// GridSize is the number of points in the cartesian product of the space's lists.
func (s *SweepSpec) GridSize() int {
	sp := s.Space
	return len(sp.Rank) * len(sp.Alpha) * max(1, len(sp.LearningRate)) * len(sp.Dropout) * len(sp.TargetModules) * len(sp.Seed)
}

// Expand lists the sweep's trials, deterministically: grid search walks the
// cartesian product (rank slowest, seed fastest), truncated to Trials when
// set; random search draws Trials points with a PCG seeded by SearchSeed.
func (s *SweepSpec) Expand() []TrialSpec {
	sp := s.Space
	var out []TrialSpec
	add := func(t TrialSpec) {
		t.Index = len(out)
		t.Name = fmt.Sprintf("%s-t%03d", s.Name, t.Index)
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

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlError turns a YAML decoding error into a SpecError with its line.
func yamlError(file string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	line := 0
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &line)
		msg = strings.Replace(msg, m[0], "", 1)
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimSuffix(msg, " in type coordinator.SweepSpec")
	return &SpecError{File: file, Line: line, Msg: msg}
}

// lineOf finds the line of the key at path in a YAML document, or 0.
func lineOf(n *yaml.Node, path ...string) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return lineOf(n.Content[0], path...)
	}
	if len(path) == 0 || n.Kind != yaml.MappingNode {
		return n.Line
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == path[0] {
			if len(path) == 1 {
				return n.Content[i].Line
			}
			return lineOf(n.Content[i+1], path[1:]...)
		}
	}
	return 0
}

// Sweep is the sweep record to launch: the spec's trials (pending), its
// shared settings and the dataset's hash. specYAML is kept verbatim.
func (s *SweepSpec) Sweep(specYAML []byte, datasetSHA string, now time.Time) *pb.Sweep {
	tr := s.Train
	sw := &pb.Sweep{Name: s.Name, SpecYaml: specYAML, DatasetSha256: datasetSHA, CreatedUnixMs: now.UnixMilli(),
		TrainersPerTrial: int32(s.TrainersPerTrial), MaxConcurrent: int32(s.MaxConcurrent), Metric: s.Metric,
		Train: &pb.TrainSettings{Config: tr.Config, Weights: tr.Weights, Epochs: int32(tr.Epochs), BatchSize: int32(tr.BatchSize),
			MaxLen: int32(tr.MaxLen), EvalEvery: int32(tr.EvalEvery), Quant: tr.Quant, WarmupRatio: tr.WarmupRatio,
			CheckpointEvery: int32(tr.CheckpointEvery), SplitSeed: tr.SplitSeed, SplitRatios: tr.Split}}
	if es := s.EarlyStopping; es != nil {
		sw.EarlyStopping = &pb.EarlyStopping{Rule: es.Rule, GraceSteps: int64(es.GraceSteps), ReductionFactor: int32(es.ReductionFactor)}
	}
	for _, t := range s.Expand() {
		sw.Trials = append(sw.Trials, &pb.Trial{Name: t.Name, Index: int32(t.Index), Rank: int32(t.Rank), Alpha: t.Alpha,
			LearningRate: t.LearningRate, LoraDropout: t.Dropout, TargetModules: t.TargetModules, Seed: t.Seed})
	}
	return sw
}
