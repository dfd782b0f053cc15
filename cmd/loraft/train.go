package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/internal/progress"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/model/hub"
	"github.com/sugarme/gotch"
	"github.com/urfave/cli/v2"
)

// trainFlags are the training flags; rankFlag names the LoRA rank flag
// ("rank" for train; "lora-rank" for trainer, where --rank is the process rank).
func trainFlags(rankFlag string) []cli.Flag {
	d, l := trainer.DefaultHyper(), lora.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "base", Usage: "base model: an HF model directory, a hub id in the local HF cache (bert-base-uncased), or a weights file; never downloads"},
		&cli.PathFlag{Name: "weights", Usage: "HF model.safetensors or pytorch_model.bin of the base (bert-base-uncased layout); nothing is downloaded"},
		&cli.StringFlag{Name: "config", Usage: "tiny, base or a config.json (default: base with --weights, tiny without)"},
		&cli.Uint64Flag{Name: "init-seed", Value: 0, Usage: "seed of a random-init base (without --weights)"},
		&cli.IntFlag{Name: rankFlag, Value: l.Rank, Usage: "LoRA rank r"},
		&cli.Float64Flag{Name: "alpha", Value: l.Alpha, Usage: "LoRA alpha (scaling alpha/r; PEFT's default is 8)"},
		&cli.Float64Flag{Name: "lora-dropout", Value: l.Dropout, Usage: "dropout on the LoRA input (PEFT's default is 0)"},
		&cli.StringFlag{Name: "targets", Value: strings.Join(l.Targets, ","), Usage: "comma-separated target modules, or all-linear"},
		&cli.BoolFlag{Name: "rslora", Usage: "scale by alpha/√r (rsLoRA)"},
		&cli.IntFlag{Name: "epochs", Value: d.Epochs},
		&cli.IntFlag{Name: "batch-size", Value: d.BatchSize},
		&cli.IntFlag{Name: "grad-accum", Value: d.GradAccum, Usage: "micro-batches per optimizer step"},
		&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "peak learning rate (linear warmup, linear decay)"},
		&cli.Float64Flag{Name: "warmup-ratio", Value: d.WarmupRatio},
		&cli.Float64Flag{Name: "weight-decay", Value: d.WeightDecay},
		&cli.Float64Flag{Name: "max-grad-norm", Value: d.MaxGradNorm, Usage: "clip the global gradient norm (0: off)"},
		&cli.BoolFlag{Name: "class-weights", Usage: "weight the loss by inverse class frequency"},
		&cli.IntFlag{Name: "eval-every", Usage: "evaluate on the validation split every N steps (0: at the end)"},
		&cli.BoolFlag{Name: "bucket-by-length", Usage: "batch rows of similar token length together, so little compute goes to padding (the same batches for any number of ranks)"},
		&cli.BoolFlag{Name: "no-calibrate", Usage: "skip temperature scaling on the validation split"},
		&cli.StringFlag{Name: "quant", Value: string(model.NF4), Usage: "frozen base storage: nf4 or fp32"},
		&cli.StringFlag{Name: "compute-dtype", Value: "fp32", Usage: "fp32, bf16 (frozen base and activations; adapters, optimizer and loss stay fp32) or auto (bf16 on a GPU, or where a probe matmul shows bf16 pays)"},
		&cli.BoolFlag{Name: "grad-checkpoint", Usage: "keep only each encoder layer's input for backward and run the layer again there (NF4 weights dequantized again): far less memory for one more forward pass; same gradients"},
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N"},
		&cli.PathFlag{Name: "out", Required: true, Usage: "adapter directory to write"},
		&cli.StringFlag{Name: "run", Usage: "run name in the store (default: the --out directory's name)"},
		&cli.IntFlag{Name: "checkpoint-every", Value: 50, Usage: "checkpoint to --store every N steps (and at the end)"},
		&cli.BoolFlag{Name: "resume", Usage: "continue the run from its latest valid checkpoint in --store, with the settings it recorded"},
		&cli.IntFlag{Name: "keep-latest", Value: 3, Usage: "checkpoints kept by recency"},
		&cli.IntFlag{Name: "keep-best", Value: 1, Usage: "checkpoints kept by validation macro-F1 (under --coordinators: by the sweep's metric)"},
	}
}

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "fine-tune a LoRA adapter on one node (QLoRA: NF4 frozen base)",
		Description: "Trains LoRA adapters and the classifier head of a frozen BERT on the train split, evaluates\n" +
			"on validation and test, calibrates confidence by temperature scaling, and writes a PEFT-compatible\n" +
			"adapter directory.\n\n" + disclaimer,
		Flags:  append(append(datasetFlags(), trainFlags("rank")...), storeFlags()...),
		Action: func(c *cli.Context) error { return runTrain(c, nil) },
	}
}

