package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/chart"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/agent"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// clientFlags are a coordinator client's flags: the addresses, extra, the
// TLS flags and --insecure (needed to dial non-loopback plaintext).
func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append(append([]cli.Flag{coordinatorsFlag()}, extra...), append(tlsFlags(), insecureFlag())...)
}

func sweepCommand() *cli.Command {
	return &cli.Command{
		Name:  "sweep",
		Usage: "launch, watch and cancel sweeps of LoRA hyperparameters",
		Subcommands: []*cli.Command{
			sweepLaunchCommand(),
			sweepStatusCommand(),
			sweepReportCommand(),
			sweepLsCommand(),
			sweepCancelCommand(),
			sweepDeleteCommand(),
		},
	}
}

func sweepLaunchCommand() *cli.Command {
	return &cli.Command{
		Name:  "launch",
		Usage: "upload the dataset to the store (once, by sha256) and launch a sweep from a YAML spec",
		Flags: clientFlags(append([]cli.Flag{
			&cli.PathFlag{Name: "spec", Required: true, Usage: "sweep spec (YAML), e.g. experiments/rank-alpha.yaml"},
			&cli.PathFlag{Name: "data", Required: true, Usage: "dataset CSV in the Kaggle layout (statement,status)"},
			&cli.BoolFlag{Name: "drop-bad", Usage: "accept a dataset with malformed rows (trainers drop them too)"},
			&cli.BoolFlag{Name: "wait", Usage: "watch the sweep until every trial ends"},
		}, storeFlags()...)...),
		Action: withCoordinators(sweepLaunch),
	}
}

// sweepLaunch is `loraft sweep launch`.
func sweepLaunch(c *cli.Context, cl *coordinator.Client) error {
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	sw, err := launchSweep(c.Context, cl, store, c.Path("spec"), c.Path("data"), c.App.Writer)
	if err != nil {
		return err
	}
	if c.Bool("wait") {
		return watchSweep(c.Context, cl, sw.GetName(), c.App.Writer, time.Second)
	}
	return nil
}

func sweepStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "a sweep's trials: hyperparameters, state, step and best metric",
		ArgsUsage: "SWEEP",
		Flags:     clientFlags(&cli.BoolFlag{Name: "json", Usage: "print JSON"}, &cli.BoolFlag{Name: "watch", Usage: "refresh until every trial ends"}),
		Action:    withCoordinators(sweepStatus),
	}
}

// sweepStatus is `loraft sweep status`.
func sweepStatus(c *cli.Context, cl *coordinator.Client) error {
	name, err := oneArg(c, "sweep status", "SWEEP")
	if err != nil {
		return err
	}
	if c.Bool("watch") {
		return watchSweep(c.Context, cl, name, c.App.Writer, time.Second)
	}
	st, err := cl.Sweep(c.Context, name)
	if err != nil {
		return fmt.Errorf("sweep %s: %w", name, err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, sweepJSON(st))
	}
	return printSweep(c.App.Writer, st)
}

func sweepReportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "write the sweep report (final metrics from the coordinators, loss and metric curves from the store) as JSON for `loraft plot`",
		ArgsUsage: "SWEEP",
		Flags:     clientFlags(append([]cli.Flag{&cli.PathFlag{Name: "out", Required: true, Usage: "report file to write"}}, storeFlags()...)...),
		Action:    withCoordinators(sweepReportAction),
	}
}

// sweepReportAction is `loraft sweep report`.
func sweepReportAction(c *cli.Context, cl *coordinator.Client) error {
	name, err := oneArg(c, "sweep report", "SWEEP")
	if err != nil {
		return err
	}
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	st, err := cl.Sweep(c.Context, name)
	if err != nil {
		return fmt.Errorf("sweep %s: %w", name, err)
	}
	rep, err := sweepReport(c.Context, store, st.GetSweep())
	if err != nil {
		return err
	}
	if err := chart.WriteReport(c.Path("out"), rep); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "sweep report written to %s\n", c.Path("out"))
	return nil
}

