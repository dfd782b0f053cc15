// Command loraft is the one binary of the loraft QLoRA fine-tuning
// orchestrator: coordinators, trainers, the local embedded cluster, and the
// user's commands all live here. Flags are parsed here and handed to the
// packages; no training math lives in this package.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/loraft/loraft/internal/termsafe"
	"github.com/urfave/cli/v2"
)

// version is the loraft version, set at link time by the Makefile
// (-ldflags "-X main.version=…").
var version = "dev"

// disclaimer is shown wherever the classifier's purpose is described.
const disclaimer = "The mental-health classifier loraft trains is a screening and research aid, never a diagnostic tool."

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		// An error can quote a server's message or a dataset row.
		fmt.Fprintf(os.Stderr, "loraft: %s\n", termsafe.Escape(err.Error()))
		stop()
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		// Names, reasons and statements come from the network and from
		// datasets: escape control characters before they reach a terminal.
		Writer:    termsafe.NewWriter(os.Stdout),
		ErrWriter: termsafe.NewWriter(os.Stderr),
		Name:      "loraft",
		Usage:     "distributed QLoRA fine-tuning with a raft-replicated coordinator",
		Version:   version,
		Description: "loraft fine-tunes a frozen NF4-quantized BERT with LoRA adapters across trainer nodes,\n" +
			"all-reducing only the adapter gradients, with checkpoints in an S3 object store.\n\n" + disclaimer,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "log-level",
				Value:   "info",
				Usage:   "log level: debug, info, warn or error",
				EnvVars: []string{"LORAFT_LOG_LEVEL"},
			},
		},
		Before: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("flag --log-level: %w", err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			return nil
		},
		Commands: []*cli.Command{
			versionCommand(),
			localCommand(),
			dataCommand(),
			trainCommand(),
			evalCommand(),
			predictCommand(),
			adapterCommand(),
			trainerCommand(),
			coordinatorCommand(),
			certsCommand(),
			sweepCommand(),
			runCommand(),
			plotCommand(),
			serveCommand(),
			benchCommand(),
		},
		// Statements contain commas: --text "a, b" is one statement.
		DisableSliceFlagSeparator: true,
		// Errors are printed once by main, not also by the cli package.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