// dataParallel wires a trainer into a ring of ranks (nil: train alone).
type dataParallel struct {
	rank, world int
	reducer     trainer.Reducer
}

// runTrain is `loraft train`, and each rank of `loraft trainer`.
func runTrain(c *cli.Context, dp *dataParallel) error {
	if _, err := libtorch.SetThreads(); err != nil {
		return err
	}
	h := trainer.DefaultHyper()
	h.Epochs, h.BatchSize, h.GradAccum = c.Int("epochs"), c.Int("batch-size"), c.Int("grad-accum")
	h.LR, h.WarmupRatio, h.WeightDecay, h.MaxGradNorm = c.Float64("lr"), c.Float64("warmup-ratio"), c.Float64("weight-decay"), c.Float64("max-grad-norm")
	h.ClassWeights, h.Seed, h.EvalEvery, h.Calibrate = c.Bool("class-weights"), c.Uint64("seed"), c.Int("eval-every"), !c.Bool("no-calibrate")
	h.BucketByLength = c.Bool("bucket-by-length")
	if err := h.Validate(); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	rankFlag := "rank"
	if dp != nil {
		rankFlag = "lora-rank"
	}
	lc := lora.Config{Rank: c.Int(rankFlag), Alpha: c.Float64("alpha"), Dropout: c.Float64("lora-dropout"),
		Targets: lora.ParseTargets(c.String("targets")), RSLoRA: c.Bool("rslora")}
	if err := lc.Validate(); err != nil {
		return fmt.Errorf("flags --rank/--alpha/--lora-dropout/--targets: %w", err)
	}
	device, err := trainer.ParseDevice(c.String("device"))
	if err != nil {
		return fmt.Errorf("flag --device: %w", err)
	}
	if err := resolveCompute(c, device); err != nil {
		return err
	}
	base, err := baseFromFlags(c)
	if err != nil {
		return err
	}
	store, err := openStore(c, c.Bool("resume"))
	if err != nil {
		return err
	}
	run := c.String("run")
	if run == "" {
		run = filepath.Base(filepath.Clean(c.Path("out")))
	}
	if store != nil {
		if err := checkpoint.ValidateRun(run); err != nil {
			return fmt.Errorf("flag --run: %w", err)
		}
	}
	d, err := loadData(c)
	if err != nil {
		return err
	}
	vocab, err := vocabBytes(c)
	if err != nil {
		return err
	}
	if d.tok.VocabSize() > base.Config.VocabSize {
		return fmt.Errorf("vocabulary %s has %d tokens, the model's vocab_size is %d", d.tok.Name(), d.tok.VocabSize(), base.Config.VocabSize)
	}
	var bar *progress.Bar
	// Notices go above the progress bar once it is up, to stderr before.
	warn := func(msg string) {
		if bar != nil {
			bar.Note(msg)
			return
		}
		fmt.Fprintln(c.App.ErrWriter, msg)
	}
	job := trainer.Job{Run: run, Base: base, LoRA: lc, Hyper: h,
		Data:      &trainer.Data{DS: d.ds, Split: d.split, Tokens: d.tokens, PadID: d.tok.PadID()},
		Tokenizer: trainer.Tokenizer{VocabSHA256: d.tok.VocabSHA256(), MaxLen: c.Int("max-len"), LowerCase: d.tok.LowerCase()},
		Vocab:     vocab, Device: device, Recompute: c.Bool("grad-checkpoint"), Store: store, CheckpointEvery: c.Int("checkpoint-every"),
		ResumeLatest: c.Bool("resume"), Warn: warn,
		Built: func(m *model.Model, man trainer.Manifest) {
			base, h := man.Base, man.Hyper
			fmt.Fprintf(c.App.ErrWriter, "model: %d layers × %d, base %s %.1f MB (%.2f bits/param), %d trainable parameters, %s on %s\n",
				base.Config.NumLayers, base.Config.HiddenSize, base.Quant, float64(m.BaseBytes())/1e6,
				8*float64(m.BaseBytes())/float64(m.BaseParams()), trainableCount(m), base.Compute, c.String("device"))
			bar = progress.New("train", "steps", shard.StepsPerEpoch(len(d.split.Train), h.BatchSize*h.GradAccum)*h.Epochs)
		},
		Progress: func(p trainer.Progress) {
			if p.Loss != 0 {
				bar.Describe(fmt.Sprintf("train loss %.4f", p.Loss))
			}
			bar.Set(p.Step)
			if p.Eval != nil && p.Step < p.Steps {
				bar.Note(fmt.Sprintf("step %d: val macro-F1 %.4f, accuracy %.4f", p.Step, p.Eval.MacroF1, p.Eval.Accuracy))
			}
		},
		SaveFailed: func(step int, err error) {
			warn(fmt.Sprintf("warning: checkpoint at step %d not written yet (retrying; training goes on): %v", step, err))
		},
	}
	if store != nil {
		job.Retention = retentionFlags(c)
	}
	if dp != nil {
		job.Rank, job.World, job.Reducer = dp.rank, dp.world, dp.reducer
	}
	m, man, res, err := trainer.RunJob(c.Context, job)
	if err != nil {
		return err
	}
	defer m.Drop()
	bar.Finish()
	if err := trainer.SaveAdapter(c.Path("out"), m, man, res, vocab); err != nil {
		return err
	}
	printReports(c.App.Writer, res.Val, res.Test)
	fmt.Fprintf(c.App.Writer, "\nadapter written to %s (temperature %.3f)\n%s\n", c.Path("out"), res.Temperature, disclaimer)
	return nil
}

