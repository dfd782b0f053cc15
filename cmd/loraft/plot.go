package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/loraft/loraft/internal/chart"
	"github.com/urfave/cli/v2"
)

// plotCommand is `loraft plot`: the heat map and training curves of a
// rank×alpha sweep report (the JSON of `loraft sweep status --json --history`;
// its schema is documented in internal/chart), written as DIR/heatmap.EXT and
// DIR/curves.EXT.
func plotCommand() *cli.Command {
	return &cli.Command{
		Name:  "plot",
		Usage: "draw a sweep report: a rank×alpha heat map of the final metric and the loss and metric curves",
		Description: "Reads the JSON sweep report of `loraft sweep status --json --history` and writes\n" +
			"DIR/heatmap.png (final validation metric by LoRA rank and alpha, one annotated cell per\n" +
			"trial, grey where there is no metric yet) and DIR/curves.png (training loss and validation\n" +
			"metric by step, one line per trial), then prints their paths.",
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "report", Required: true, Usage: "sweep report `FILE` (JSON)"},
			&cli.PathFlag{Name: "out", Required: true, Usage: "output `DIR` (created if missing)"},
			&cli.StringFlag{Name: "format", Value: "png", Usage: "image format: " + strings.Join(chart.Formats, " or ")},
		},
		Action: func(c *cli.Context) error {
			format := strings.ToLower(c.String("format"))
			if !slices.Contains(chart.Formats, format) {
				return fmt.Errorf("flag --format: %q is not one of %s", c.String("format"), strings.Join(chart.Formats, ", "))
			}
			report, err := chart.ReadReport(c.Path("report"))
			if err != nil {
				return fmt.Errorf("flag --report: %w", err)
			}
			dir := c.Path("out")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("flag --out: %w", err)
			}
			for _, plot := range []struct {
				name string
				draw func(*chart.Report, string) error
			}{{"heatmap", chart.Heatmap}, {"curves", chart.Curves}} {
				path := filepath.Join(dir, plot.name+"."+format)
				if err := plot.draw(report, path); err != nil {
					return fmt.Errorf("plot %s: %w", plot.name, err)
				}
				fmt.Fprintln(c.App.Writer, path)
			}
			return nil
		},
	}
}
