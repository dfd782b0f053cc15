package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/trainer"
	"github.com/urfave/cli/v2"
)

func adapterCommand() *cli.Command {
	return &cli.Command{
		Name:  "adapter",
		Usage: "list checkpointed runs and pull adapters out of the store",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "runs in the store with their checkpoints and best validation macro-F1",
				Flags: append(storeFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action: func(c *cli.Context) error {
					store, err := openStore(c, true)
					if err != nil {
						return err
					}
					runs, err := checkpoint.Runs(c.Context, store)
					if err != nil {
						return err
					}
					type row struct {
						Run         string             `json:"run"`
						Checkpoints int                `json:"checkpoints"`
						Steps       []int              `json:"steps"`
						Latest      int                `json:"latest_step"`
						Metrics     map[string]float64 `json:"latest_metrics,omitempty"`
						BestStep    int                `json:"best_step"`
						BestMacroF1 float64            `json:"best_macro_f1"`
					}
					var rows []row
					for _, r := range runs {
						cks, err := checkpoint.List(c.Context, store, r, nil)
						if err != nil {
							return err
						}
						if len(cks) == 0 {
							continue
						}
						rw := row{Run: r, Checkpoints: len(cks), Latest: cks[len(cks)-1].Step, Metrics: cks[len(cks)-1].Manifest.Metrics, BestStep: -1}
						for _, ck := range cks {
							rw.Steps = append(rw.Steps, ck.Step)
							if v, ok := ck.Manifest.Metrics["macro_f1"]; ok && (rw.BestStep < 0 || v > rw.BestMacroF1) {
								rw.BestStep, rw.BestMacroF1 = ck.Step, v
							}
						}
						rows = append(rows, rw)
					}
					if c.Bool("json") {
						enc := json.NewEncoder(c.App.Writer)
						enc.SetIndent("", "  ")
						return enc.Encode(rows)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "run\tcheckpoints\tlatest step\tbest step\tbest val macro-F1")
					for _, r := range rows {
						best := "-"
						if r.BestStep >= 0 {
							best = fmt.Sprintf("%.4f", r.BestMacroF1)
						}
						fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.Run, r.Checkpoints, r.Latest, r.BestStep, best)
					}
					return tw.Flush()
				},
			},
			{
				Name:  "pull",
				Usage: "write a PEFT adapter directory (with model card) from a checkpoint: the best by a metric, or a run's latest",
				Flags: append(append(storeFlags(), tlsFlags()...),
					&cli.BoolFlag{Name: "best", Usage: "the checkpoint with the highest --metric"},
					&cli.StringFlag{Name: "run", Usage: "only this run"},
					&cli.StringFlag{Name: "sweep", Usage: "only runs of this sweep (named <sweep>-…)"},
					&cli.StringFlag{Name: "metric", Value: "macro_f1", Usage: "validation metric for --best"},
					&cli.PathFlag{Name: "out", Required: true, Usage: "directory to write"},
					&cli.StringFlag{Name: "coordinators", EnvVars: []string{"LORAFT_COORDINATORS"},
						Usage: "with --best --sweep: ask the coordinators which trial is best (else every run of the sweep in the store is compared)"},
				),
				Action: func(c *cli.Context) error {
					store, err := openStore(c, true)
					if err != nil {
						return err
					}
					warn := func(err error) { fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", err) }
					runs, err := checkpoint.Runs(c.Context, store)
					if err != nil {
						return err
					}
					if r := c.String("run"); r != "" {
						runs = []string{r}
					} else if sw := c.String("sweep"); sw != "" && c.Bool("best") && c.String("coordinators") != "" {
						cl, err := dialCoordinators(c)
						if err != nil {
							return err
						}
						defer cl.Close()
						t, err := cl.BestTrial(c.Context, sw)
						if err != nil {
							return fmt.Errorf("best trial of sweep %s: %w", sw, err)
						}
						fmt.Fprintf(c.App.ErrWriter, "sweep %s: best trial %s (rank %d, alpha %g, %s %.4f)\n", sw, t.GetName(), t.GetRank(), t.GetAlpha(), c.String("metric"), t.GetBestMetric())
						runs = []string{t.GetName()}
					} else if sw := c.String("sweep"); sw != "" {
						var in []string
						for _, r := range runs {
							if strings.HasPrefix(r, sw+"-") {
								in = append(in, r)
							}
						}
						runs = in
					}
					if len(runs) == 0 {
						return fmt.Errorf("no runs in %s match", store)
					}
					var ck *checkpoint.Checkpoint
					var files map[string][]byte
					if c.Bool("best") {
						if ck, err = checkpoint.Best(c.Context, store, runs, c.String("metric"), warn); err != nil {
							return err
						}
						if files, err = checkpoint.Load(c.Context, store, *ck); err != nil {
							return err
						}
					} else {
						if len(runs) != 1 {
							return errors.New("give --run R for its latest checkpoint, or --best")
						}
						if ck, files, err = checkpoint.LoadLatest(c.Context, store, runs[0], warn); err != nil {
							return err
						}
					}
					if err := writeAdapterFrom(ck, files, c.Path("out")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "pulled run %s step %d (%s %.4f) to %s\n%s\n", ck.Run, ck.Step, c.String("metric"),
						ck.Manifest.Metrics[c.String("metric")], c.Path("out"), disclaimer)
					return nil
				},
			},
		},
	}
}

// writeAdapterFrom writes checkpoint ck (its loaded files) as a PEFT adapter
// directory with a model card.
func writeAdapterFrom(ck *checkpoint.Checkpoint, files map[string][]byte, out string) error {
	st, vocab, err := trainer.StateFromFiles(files)
	if err != nil {
		return fmt.Errorf("checkpoint %s step %d: %w", ck.Run, ck.Step, err)
	}
	rep := trainer.Reports{Val: st.Val, Test: st.Test, History: st.History, Losses: st.Losses}
	if rep.Val.N == 0 && len(st.History) > 0 {
		rep.Val = st.History[len(st.History)-1].Report
	}
	return trainer.WriteAdapter(out, st.Params, st.Manifest, rep, vocab, ck.Run, ck.Step)
}