// retentionFlags is the checkpoint retention of --keep-latest and
// --keep-best, ranking by the default metric.
func retentionFlags(c *cli.Context) checkpoint.Retention {
	return checkpoint.Retention{KeepLatest: c.Int("keep-latest"), KeepBest: c.Int("keep-best"), Metric: metrics.DefaultSelection, Grace: time.Hour}
}

// resolveCompute checks --compute-dtype and replaces auto with the dtype its
// probe picks (trainer.ResolveCompute), logging why.
func resolveCompute(c *cli.Context, device gotch.Device) error {
	flag := c.String("compute-dtype")
	p, err := trainer.ResolveCompute(c.Context, flag, device)
	if err != nil {
		return fmt.Errorf("flag --compute-dtype: %w", err)
	}
	if flag == "auto" {
		slog.Info("compute dtype chosen", "compute_dtype", p.Compute, "probe_fp32_gflops", round1(p.FP32GFLOPS),
			"probe_bf16_gflops", round1(p.BF16GFLOPS), "device", c.String("device"))
	}
	return c.Set("compute-dtype", p.Compute)
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// baseFromFlags is the frozen base of --base or --config and --weights,
// --init-seed, --quant and --compute-dtype; the config resolves as a sweep's
// does on a trainer (model.ResolveConfig).
func baseFromFlags(c *cli.Context) (trainer.Base, error) {
	hb, err := baseFlag(c)
	if err != nil {
		return trainer.Base{}, err
	}
	weights, cfgSpec := c.Path("weights"), c.String("config")
	if hb != nil {
		weights = hb.Weights
		if cfgSpec == "" {
			cfgSpec = hb.Config // "" for a lone weights file: base, as for --weights
		}
	}
	cfgName, cfg, err := model.ResolveConfig(cfgSpec, weights != "")
	if err != nil {
		return trainer.Base{}, fmt.Errorf("flag --config: %w", err)
	}
	if hb != nil {
		cfg.NameOrPath = hb.Name // the hub id, config.json's _name_or_path or the path
	}
	q := model.Quant(c.String("quant"))
	if q != model.NF4 && q != model.Dense {
		return trainer.Base{}, fmt.Errorf("flag --quant: %q, want nf4 or fp32", q)
	}
	b := trainer.Base{ConfigName: cfgName, Config: cfg, InitSeed: c.Uint64("init-seed"), Quant: q, Compute: c.String("compute-dtype")}
	if weights != "" {
		abs, err := filepath.Abs(weights)
		if err != nil {
			return b, fmt.Errorf("flag --weights: %w", err)
		}
		if b.WeightsSHA256, err = trainer.FileSHA256(abs); err != nil {
			return b, fmt.Errorf("flag --weights: %w", err)
		}
		b.Weights = abs
	}
	return b, nil
}

// baseFlag resolves --base offline (nil without it).
func baseFlag(c *cli.Context) (*hub.Base, error) {
	spec := c.String("base")
	if spec == "" {
		return nil, nil
	}
	if c.Path("weights") != "" {
		return nil, errors.New("flags --base and --weights: give one")
	}
	b, err := hub.Resolve(spec)
	if err != nil {
		return nil, fmt.Errorf("flag --base: %w", err)
	}
	return &b, nil
}

// vocabFlags is the vocab.txt of --vocab, else of --base ("": bert-base-uncased's,
// embedded), and --base's do_lower_case (true without --base).
func vocabFlags(c *cli.Context) (string, bool, error) {
	hb, err := baseFlag(c)
	if err != nil || hb == nil {
		return c.Path("vocab"), true, err
	}
	lower, err := hb.LowerCase()
	if err != nil {
		return "", false, fmt.Errorf("flag --base: %w", err)
	}
	if p := c.Path("vocab"); p != "" {
		return p, lower, nil
	}
	return hb.Vocab, lower, nil
}

func vocabBytes(c *cli.Context) ([]byte, error) {
	p, _, err := vocabFlags(c)
	if err != nil {
		return nil, err
	}
	if p != "" {
		return os.ReadFile(p)
	}
	return wordpiece.BertBaseUncasedVocab(), nil
}

func trainableCount(m *model.Model) int64 {
	var n int64
	for _, p := range m.Params() {
		n += int64(p.T.Numel())
	}
	return n
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func printReports(w io.Writer, val, test metrics.Report) {
	for _, r := range []struct {
		name string
		rep  metrics.Report
	}{{"validation", val}, {"test", test}} {
		if r.rep.N == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%d rows, temperature %.3f)\n%s\n%s", r.name, r.rep.N, r.rep.Temperature, r.rep.Table(), r.rep.ConfusionTable())
	}
}

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate an adapter on a dataset (its test split when it is the training file, else every row)",
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "adapter", Required: true},
			&cli.PathFlag{Name: "data", Required: true},
			&cli.PathFlag{Name: "weights", Usage: "base model.safetensors (default: the path the adapter recorded)"},
			&cli.StringFlag{Name: "device", Value: "cpu"},
			&cli.BoolFlag{Name: "drop-bad", Usage: "drop rows with an unknown label or malformed CSV"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			m, man, tok, err := openAdapter(c)
			if err != nil {
				return err
			}
			defer m.Drop()
			ds, err := shard.ReadFile(c.Path("data"), shard.Options{DropBad: c.Bool("drop-bad")})
			if err != nil {
				return err
			}
			tokens, err := shard.Tokenize(c.Context, ds, tok, man.Tokenizer.MaxLen, nil)
			if err != nil {
				return err
			}
			rows, part := make([]int, len(ds.Rows)), "all rows"
			for i := range rows {
				rows[i] = i
			}
			if ds.SHA256 == man.Split.DatasetSHA256 {
				sp, err := shard.NewSplit(ds, man.Split.Seed, man.Split.Ratios)
				if err != nil {
					return err
				}
				rows, part = sp.Test, "the test split it was trained with"
			}
			data := &trainer.Data{DS: ds, Tokens: tokens, PadID: tok.PadID()}
			rep, _, err := trainer.Evaluate(c.Context, m, data, rows, 64, man.Temperature)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Fprintf(c.App.Writer, "%s: %s (%d rows), temperature %.3f\n%s\n%s\n%s\n", ds.Name, part, rep.N, rep.Temperature, rep.Table(), rep.ConfusionTable(), disclaimer)
			return nil
		},
	}
}