func sweepLsCommand() *cli.Command {
	return &cli.Command{
		Name:   "ls",
		Usage:  "every sweep with its trial counts and best metric (asked for a page at a time)",
		Flags:  clientFlags(&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: withCoordinators(sweepLs),
	}
}

// sweepSummaryJSON is one line of `sweep ls --json`.
type sweepSummaryJSON struct {
	Name      string   `json:"name"`
	Trials    int32    `json:"trials"`
	Succeeded int32    `json:"succeeded"`
	Running   int32    `json:"running"`
	Pending   int32    `json:"pending"`
	Failed    int32    `json:"failed"`
	Cancelled int32    `json:"cancelled"`
	Stopped   int32    `json:"stopped_early"`
	Metric    string   `json:"metric"`
	BestTrial string   `json:"best_trial,omitempty"`
	Best      *float64 `json:"best,omitempty"`
}

// sweepLs is `loraft sweep ls`: ListSweeps page by page, never the whole state.
func sweepLs(c *cli.Context, cl *coordinator.Client) error {
	var rows []*pb.SweepSummary
	stale, err := cl.EachSweep(c.Context, 0, func(s *pb.SweepSummary) error { rows = append(rows, s); return nil })
	if err != nil {
		return fmt.Errorf("listing sweeps: %w", err)
	}
	if c.Bool("json") {
		out := []sweepSummaryJSON{}
		for _, s := range rows {
			j := sweepSummaryJSON{Name: s.GetName(), Trials: s.GetTrials(), Succeeded: s.GetSucceeded(), Running: s.GetRunning(), Pending: s.GetPending(),
				Failed: s.GetFailed(), Cancelled: s.GetCancelledTrials(), Stopped: s.GetStoppedEarly(), Metric: s.GetMetric(), BestTrial: s.GetBestTrial()}
			if s.GetBestTrial() != "" {
				v := s.GetBestMetric()
				j.Best = &v
			}
			out = append(out, j)
		}
		return printJSON(c.App.Writer, out)
	}
	if stale {
		fmt.Fprintln(c.App.Writer, "STALE: no coordinator leader answered; this is one coordinator's last applied state")
	}
	return printSweeps(c.App.Writer, rows)
}

// printSweeps is the table of `sweep ls`.
func printSweeps(w io.Writer, sweeps []*pb.SweepSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "sweep\ttrials\tsucceeded\trunning\tpending\tfailed/cancelled/stopped\tbest trial\tbest")
	for _, s := range sweeps {
		best, bestName := "-", "-"
		if s.GetBestTrial() != "" {
			best, bestName = fmt.Sprintf("%.4f", s.GetBestMetric()), s.GetBestTrial()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", s.GetName(), s.GetTrials(), s.GetSucceeded(), s.GetRunning(), s.GetPending(),
			s.GetFailed()+s.GetCancelledTrials()+s.GetStoppedEarly(), bestName, best)
	}
	return tw.Flush()
}

func sweepDeleteCommand() *cli.Command {
	return &cli.Command{
		Name:  "delete",
		Usage: "remove a finished or cancelled sweep and its runs from the coordinators' state",
		Description: "Only a sweep without pending or running runs can be deleted (cancel it first). " +
			"Its checkpoints, adapters and sweeps/<sweep>.json stay in the store: delete those there if you want them gone.",
		ArgsUsage: "SWEEP",
		Flags:     clientFlags(),
		Action:    withCoordinators(sweepDelete),
	}
}

// sweepDelete is `loraft sweep delete`.
func sweepDelete(c *cli.Context, cl *coordinator.Client) error {
	name, err := oneArg(c, "sweep delete", "SWEEP")
	if err != nil {
		return err
	}
	if err := cl.DeleteSweep(c.Context, name); err != nil {
		return fmt.Errorf("deleting sweep %s: %w", name, err)
	}
	fmt.Fprintf(c.App.Writer, "sweep %s deleted from the coordinators (its objects in the store are kept)\n", name)
	return nil
}

func sweepCancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel a sweep's pending and running trials",
		ArgsUsage: "SWEEP",
		Flags:     clientFlags(),
		Action:    withCoordinators(sweepCancel),
	}
}

// sweepCancel is `loraft sweep cancel`.
func sweepCancel(c *cli.Context, cl *coordinator.Client) error {
	name, err := oneArg(c, "sweep cancel", "SWEEP")
	if err != nil {
		return err
	}
	if err := cl.CancelSweep(c.Context, name); err != nil {
		return fmt.Errorf("cancelling sweep %s: %w", name, err)
	}
	fmt.Fprintf(c.App.Writer, "sweep %s cancelled (resume a run with `loraft run resume RUN`)\n", name)
	return nil
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:        "run",
		Usage:       "list runs (trials) and resume failed or cancelled ones",
		Subcommands: []*cli.Command{runLsCommand(), runResumeCommand()},
	}
}

