package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/chart"
	"github.com/loraft/loraft/internal/localcluster"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/sugarme/gotch"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultExamples are classified by the best adapter at the end of `loraft local`.
var defaultExamples = []string{
	"i have not slept in three days and my thoughts are racing, i just bought a car on impulse",
	"exams next week and my boss wants the report by friday, i am so overwhelmed",
	"my chest gets tight and i cant stop worrying something bad will happen",
	"made pancakes this morning and went for a walk in the park",
}

func localCommand() *cli.Command {
	return &cli.Command{
		Name:  "local",
		Usage: "the whole system on this machine: 3 raft coordinators, N trainers and a store, running a sweep end to end",
		Description: "Starts three coordinators (in this process) and --trainers trainer processes on loopback ports,\n" +
			"launches --spec on --data, shows live progress, prints the results, pulls the best adapter to\n" +
			"--out and classifies a few statements with it. Everything lives in --state-dir: kill loraft local\n" +
			"and start it again with the same state directory, and the sweep resumes where it was.\n\n" + disclaimer,
		Flags: append([]cli.Flag{
			&cli.PathFlag{Name: "spec", Value: "experiments/demo.yaml", Usage: "sweep spec (YAML)"},
			&cli.PathFlag{Name: "data", Value: "experiments/data/demo.csv", Usage: "dataset CSV in the Kaggle layout"},
			&cli.IntFlag{Name: "trainers", Value: 2, Usage: "trainer processes to start"},
			&cli.PathFlag{Name: "state-dir", Value: ".loraft-local", Usage: "raft data, store (unless --store), logs and ports of this local cluster"},
			&cli.PathFlag{Name: "out", Value: "out/best", Usage: "where the best adapter is written"},
			&cli.PathFlag{Name: "report", Usage: "also write the sweep report (JSON for `loraft plot`) here"},
			&cli.StringSliceFlag{Name: "text", Usage: "statements to classify with the best adapter (default: four examples)"},
			&cli.StringFlag{Name: "raft-profile", Value: "lan", Usage: "raft timeouts: default (hashicorp/raft's) or lan (150 ms, for loopback)"},
			&cli.DurationFlag{Name: "lease", Value: 3 * time.Second, Usage: "trainer lease"},
			&cli.PathFlag{Name: "http-tokens-file", Usage: "dashboard tokens ('<role> <sha256-of-token>' lines, made with loraft certs token): a viewer token signs a browser in read-only; without one a loopback browser is an operator"},
		}, storeFlags()...),
		Action: runLocal,
	}
}

func runLocal(c *cli.Context) error {
	ctx := c.Context
	w, ew := c.App.Writer, c.App.ErrWriter
	n := c.Int("trainers")
	if n < 1 || n > 64 {
		return fmt.Errorf("flag --trainers: %d, want 1..64", n)
	}
	stateDir, err := filepath.Abs(c.Path("state-dir"))
	if err != nil {
		return fmt.Errorf("flag --state-dir: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("flag --state-dir: %w", err)
	}
	storeSpec := c.String("store")
	if storeSpec == "" {
		storeSpec = filepath.Join(stateDir, "store")
		if err := c.Set("store", storeSpec); err != nil {
			return err
		}
	}
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	timing, err := coordinator.Profile(c.String("raft-profile"))
	if err != nil {
		return fmt.Errorf("flag --raft-profile: %w", err)
	}
	var tokens *dashboard.Tokens
	if p := c.Path("http-tokens-file"); p != "" {
		if tokens, err = dashboard.LoadTokens(p); err != nil {
			return fmt.Errorf("flag --http-tokens-file: %w", err)
		}
	}
	lc, err := localcluster.Start(ctx, localcluster.Config{StateDir: stateDir, Trainers: n, Store: storeSpec, Raft: timing, Lease: c.Duration("lease"),
		Tokens: tokens})
	if err != nil {
		return err
	}
	defer lc.Close()
	fmt.Fprintf(ew, "local: 3 coordinators on %s (raft profile %s), %d trainer processes (logs in %s), store %s, state in %s\n",
		strings.Join(lc.Ports.API, ","), c.String("raft-profile"), n, lc.Logs, store, stateDir)
	fmt.Fprintf(ew, "dashboard: %s\n", lc.DashboardURL())
	cl, err := coordinator.NewClient(lc.Ports.API)
	if err != nil {
		return err
	}
	defer cl.Close()

	sw, err := launchSweep(ctx, cl, store, c.Path("spec"), c.Path("data"), ew)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := watchSweep(ctx, cl, sw.GetName(), ew, time.Second); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: run the same command again to resume sweep %s from its checkpoints (state in %s)", sw.GetName(), stateDir)
		}
		return err
	}
	st, err := cl.Sweep(ctx, sw.GetName())
	if err != nil {
		return err
	}
	if took := time.Since(start).Round(time.Second); st.GetSweep().GetCancelled() {
		fmt.Fprintf(w, "\nsweep %s was cancelled after %s (from the dashboard or loraft sweep cancel)\n", sw.GetName(), took)
	} else {
		fmt.Fprintf(w, "\nsweep %s finished in %s\n", sw.GetName(), took)
	}
	if err := printResults(w, st.GetSweep()); err != nil {
		return err
	}
	if p := c.Path("report"); p != "" {
		rep, err := sweepReport(ctx, store, st.GetSweep())
		if err != nil {
			return err
		}
		if err := chart.WriteReport(p, rep); err != nil {
			return err
		}
		fmt.Fprintf(w, "sweep report written to %s (draw it with `loraft plot --report %s --out DIR`)\n", p, p)
	}
	return pullAndPredict(ctx, c, cl, store, st.GetSweep())
}