func predictCommand() *cli.Command {
	return &cli.Command{
		Name:      "predict",
		Usage:     "classify statements with an adapter: label and calibrated confidence",
		ArgsUsage: "[-]  (read statements from stdin, one per line)",
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "adapter", Required: true},
			&cli.StringSliceFlag{Name: "text", Usage: "a statement to classify (repeatable)"},
			&cli.PathFlag{Name: "input", Usage: "file with one statement per line"},
			&cli.PathFlag{Name: "weights", Usage: "base model.safetensors (default: the path the adapter recorded)"},
			&cli.StringFlag{Name: "device", Value: "cpu"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON lines with every class probability"},
		},
		Action: func(c *cli.Context) error {
			texts, err := predictInputs(c)
			if err != nil {
				return err
			}
			m, man, tok, err := openAdapter(c)
			if err != nil {
				return err
			}
			defer m.Drop()
			preds, err := trainer.Predict(c.Context, m, tok, man, texts)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(c.App.Writer)
			for i, p := range preds {
				if c.Bool("json") {
					if err := enc.Encode(p); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(c.App.Writer, "%-20s %.3f  %s\n", p.Label, p.Confidence, oneLine(texts[i], 60))
			}
			if !c.Bool("json") {
				if man.Base.Weights == "" {
					fmt.Fprintln(c.App.ErrWriter, "note: this adapter sits on a random-init base model (a demo): its predictions carry little meaning")
				}
				fmt.Fprintf(c.App.ErrWriter, "%s\n", disclaimer)
			}
			return nil
		},
	}
}

