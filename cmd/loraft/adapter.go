package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/urfave/cli/v2"
)

func adapterCommand() *cli.Command {
	return &cli.Command{
		Name:        "adapter",
		Usage:       "list checkpointed runs and pull adapters out of the store",
		Subcommands: []*cli.Command{adapterLsCommand(), adapterPullCommand()},
	}
}

func adapterLsCommand() *cli.Command {
	return &cli.Command{
		Name:   "ls",
		Usage:  "runs in the store with their checkpoints and best validation macro-F1",
		Flags:  append(storeFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: adapterLs,
	}
}

func adapterPullCommand() *cli.Command {
	return &cli.Command{
		Name:  "pull",
		Usage: "write a PEFT adapter directory (with model card) from a checkpoint: the best by a metric, or a run's latest",
		Flags: append(append(storeFlags(), tlsFlags()...),
			&cli.BoolFlag{Name: "best", Usage: "the checkpoint with the highest --metric"},
			&cli.StringFlag{Name: "run", Usage: "only this run"},
			&cli.StringFlag{Name: "sweep", Usage: "only the trials of this sweep"},
			&cli.StringFlag{Name: "metric", Usage: "validation metric for --best: macro_f1, accuracy or weighted_f1 (default: the sweep's with --sweep, else macro_f1)"},
			&cli.PathFlag{Name: "out", Required: true, Usage: "directory to write"},
			&cli.StringFlag{Name: "coordinators", EnvVars: []string{"LORAFT_COORDINATORS"},
				Usage: "with --best --sweep: ask the coordinators which trial is best (else every trial of the sweep in the store is compared)"},
			insecureFlag(),
		),
		Action: adapterPull,
	}
}

// adapterRow is one run as `adapter ls` prints it.
type adapterRow struct {
	Run         string             `json:"run"`
	Checkpoints int                `json:"checkpoints"`
	Steps       []int              `json:"steps"`
	Latest      int                `json:"latest_step"`
	Metrics     map[string]float64 `json:"latest_metrics,omitempty"`
	BestStep    int                `json:"best_step"`
	BestMacroF1 float64            `json:"best_macro_f1"`
}

// adapterLs is `loraft adapter ls`.
func adapterLs(c *cli.Context) error {
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	rows, err := adapterRows(c.Context, store)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, rows)
	}
	return printAdapterRows(c.App.Writer, rows)
}

// adapterRows lists every run of the store with committed checkpoints.
func adapterRows(ctx context.Context, store checkpoint.Store) ([]adapterRow, error) {
	runs, err := checkpoint.Runs(ctx, store)
	if err != nil {
		return nil, err
	}
	var rows []adapterRow
	for _, r := range runs {
		cks, err := checkpoint.List(ctx, store, r, nil)
		if err != nil {
			return nil, err
		}
		if len(cks) == 0 {
			continue
		}
		rw := adapterRow{Run: r, Checkpoints: len(cks), Latest: cks[len(cks)-1].Step, Metrics: cks[len(cks)-1].Manifest.Metrics, BestStep: -1}
		for _, ck := range cks {
			rw.Steps = append(rw.Steps, ck.Step)
			if v, ok := ck.Manifest.Metrics[metrics.MacroF1]; ok && (rw.BestStep < 0 || v > rw.BestMacroF1) {
				rw.BestStep, rw.BestMacroF1 = ck.Step, v
			}
		}
		rows = append(rows, rw)
	}
	return rows, nil
}

func printAdapterRows(w io.Writer, rows []adapterRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tcheckpoints\tlatest step\tbest step\tbest val macro-F1")
	for _, r := range rows {
		best := "-"
		if r.BestStep >= 0 {
			best = fmt.Sprintf("%.4f", r.BestMacroF1)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.Run, r.Checkpoints, r.Latest, r.BestStep, best)
	}
	return tw.Flush()
}

// adapterPull is `loraft adapter pull`: choose the candidate runs, then
// their checkpoint (the best, or the latest of one run), then write it.
func adapterPull(c *cli.Context) error {
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	runs, metric, err := pullCandidates(c, store)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return fmt.Errorf("no runs in %s match", store)
	}
	ck, files, err := pullCheckpoint(c, store, runs, metric)
	if err != nil {
		return err
	}
	if err := trainer.WriteAdapterFromCheckpoint(files, ck.Run, ck.Step, c.Path("out")); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "pulled run %s step %d (%s %.4f) to %s\n%s\n", ck.Run, ck.Step, metric,
		ck.Manifest.Metrics[metric], c.Path("out"), disclaimer)
	return nil
}