func runLsCommand() *cli.Command {
	return &cli.Command{
		Name:   "ls",
		Usage:  "every run: sweep, state, generation, attempts, committed checkpoint, best metric (asked for a page at a time; history: sweep status --json)",
		Flags:  clientFlags(&cli.StringFlag{Name: "sweep", Usage: "only this sweep's runs"}, &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: withCoordinators(runLs),
	}
}

// runLs is `loraft run ls`: ListTrials page by page (with the leader's
// live progress), never the whole state.
func runLs(c *cli.Context, cl *coordinator.Client) error {
	var rows []trialJSON
	stale, err := cl.EachTrial(c.Context, c.String("sweep"), pb.TrialState_TRIAL_STATE_UNSPECIFIED, 0, func(ts *pb.TrialSummary) error {
		rows = append(rows, trialRow(&pb.Sweep{Name: ts.GetSweep()}, ts.GetTrial(), ts.GetProgress()))
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing runs: %w", err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, rows)
	}
	if stale {
		fmt.Fprintln(c.App.Writer, "STALE: no coordinator leader answered; this is one coordinator's last applied state, without live progress")
	}
	defer printWarnings(c.App.Writer, rows)
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tsweep\tstate\tgeneration\tattempts\tcheckpoint step\tbest\ttrainers\treason")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Name, r.Sweep, r.State, r.Generation, r.Attempts, r.CheckpointStep,
			metricCell(r.BestMetric), strings.Join(r.Trainers, ","), oneLine(r.Reason, 50))
	}
	return tw.Flush()
}

// printWarnings lists the trials whose trainers report a warning.
func printWarnings(w io.Writer, rows []trialJSON) {
	for _, r := range rows {
		if r.Warning != "" {
			fmt.Fprintf(w, "warning: %s: %s\n", r.Name, oneLine(r.Warning, 200))
		}
	}
}

func runResumeCommand() *cli.Command {
	return &cli.Command{
		Name:      "resume",
		Usage:     "put a failed, cancelled or early-stopped run back in the queue; it continues from its last committed checkpoint",
		ArgsUsage: "RUN",
		Flags:     clientFlags(),
		Action:    withCoordinators(runResume),
	}
}

// runResume is `loraft run resume`.
func runResume(c *cli.Context, cl *coordinator.Client) error {
	run, err := oneArg(c, "run resume", "RUN")
	if err != nil {
		return err
	}
	if err := cl.ResumeRun(c.Context, run); err != nil {
		return fmt.Errorf("resuming run %s: %w", run, err)
	}
	fmt.Fprintf(c.App.Writer, "run %s queued; it resumes from its last committed checkpoint\n", run)
	return nil
}

// launchSweep uploads the dataset (unless the store has it) and launches the spec.
func launchSweep(ctx context.Context, cl *coordinator.Client, store checkpoint.Store, specPath, dataPath string, w io.Writer) (*pb.Sweep, error) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return nil, fmt.Errorf("flag --spec: %w", err)
	}
	spec, err := coordinator.ParseSweepSpec(raw, specPath)
	if err != nil {
		return nil, err
	}
	// Read it here so a malformed file fails now, naming its row, not on every trainer.
	ds, err := shard.ReadFile(dataPath, shard.Options{})
	if err != nil {
		return nil, err
	}
	sha, size, uploaded, err := checkpoint.UploadDataset(ctx, store, dataPath)
	if err != nil {
		return nil, err
	}
	verb := "already in"
	if uploaded {
		verb = "uploaded to"
	}
	fmt.Fprintf(w, "dataset %s (%d rows, sha256 %.12s…) %s %s\n", filepath.Base(dataPath), len(ds.Rows), sha, verb, store)
	sw := spec.Sweep(raw, sha, time.Now())
	// The spec's base, config and weights are this machine's; trainers get the base by sha256.
	if base, err := agent.UploadSweepBase(ctx, store, sw.GetTrain()); err != nil {
		return nil, fmt.Errorf("%s: %w", specPath, err)
	} else if base != "" {
		fmt.Fprintf(w, "base %s (sha256 %.12s…) in %s\n", sw.GetTrain().GetBaseName(), base, store)
	}
	if err := cl.LaunchSweepWithDataset(ctx, sw, &pb.Dataset{Sha256: sha, Name: filepath.Base(dataPath), Size: size, Rows: int64(len(ds.Rows))}); err != nil {
		return nil, fmt.Errorf("launching sweep %s: %w", sw.GetName(), err)
	}
	fmt.Fprintf(w, "sweep %s launched: %d trials, %d trainer(s) each, metric %s\n", sw.GetName(), len(sw.GetTrials()), max(1, sw.GetTrainersPerTrial()), sw.GetMetric())
	if err := checkpoint.PutSweep(ctx, store, sweepRecord(sw)); err != nil {
		// The sweep runs without it; only `adapter pull --sweep` without
		// coordinators reads it, and falls back to the trial names.
		fmt.Fprintf(w, "warning: %v\n", err)
	}
	return sw, nil
}

