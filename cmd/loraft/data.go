package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/loraft/loraft/internal/atomicfile"
	"github.com/loraft/loraft/internal/progress"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/urfave/cli/v2"
)

// datasetFlags are shared by every command that reads a dataset.
func datasetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.PathFlag{Name: "data", Required: true, Usage: "dataset CSV in the Kaggle `Combined Data.csv` layout"},
		&cli.PathFlag{Name: "vocab", Usage: "WordPiece vocab.txt (default: bert-base-uncased's, embedded)"},
		&cli.IntFlag{Name: "max-len", Value: shard.DefaultMaxLen, Usage: "maximum sequence length in tokens, [CLS] and [SEP] included"},
		&cli.Uint64Flag{Name: "seed", Value: shard.DefaultSplitSeed, Usage: "split seed"},
		splitFlag(),
		&cli.BoolFlag{Name: "drop-bad", Usage: "drop rows with an unknown label or malformed CSV (reported) instead of failing"},
		&cli.PathFlag{Name: "cache-dir", Usage: "token cache directory (default: $LORAFT_CACHE/tokens or ~/.cache/loraft/tokens)"},
		&cli.BoolFlag{Name: "no-cache", Usage: "tokenize without reading or writing the token cache"},
	}
}

// splitFlag is --split, read by shard.ParseRatios like a sweep's train.split.
func splitFlag() cli.Flag {
	return &cli.StringFlag{Name: "split", Value: shard.DefaultRatios.String(), Usage: "train/val/test shares: 80/10/10 or 0.8,0.1,0.1"}
}

// loadedData is a dataset read, split and tokenized from datasetFlags.
type loadedData struct {
	ds     *shard.Dataset
	split  *shard.Split
	tok    *wordpiece.Tokenizer
	tokens *shard.Tokens
	cached bool
}

func loadData(c *cli.Context) (*loadedData, error) {
	ratios, err := shard.ParseRatios(c.String("split"))
	if err != nil {
		return nil, fmt.Errorf("flag --split: %w", err)
	}
	if err := shard.CheckMaxLen(c.Int("max-len")); err != nil {
		return nil, fmt.Errorf("flag --max-len: %w", err)
	}
	ds, err := shard.ReadFile(c.Path("data"), shard.Options{DropBad: c.Bool("drop-bad")})
	if err != nil {
		return nil, err
	}
	vocab, lower, err := vocabFlags(c)
	if err != nil {
		return nil, err
	}
	var tok *wordpiece.Tokenizer
	if vocab != "" {
		tok, err = wordpiece.Load(vocab)
	} else {
		tok, err = wordpiece.BertBaseUncased()
	}
	if err != nil {
		return nil, fmt.Errorf("flag --vocab: %w", err)
	}
	tok = tok.WithLowerCase(lower)
	sp, err := shard.NewSplit(ds, c.Uint64("seed"), ratios)
	if err != nil {
		return nil, err
	}
	cacheDir := c.Path("cache-dir")
	if cacheDir == "" {
		cacheDir = filepath.Join(cacheRoot(), "tokens")
	}
	if c.Bool("no-cache") {
		cacheDir = ""
	}
	bar := progress.New("tokenize", "rows", len(ds.Rows))
	tokens, cached, err := shard.LoadOrTokenize(c.Context, cacheDir, ds, tok, c.Int("max-len"), func(done, _ int) { bar.Set(done) })
	if err != nil {
		return nil, err
	}
	if !cached {
		bar.Finish()
	}
	return &loadedData{ds: ds, split: sp, tok: tok, tokens: tokens, cached: cached}, nil
}

// cacheRoot is loraft's per-user cache directory.
func cacheRoot() string {
	if d := os.Getenv("LORAFT_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "loraft")
	}
	return filepath.Join(os.TempDir(), "loraft-cache")
}

func dataCommand() *cli.Command {
	return &cli.Command{
		Name:  "data",
		Usage: "inspect datasets",
		Subcommands: []*cli.Command{splitCommand(), {
			Name:  "inspect",
			Usage: "read, split and tokenize a dataset and report what was kept, dropped and truncated",
			Flags: append(datasetFlags(),
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				&cli.BoolFlag{Name: "events", Usage: "list every dropped or repaired row"},
			),
			Action: func(c *cli.Context) error {
				d, err := loadData(c)
				if err != nil {
					return err
				}
				sum := shard.Summarize(d.ds, d.split, d.tokens)
				if c.Bool("json") {
					out := struct {
						shard.Summary
						Events []shard.Event `json:"events,omitempty"`
					}{Summary: sum}
					if c.Bool("events") {
						out.Events = d.ds.Report.Events
					}
					enc := json.NewEncoder(c.App.Writer)
					enc.SetIndent("", "  ")
					return enc.Encode(out)
				}
				return printSummary(c, sum, d.ds.Report.Events, c.Bool("events"))
			},
		}},
	}
}