// pullCandidates are the runs `adapter pull` chooses among and the metric
// it ranks them by: --run alone; with --best --sweep and --coordinators, the
// trial the coordinators rank best; with --sweep, the sweep's trials in the
// store; else every run of the store.
func pullCandidates(c *cli.Context, store checkpoint.Store) (runs []string, metric string, err error) {
	metric, sweep := c.String("metric"), c.String("sweep")
	if metric != "" {
		if metric, err = metrics.ParseSelection(metric); err != nil {
			return nil, "", fmt.Errorf("flag --metric: %w", err)
		}
	}
	switch {
	case c.String("run") != "":
		runs = []string{c.String("run")}
	case sweep != "" && c.Bool("best") && c.String("coordinators") != "":
		run, sweepMetric, err := bestTrialFromCoordinators(c, sweep)
		if err != nil {
			return nil, "", err
		}
		runs, metric = []string{run}, cmp.Or(metric, sweepMetric)
	case sweep != "":
		trials, sweepMetric, err := sweepTrialsInStore(c.Context, store, sweep)
		if err != nil {
			return nil, "", err
		}
		all, err := checkpoint.Runs(c.Context, store)
		if err != nil {
			return nil, "", err
		}
		for _, r := range all {
			if slices.Contains(trials, r) {
				runs = append(runs, r)
			}
		}
		metric = cmp.Or(metric, sweepMetric)
	default:
		if runs, err = checkpoint.Runs(c.Context, store); err != nil {
			return nil, "", err
		}
	}
	return runs, cmp.Or(metric, metrics.DefaultSelection), nil
}

// bestTrialFromCoordinators asks the coordinators for the sweep's best trial
// and the metric it was ranked by.
func bestTrialFromCoordinators(c *cli.Context, sweep string) (run, metric string, err error) {
	cl, err := dialCoordinators(c)
	if err != nil {
		return "", "", err
	}
	defer cl.Close()
	st, err := cl.Sweep(c.Context, sweep)
	if err != nil {
		return "", "", fmt.Errorf("sweep %s: %w", sweep, err)
	}
	t, err := cl.BestTrial(c.Context, sweep)
	if err != nil {
		return "", "", fmt.Errorf("best trial of sweep %s: %w", sweep, err)
	}
	metric = st.GetSweep().GetMetric()
	fmt.Fprintf(c.App.ErrWriter, "sweep %s: best trial %s (rank %d, alpha %g, %s %.4f)\n", sweep, t.GetName(), t.GetRank(), t.GetAlpha(),
		cmp.Or(metric, metrics.DefaultSelection), t.GetBestMetric())
	return t.GetName(), metric, nil
}

// sweepTrialsInStore is the sweep's own trial list and metric, from the
// record `sweep launch` left in the store. A store without one (a sweep
// launched before records existed) gives the runs whose names are the
// sweep's trial names (coordinator.TrialSweep), never those of another
// sweep whose name merely starts the same ("demo" is not "demo-2").
func sweepTrialsInStore(ctx context.Context, store checkpoint.Store, sweep string) (trials []string, metric string, err error) {
	rec, err := checkpoint.GetSweep(ctx, store, sweep)
	if err == nil {
		return rec.Trials, rec.Metric, nil
	}
	if !errors.Is(err, checkpoint.ErrNotFound) {
		return nil, "", err
	}
	runs, err := checkpoint.Runs(ctx, store)
	if err != nil {
		return nil, "", err
	}
	for _, r := range runs {
		if s, ok := coordinator.TrialSweep(r); ok && s == sweep {
			trials = append(trials, r)
		}
	}
	return trials, "", nil
}

// pullCheckpoint loads the checkpoint to pull: with --best the best of runs
// by metric, else the latest of the one run.
func pullCheckpoint(c *cli.Context, store checkpoint.Store, runs []string, metric string) (*checkpoint.Checkpoint, map[string][]byte, error) {
	warn := func(err error) { fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", err) }
	if !c.Bool("best") {
		if len(runs) != 1 {
			return nil, nil, errors.New("give --run R for its latest checkpoint, or --best")
		}
		return checkpoint.LoadLatest(c.Context, store, runs[0], warn)
	}
	ck, err := checkpoint.Best(c.Context, store, runs, metric, warn)
	if err != nil {
		return nil, nil, err
	}
	files, err := checkpoint.Load(c.Context, store, *ck)
	if err != nil {
		return nil, nil, err
	}
	return ck, files, nil
}