func predictInputs(c *cli.Context) ([]string, error) {
	texts := c.StringSlice("text")
	readLines := func(r io.Reader, name string) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			if s := strings.TrimSpace(sc.Text()); s != "" {
				texts = append(texts, s)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		return nil
	}
	if p := c.Path("input"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("flag --input: %w", err)
		}
		defer f.Close()
		if err := readLines(f, p); err != nil {
			return nil, err
		}
	}
	if c.Args().First() == "-" {
		if err := readLines(os.Stdin, "standard input"); err != nil {
			return nil, err
		}
	}
	if len(texts) == 0 {
		return nil, errors.New("nothing to classify: give --text, --input FILE or - for standard input")
	}
	return texts, nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// openAdapter rebuilds the model of --adapter (on --device, with --weights
// when given) and its tokenizer, for eval and predict.
func openAdapter(c *cli.Context) (*model.Model, trainer.Manifest, *wordpiece.Tokenizer, error) {
	device, err := trainer.ParseDevice(c.String("device"))
	if err != nil {
		return nil, trainer.Manifest{}, nil, fmt.Errorf("flag --device: %w", err)
	}
	return loadAdapter(c.Path("adapter"), c.Path("weights"), device)
}

// loadAdapter rebuilds an adapter directory's model (with weightsPath when
// given, else the weights it recorded) and its tokenizer.
func loadAdapter(dir, weightsPath string, device gotch.Device) (*model.Model, trainer.Manifest, *wordpiece.Tokenizer, error) {
	if _, err := libtorch.SetThreads(); err != nil {
		return nil, trainer.Manifest{}, nil, err
	}
	m, man, err := trainer.OpenAdapter(dir, weightsPath, device)
	if err != nil {
		return nil, man, nil, err
	}
	tok, err := wordpiece.Load(filepath.Join(dir, trainer.VocabFile))
	if err != nil {
		m.Drop()
		return nil, man, nil, err
	}
	return m, man, tok.WithLowerCase(man.Tokenizer.LowerCase), nil
}