func printSummary(c *cli.Context, s shard.Summary, events []shard.Event, allEvents bool) error {
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "file\t%s\n", s.File)
	fmt.Fprintf(w, "sha256\t%s\n", s.SHA256)
	fmt.Fprintf(w, "split\t%s, seed %d (id %s)\n", s.Ratios, s.Seed, s.SplitID)
	fmt.Fprintf(w, "rows read\t%d\n", s.RowsRead)
	fmt.Fprintf(w, "kept\t%d\n", s.Kept)
	reasons := make([]string, 0, len(s.Dropped))
	for r, n := range s.Dropped {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(reasons)
	if len(reasons) == 0 {
		reasons = []string{"none"}
	}
	fmt.Fprintf(w, "dropped\t%s\n", strings.Join(reasons, ", "))
	fmt.Fprintf(w, "duplicates\t%d\n", s.Duplicates)
	fmt.Fprintf(w, "repaired utf-8\t%d\n\n", s.RepairedUTF8)

	fmt.Fprint(w, "class")
	for _, p := range s.Parts {
		fmt.Fprintf(w, "\t%s", p.Name)
	}
	fmt.Fprint(w, "\ttotal\n")
	for _, name := range shard.LabelNames() {
		fmt.Fprint(w, name)
		total := 0
		for _, p := range s.Parts {
			fmt.Fprintf(w, "\t%d", p.Counts[name])
			total += p.Counts[name]
		}
		fmt.Fprintf(w, "\t%d\n", total)
	}
	fmt.Fprint(w, "all")
	for _, p := range s.Parts {
		fmt.Fprintf(w, "\t%d", p.Rows)
	}
	fmt.Fprintf(w, "\t%d\n\n", s.Kept)

	fmt.Fprint(w, "length\tp50\tp90\tp95\tp99\tmax\n")
	for _, l := range []struct {
		name string
		p    shard.Percentiles
	}{{"characters", s.Chars}, {"tokens", s.Tokens}} {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\n", l.name, l.p.P50, l.p.P90, l.p.P95, l.p.P99, l.p.Max)
	}
	fmt.Fprintf(w, "\ntruncated at %d tokens: %d rows (%.1f%%)\n", s.MaxLen, s.Truncated, 100*s.TruncatedShare)
	if err := w.Flush(); err != nil {
		return err
	}
	if len(events) > 0 {
		shown := events
		if !allEvents && len(shown) > 10 {
			shown = shown[:10]
		}
		fmt.Fprintln(c.App.Writer, "\nrow events:")
		for _, e := range shown {
			fmt.Fprintf(c.App.Writer, "  %s:%d (record %d): %s %s\n", s.File, e.Line, e.Record, e.Reason, e.Detail)
		}
		if len(shown) < len(events) {
			fmt.Fprintf(c.App.Writer, "  … %d more (--events lists them all)\n", len(events)-len(shown))
		}
	}
	return nil
}

func splitCommand() *cli.Command {
	return &cli.Command{
		Name:  "split",
		Usage: "write the train/val/test split of a dataset as three CSVs in the Kaggle layout (for baselines and other tools)",
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "data", Required: true, Usage: "dataset CSV"},
			&cli.Uint64Flag{Name: "seed", Value: shard.DefaultSplitSeed, Usage: "split seed"},
			splitFlag(),
			&cli.BoolFlag{Name: "drop-bad", Usage: "drop rows with an unknown label or malformed CSV"},
			&cli.PathFlag{Name: "out", Required: true, Usage: "directory for train.csv, val.csv and test.csv"},
		},
		Action: func(c *cli.Context) error {
			ratios, err := shard.ParseRatios(c.String("split"))
			if err != nil {
				return fmt.Errorf("flag --split: %w", err)
			}
			ds, err := shard.ReadFile(c.Path("data"), shard.Options{DropBad: c.Bool("drop-bad")})
			if err != nil {
				return err
			}
			sp, err := shard.NewSplit(ds, c.Uint64("seed"), ratios)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(c.Path("out"), 0o755); err != nil {
				return fmt.Errorf("flag --out: %w", err)
			}
			for _, p := range sp.Parts() {
				var buf bytes.Buffer
				if err := shard.WriteCSV(&buf, ds, p.Rows); err != nil {
					return err
				}
				path := filepath.Join(c.Path("out"), p.Name+".csv")
				if err := atomicfile.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%s: %d rows\n", path, len(p.Rows))
			}
			fmt.Fprintf(c.App.Writer, "split %s of %s, seed %d (id %s)\n", ratios, ds.SHA256[:12], c.Uint64("seed"), sp.Spec.ID())
			return nil
		},
	}
}
