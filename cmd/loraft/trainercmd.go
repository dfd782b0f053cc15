package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/loraft/loraft/trainer/allreduce"
	"github.com/urfave/cli/v2"
)

// tlsFlags configure optional mutual TLS for gRPC servers and clients.
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.PathFlag{Name: "tls-ca", Usage: "CA certificate (PEM) that signs every peer's certificate; enables mutual TLS with --tls-cert/--tls-key"},
		&cli.PathFlag{Name: "tls-cert", Usage: "this node's certificate (PEM)"},
		&cli.PathFlag{Name: "tls-key", Usage: "this node's private key (PEM)"},
	}
}

// mutualTLS builds server and client TLS configs from the flags, or nils
// when mutual TLS is off.
func mutualTLS(c *cli.Context) (server, client *tls.Config, err error) {
	ca, cert, key := c.Path("tls-ca"), c.Path("tls-cert"), c.Path("tls-key")
	if ca == "" && cert == "" && key == "" {
		return nil, nil, nil
	}
	if ca == "" || cert == "" || key == "" {
		return nil, nil, errors.New("flags --tls-ca, --tls-cert and --tls-key go together")
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, nil, fmt.Errorf("flag --tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("flag --tls-ca: %s holds no PEM certificate", ca)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("flags --tls-cert/--tls-key: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

func trainerCommand() *cli.Command {
	flags := append(append(datasetFlags(), trainFlags("lora-rank")...), storeFlags()...)
	flags = append(flags,
		&cli.IntFlag{Name: "rank", Required: true, Usage: "this trainer's rank, 0..world-1 (rank 0 evaluates and checkpoints)"},
		&cli.IntFlag{Name: "world", Required: true, Usage: "number of trainers in the run"},
		&cli.StringFlag{Name: "peers", Required: true, Usage: "host:port of every rank in rank order, comma-separated; this rank listens on its own"},
		&cli.StringFlag{Name: "run-id", Usage: "run identity in all-reduce messages, the same on every rank (default: --run, else the peer list)"},
		&cli.Uint64Flag{Name: "generation", Value: 1, Usage: "assignment generation; messages of other generations are rejected"},
		&cli.DurationFlag{Name: "step-timeout", Value: 60 * time.Second, Usage: "give up a step's all-reduce after this long (a peer died)"},
	)
	flags = append(flags, tlsFlags()...)
	return &cli.Command{
		Name:  "trainer",
		Usage: "one rank of a data-parallel run with static peers: each rank trains its shard, gradients are ring all-reduced over gRPC",
		Description: "Start one process per rank with the same flags except --rank. Every rank reads the dataset,\n" +
			"takes its rows of each global batch, and all ranks stay bit-identical. Rank 0 evaluates,\n" +
			"checkpoints to --store and writes --out (other ranks write --out too when given).\n\n" + disclaimer,
		Flags: flags,
		Action: func(c *cli.Context) error {
			peers := splitList(c.String("peers"))
			serverTLS, clientTLS, err := mutualTLS(c)
			if err != nil {
				return err
			}
			runID := c.String("run-id")
			if runID == "" {
				runID = c.String("run")
			}
			if runID == "" {
				// Identical on every rank (unlike --out, which may differ).
				runID = "peers=" + strings.Join(peers, ",")
			}
			cfg := allreduce.Config{Rank: c.Int("rank"), World: c.Int("world"), Peers: peers, RunID: runID,
				Generation: c.Uint64("generation"), StepTimeout: c.Duration("step-timeout"), ServerTLS: serverTLS, ClientTLS: clientTLS}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("flags --rank/--world/--peers: %w", err)
			}
			ring, err := allreduce.Listen(c.Context, cfg)
			if err != nil {
				return fmt.Errorf("all-reduce server on %s: %w", peers[cfg.Rank], err)
			}
			defer ring.Close()
			fmt.Fprintf(c.App.ErrWriter, "trainer: rank %d of %d listening on %s (peers %s)\n", cfg.Rank, cfg.World, ring.Addr(), strings.Join(peers, ","))
			return runTrain(c, &dataParallel{rank: cfg.Rank, world: cfg.World, reducer: ring})
		},
	}
}