// sweepRecord is what the store keeps of a launched sweep: its own trial
// list, so the store alone can tell its runs from another sweep's.
func sweepRecord(sw *pb.Sweep) checkpoint.SweepRecord {
	r := checkpoint.SweepRecord{Name: sw.GetName(), Metric: sw.GetMetric(), DatasetSHA256: sw.GetDatasetSha256(),
		Created: time.UnixMilli(sw.GetCreatedUnixMs()).UTC()}
	for _, t := range sw.GetTrials() {
		r.Trials = append(r.Trials, t.GetName())
	}
	return r
}

// sweepDone reports whether every trial of the sweep has ended.
func sweepDone(sw *pb.Sweep) bool {
	for _, t := range sw.GetTrials() {
		if t.GetState() == pb.TrialState_TRIAL_STATE_PENDING || t.GetState() == pb.TrialState_TRIAL_STATE_RUNNING {
			return false
		}
	}
	return true
}

// watchSweep shows a sweep until it ends: a table redrawn in place on a
// terminal, a line per change otherwise.
func watchSweep(ctx context.Context, cl *coordinator.Client, name string, w io.Writer, every time.Duration) error {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	last := map[string]string{}
	drawn := 0
	for {
		st, err := cl.Sweep(ctx, name)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			fmt.Fprintf(w, "sweep %s: %v (retrying)\n", name, err)
			time.Sleep(every)
			continue
		}
		if tty {
			var b strings.Builder
			_ = printSweep(&b, st)
			if drawn > 0 {
				fmt.Fprintf(w, "\x1b[%dA\x1b[J", drawn)
			}
			fmt.Fprint(w, b.String())
			drawn = strings.Count(b.String(), "\n")
		} else {
			for _, t := range st.GetSweep().GetTrials() {
				r := trialRow(st.GetSweep(), t, st.GetProgress()[t.GetName()])
				line := fmt.Sprintf("%s r=%d α=%g %s step %s loss %s best %s eta %s", r.Name, r.Rank, r.Alpha, r.State, r.Step, lossCell(r.Loss), metricCell(r.BestMetric), etaCell(r.EtaMs))
				key := fmt.Sprintf("%s|%s|%s", r.State, metricCell(r.BestMetric), r.Step)
				if last[r.Name] != key {
					last[r.Name] = key
					fmt.Fprintln(w, line)
				}
			}
		}
		if sweepDone(st.GetSweep()) {
			if !tty {
				return printSweep(w, st)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// trialJSON is one trial as status and run ls print it.
type trialJSON struct {
	Name           string          `json:"name"`
	Sweep          string          `json:"sweep"`
	Index          int32           `json:"index"`
	Rank           int32           `json:"rank"`
	Alpha          float64         `json:"alpha"`
	LearningRate   float64         `json:"learning_rate"`
	Dropout        float64         `json:"lora_dropout"`
	TargetModules  string          `json:"target_modules"`
	Seed           uint64          `json:"seed"`
	State          string          `json:"state"`
	Step           string          `json:"step"`
	Loss           float64         `json:"loss,omitempty"`
	EtaMs          int64           `json:"eta_ms,omitempty"`
	Generation     uint64          `json:"generation"`
	Attempts       int32           `json:"attempts"`
	CheckpointStep int64           `json:"checkpoint_step"`
	BestMetric     *float64        `json:"best_metric,omitempty"`
	Trainers       []string        `json:"trainers,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	Warning        string          `json:"warning,omitempty"`
	Result         *pb.TrialResult `json:"-"`
	ResultJSON     json.RawMessage `json:"result,omitempty"`
	History        []pointJSON     `json:"history,omitempty"`
}

type pointJSON struct {
	Step   int64   `json:"step"`
	Metric float64 `json:"metric"`
}

type sweepStatusJSON struct {
	Name      string `json:"name"`
	Metric    string `json:"metric"`
	Dataset   string `json:"dataset_sha256"`
	Cancelled bool   `json:"cancelled"`
	Done      bool   `json:"done"`
	// Stale: no leader answered; this is one coordinator's applied state.
	Stale  bool        `json:"stale"`
	Trials []trialJSON `json:"trials"`
}

func trialRow(sw *pb.Sweep, t *pb.Trial, p *pb.Progress) trialJSON {
	r := trialJSON{Name: t.GetName(), Sweep: sw.GetName(), Index: t.GetIndex(), Rank: t.GetRank(), Alpha: t.GetAlpha(), LearningRate: t.GetLearningRate(),
		Dropout: t.GetLoraDropout(), TargetModules: t.GetTargetModules(), Seed: t.GetSeed(), State: strings.TrimPrefix(t.GetState().String(), "TRIAL_STATE_"),
		Generation: t.GetGeneration(), Attempts: t.GetAttempts(), CheckpointStep: t.GetCheckpointStep(), Trainers: t.GetTrainers(), Reason: t.GetReason()}
	r.Step = fmt.Sprint(t.GetCheckpointStep())
	if p != nil && p.GetSteps() > 0 {
		r.Step, r.Loss, r.EtaMs = fmt.Sprintf("%d/%d", p.GetStep(), p.GetSteps()), p.GetLoss(), p.GetEtaMs()
	}
	r.Warning = p.GetWarning()
	if res := t.GetResult(); res != nil {
		r.Step = fmt.Sprint(res.GetSteps())
		r.Loss = res.GetFinalLoss()
		r.ResultJSON, _ = json.Marshal(map[string]any{"steps": res.GetSteps(), "val_macro_f1": res.GetValMacroF1(), "val_accuracy": res.GetValAccuracy(),
			"test_macro_f1": res.GetTestMacroF1(), "test_accuracy": res.GetTestAccuracy(), "temperature": res.GetTemperature(), "val_ece": res.GetValEce(),
			"wall_ms": res.GetWallMs(), "final_loss": res.GetFinalLoss()})
	}
	if t.GetHasMetric() {
		v := t.GetBestMetric()
		r.BestMetric = &v
	}
	for _, h := range t.GetHistory() {
		r.History = append(r.History, pointJSON{Step: h.GetStep(), Metric: h.GetMetric()})
	}
	return r
}

func sweepJSON(st *pb.SweepStatus) sweepStatusJSON {
	sw := st.GetSweep()
	out := sweepStatusJSON{Name: sw.GetName(), Metric: sw.GetMetric(), Dataset: sw.GetDatasetSha256(), Cancelled: sw.GetCancelled(), Done: sweepDone(sw), Stale: st.GetStale()}
	for _, t := range sw.GetTrials() {
		out.Trials = append(out.Trials, trialRow(sw, t, st.GetProgress()[t.GetName()]))
	}
	return out
}

func printSweep(w io.Writer, st *pb.SweepStatus) error {
	sw := st.GetSweep()
	metric := strings.ReplaceAll(sw.GetMetric(), "_", "-")
	fmt.Fprintf(w, "sweep %s (%d trials, metric %s)\n", sw.GetName(), len(sw.GetTrials()), metric)
	if st.GetStale() {
		fmt.Fprintln(w, "STALE: no coordinator leader answered; this is one coordinator's last applied state, without live progress")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trial\trank\talpha\tlr\tstate\tstep\tloss\tbest %s\teta\tattempts\n", metric)
	var rows []trialJSON
	for _, t := range sw.GetTrials() {
		r := trialRow(sw, t, st.GetProgress()[t.GetName()])
		rows = append(rows, r)
		fmt.Fprintf(tw, "%s\t%d\t%g\t%.0e\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Name, r.Rank, r.Alpha, r.LearningRate, r.State, r.Step, lossCell(r.Loss), metricCell(r.BestMetric), etaCell(r.EtaMs), r.Attempts)
	}
	err := tw.Flush()
	printWarnings(w, rows)
	return err
}

func metricCell(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *v)
}

func lossCell(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.4f", v)
}

func etaCell(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return (time.Duration(ms) * time.Millisecond).Round(time.Second).String()
}

func countStates(sw *pb.Sweep) map[pb.TrialState]int {
	n := map[pb.TrialState]int{}
	for _, t := range sw.GetTrials() {
		n[t.GetState()]++
	}
	return n
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneArg returns a command's single positional argument. Flags after it
// are not parsed by urfave/cli, so they are an error rather than ignored.
func oneArg(c *cli.Context, cmd, what string) (string, error) {
	args := c.Args().Slice()
	switch {
	case len(args) == 0 || args[0] == "":
		return "", fmt.Errorf("%s: give the %s (see `loraft %s --help`)", cmd, what, cmd)
	case len(args) > 1:
		return "", fmt.Errorf("%s: unexpected %q after %s %s: flags go before it (loraft %s [flags] %s)", cmd, args[1], what, args[0], cmd, what)
	case strings.HasPrefix(args[0], "-"):
		return "", fmt.Errorf("%s: %q is not a %s", cmd, args[0], what)
	}
	return args[0], nil
}