// printResults is the end-of-sweep table.
func printResults(w io.Writer, sw *pb.Sweep) error {
	trials := slices.Clone(sw.GetTrials())
	slices.SortStableFunc(trials, func(a, b *pb.Trial) int {
		switch {
		case a.GetBestMetric() > b.GetBestMetric():
			return -1
		case a.GetBestMetric() < b.GetBestMetric():
			return 1
		}
		return 0
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "trial\trank\talpha\tstate\tbest val macro-F1\tfinal val macro-F1\tval accuracy\ttest macro-F1\twall time")
	for _, t := range trials {
		r := t.GetResult()
		best := "-"
		if t.GetHasMetric() {
			best = fmt.Sprintf("%.4f", t.GetBestMetric())
		}
		final, acc, test, wall := "-", "-", "-", "-"
		if r != nil {
			final, acc, test = fmt.Sprintf("%.4f", r.GetValMacroF1()), fmt.Sprintf("%.4f", r.GetValAccuracy()), fmt.Sprintf("%.4f", r.GetTestMacroF1())
			ms := r.GetWallMs()
			if t.GetRunningMs() > 0 {
				ms = t.GetRunningMs() // every attempt, not only the last
			}
			wall = (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%g\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetRank(), t.GetAlpha(), strings.TrimPrefix(t.GetState().String(), "TRIAL_STATE_"), best, final, acc, test, wall)
	}
	return tw.Flush()
}

// pullAndPredict writes the sweep's best adapter to --out and classifies the examples with it.
func pullAndPredict(ctx context.Context, c *cli.Context, cl *coordinator.Client, store checkpoint.Store, sw *pb.Sweep) error {
	w := c.App.Writer
	best, err := cl.BestTrial(ctx, sw.GetName())
	if status.Code(err) == codes.NotFound && sw.GetCancelled() {
		return fmt.Errorf("sweep %s was cancelled before any trial reported a metric: there is no adapter to pull", sw.GetName())
	}
	if err != nil {
		return fmt.Errorf("best trial of sweep %s: %w", sw.GetName(), err)
	}
	metric := sw.GetMetric()
	if metric == "" {
		metric = metrics.DefaultSelection
	}
	ck, err := checkpoint.Best(ctx, store, []string{best.GetName()}, metric, func(err error) { fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", err) })
	if err != nil {
		return err
	}
	files, err := checkpoint.Load(ctx, store, *ck)
	if err != nil {
		return err
	}
	out := c.Path("out")
	if err := trainer.WriteAdapterFromCheckpoint(files, ck.Run, ck.Step, out); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nbest: %s (rank %d, alpha %g), step %d, val %s %.4f → adapter in %s\n", best.GetName(), best.GetRank(), best.GetAlpha(), ck.Step,
		strings.ReplaceAll(metric, "_", "-"), ck.Manifest.Metrics[metric], out)
	texts := c.StringSlice("text")
	if len(texts) == 0 {
		texts = defaultExamples
	}
	m, man, tok, err := loadAdapter(out, "", gotch.CPU)
	if err != nil {
		return err
	}
	defer m.Drop()
	preds, err := trainer.Predict(ctx, m, tok, man, texts)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\npredictions (label, calibrated confidence):")
	for i, p := range preds {
		fmt.Fprintf(w, "  %-20s %.3f  %s\n", p.Label, p.Confidence, oneLine(texts[i], 70))
	}
	if man.Base.Weights == "" {
		fmt.Fprintln(w, "note: a random-init base model (no pretrained weights here): the predictions show the pipeline, not a useful classifier")
	}
	fmt.Fprintln(w, disclaimer)
	return nil
}

// sweepReport is the report `loraft plot` draws, with each run's curves
// from its latest checkpoint in store.
func sweepReport(ctx context.Context, store checkpoint.Store, sw *pb.Sweep) (*chart.Report, error) {
	return chart.FromSweep(ctx, sw, func(ctx context.Context, run, metric string) (loss, eval []chart.Point, err error) {
		_, files, err := checkpoint.LoadLatest(ctx, store, run, nil)
		if errors.Is(err, checkpoint.ErrNoCheckpoint) {
			return nil, nil, nil
		} else if err != nil {
			return nil, nil, err
		}
		st, _, err := trainer.StateFromFiles(files)
		if err != nil {
			return nil, nil, err
		}
		for i, l := range st.Losses {
			loss = append(loss, chart.Point{Step: i + 1, Value: l})
		}
		for _, h := range st.History {
			v, _ := h.Report.Metric(metric)
			eval = append(eval, chart.Point{Step: h.Step, Value: v})
		}
		return loss, eval, nil
	})
}
