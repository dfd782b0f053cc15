package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/agent"
	"github.com/loraft/loraft/trainer/allreduce"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/urfave/cli/v2"
)

// tlsFlags configure optional mutual TLS for gRPC servers and clients.
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.PathFlag{Name: "tls-ca", EnvVars: []string{"LORAFT_TLS_CA"}, Usage: "CA certificate (PEM) that signs every peer's certificate; enables mutual TLS with --tls-cert/--tls-key"},
		&cli.PathFlag{Name: "tls-cert", EnvVars: []string{"LORAFT_TLS_CERT"}, Usage: "this node's certificate (PEM)"},
		&cli.PathFlag{Name: "tls-key", EnvVars: []string{"LORAFT_TLS_KEY"}, Usage: "this node's private key (PEM)"},
	}
}

// mutualTLS builds server and client TLS configs from the flags, or nils
// when mutual TLS is off.
func mutualTLS(c *cli.Context) (server, client *tls.Config, err error) {
	ca, cert, key := c.Path("tls-ca"), c.Path("tls-cert"), c.Path("tls-key")
	switch {
	case ca == "" && cert == "" && key == "":
		return nil, nil, nil
	case ca == "" || cert == "" || key == "":
		return nil, nil, errors.New("flags --tls-ca, --tls-cert and --tls-key go together")
	}
	if server, client, err = pki.LoadMutualTLS(ca, cert, key); err != nil {
		return nil, nil, fmt.Errorf("flags --tls-ca/--tls-cert/--tls-key: %w", err)
	}
	return server, client, nil
}

func trainerCommand() *cli.Command {
	flags := append(append(datasetFlags(), trainFlags("lora-rank")...), storeFlags()...)
	for _, f := range flags {
		// --out and --data belong to the static mode only; checked there.
		if pf, ok := f.(*cli.PathFlag); ok && (pf.Name == "out" || pf.Name == "data") {
			pf.Required = false
		}
	}
	flags = append(flags,
		&cli.StringFlag{Name: "coordinators", EnvVars: []string{"LORAFT_COORDINATORS"},
			Usage: "gRPC API addresses of the coordinators: run under them (register, heartbeat, train what they assign) instead of static --rank/--world/--peers"},
		&cli.StringFlag{Name: "id", Usage: "this trainer's stable name under the coordinators (default: hostname-listen address)"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7500", Usage: "all-reduce address this trainer listens on and advertises (under --coordinators)"},
		&cli.StringFlag{Name: "advertise", Usage: "all-reduce address the other trainers dial, when not --listen (behind a proxy or NAT; under --coordinators)"},
		&cli.PathFlag{Name: "events", Usage: "append a JSON line per job start and end to this file (under --coordinators)"},
		&cli.IntFlag{Name: "rank", Usage: "static mode: this trainer's rank, 0..world-1 (rank 0 evaluates and checkpoints)"},
		&cli.IntFlag{Name: "world", Usage: "static mode: number of trainers in the run"},
		&cli.StringFlag{Name: "peers", Usage: "static mode: host:port of every rank in rank order, comma-separated; this rank listens on its own"},
		&cli.StringFlag{Name: "run-id", Usage: "run identity in all-reduce messages, the same on every rank (default: --run, else the peer list)"},
		&cli.Uint64Flag{Name: "generation", Value: 1, Usage: "assignment generation; messages of other generations are rejected"},
		&cli.DurationFlag{Name: "step-timeout", Value: 60 * time.Second, Usage: "give up a step's all-reduce after this long (a peer died)"},
		&cli.StringFlag{Name: "metrics-addr", Usage: "under --coordinators: serve Prometheus /metrics on this host:port (empty: off); HTTPS with the TLS flags, else loopback only unless --insecure"},
		&cli.PathFlag{Name: "spool-dir", Usage: "under --coordinators: keep checkpoints waiting for the store here until written, so a restart loses none (default: <cache-dir>/spool)"},
	)
	flags = append(flags, tlsFlags()...)
	flags = append(flags, insecureFlag())
	return &cli.Command{
		Name:  "trainer",
		Usage: "a trainer: under the coordinators (--coordinators), or one rank of a run with static peers",
		Description: "Under --coordinators the trainer registers, heartbeats, and trains whatever rank of whatever trial\n" +
			"the leader assigns, fetching the dataset from --store and resuming from the committed checkpoint.\n\n" +
			"Static mode: start one process per rank with the same flags except --rank. Every rank reads the\n" +
			"dataset, takes its rows of each global batch, and all ranks stay bit-identical. Rank 0 evaluates,\n" +
			"checkpoints to --store and writes --out (other ranks write --out too when given).\n\n" + disclaimer,
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.String("coordinators") != "" {
				if err := refuseFlags(c, func(name string) bool { return agentFlags()[name] },
					"not used under --coordinators: the sweep spec sets the training settings and the assignment the rank, world and peers (drop them, or run a static rank without --coordinators)"); err != nil {
					return err
				}
				return runAgent(c)
			}
			if err := refuseFlags(c, func(name string) bool { return !agentOnlyFlags()[name] }, "only used under --coordinators"); err != nil {
				return err
			}
			return runStaticRank(c)
		},
	}
}

// agentFlags are the flags `loraft trainer --coordinators` reads: where it
// registers and listens, its store, device, caches and retention. Every
// other trainer flag is a training setting (the sweep's) or a static-mode
// ring setting (the assignment's), and is refused under --coordinators.
func agentFlags() map[string]bool {
	names := map[string]bool{"coordinators": true, "id": true, "listen": true, "advertise": true, "events": true, "device": true, "compute-dtype": true, "grad-checkpoint": true, "insecure": true,
		"cache-dir": true, "no-cache": true, "step-timeout": true, "spool-dir": true, "keep-latest": true, "keep-best": true, "metrics-addr": true}
	for _, fs := range [][]cli.Flag{storeFlags(), tlsFlags()} {
		for _, f := range fs {
			names[f.Names()[0]] = true
		}
	}
	return names
}

// agentOnlyFlags are the agent's flags that a static rank does not read
// (an empty --coordinators, e.g. from the environment, means static mode).
func agentOnlyFlags() map[string]bool {
	return map[string]bool{"id": true, "listen": true, "advertise": true, "events": true, "spool-dir": true, "metrics-addr": true}
}

// refuseFlags fails, naming them in the command's flag order, when flags
// that allowed rejects were given (on the command line or through their
// environment variables).
func refuseFlags(c *cli.Context, allowed func(name string) bool, why string) error {
	var bad []string
	for _, f := range c.Command.Flags {
		if name := f.Names()[0]; c.IsSet(name) && !allowed(name) {
			bad = append(bad, "--"+name)
		}
	}
	switch len(bad) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("flag %s is %s", bad[0], why)
	}
	return fmt.Errorf("flags %s are %s", strings.Join(bad, ", "), why)
}

// runStaticRank is `loraft trainer` without --coordinators: one rank of a
// ring of static peers.
func runStaticRank(c *cli.Context) error {
	for _, f := range []string{"data", "out", "peers"} {
		if c.String(f) == "" {
			return fmt.Errorf("flag --%s is required without --coordinators", f)
		}
	}
	if !c.IsSet("rank") || !c.IsSet("world") {
		return errors.New("flags --rank and --world are required without --coordinators")
	}
	peers := splitList(c.String("peers"))
	serverTLS, clientTLS, err := mutualTLS(c)
	if err != nil {
		return err
	}
	var listen []addrFlag
	for _, p := range peers {
		listen = append(listen, addrFlag{"peers", p})
	}
	if err := secureByDefault(c, serverTLS != nil, listen); err != nil {
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
}

// runAgent is `loraft trainer --coordinators …`.
func runAgent(c *cli.Context) error {
	if _, err := libtorch.SetThreads(); err != nil {
		return err
	}
	store, err := openStore(c, true)
	if err != nil {
		return err
	}
	device, err := trainer.ParseDevice(c.String("device"))
	if err != nil {
		return fmt.Errorf("flag --device: %w", err)
	}
	serverTLS, clientTLS, err := mutualTLS(c)
	if err != nil {
		return err
	}
	if err := secureByDefault(c, serverTLS != nil, []addrFlag{{"listen", c.String("listen")}, {"metrics-addr", c.String("metrics-addr")}}); err != nil {
		return err
	}
	cl, err := dialCoordinators(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	id := c.String("id")
	if clientTLS != nil {
		// The coordinators let a trainer act only as the id in its certificate.
		if id, err = pki.TrainerID(clientTLS, id); err != nil {
			return fmt.Errorf("flags --id %s, --tls-cert: %w", c.String("id"), err)
		}
	}
	if id == "" {
		host, _ := os.Hostname()
		id = host + "-" + c.String("listen")
	}
	var events io.Writer
	if p := c.Path("events"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("flag --events: %w", err)
		}
		defer f.Close()
		events = f
	}
	cacheDir := c.Path("cache-dir")
	if cacheDir == "" {
		cacheDir = cacheRoot()
	}
	if err := resolveCompute(c, device); err != nil {
		return err
	}
	address, listen := c.String("listen"), ""
	if adv := c.String("advertise"); adv != "" && adv != address {
		address, listen = adv, c.String("listen")
	}
	runner := &agent.JobRunner{Store: store, CacheDir: cacheDir, Listen: listen, NoTokenCache: c.Bool("no-cache"), Device: device, Compute: c.String("compute-dtype"), Recompute: c.Bool("grad-checkpoint"),
		StepTimeout: c.Duration("step-timeout"), ServerTLS: serverTLS, ClientTLS: clientTLS, Retention: retentionFlags(c), SpoolDir: c.Path("spool-dir"),
		Log: func(msg string) { slog.Info(msg, "trainer", id) }}
	if addr := c.String("metrics-addr"); addr != "" {
		runner.Metrics = agent.NewMetrics()
		ms, err := agent.ServeMetrics(addr, runner.Metrics.Gatherer(), serverTLS, slog.Default())
		if err != nil {
			return fmt.Errorf("flag --metrics-addr: %w", err)
		}
		defer ms.Close()
		fmt.Fprintf(c.App.ErrWriter, "trainer %s: Prometheus /metrics on %s\n", id, ms.Addr())
	}
	a, err := agent.New(agent.Config{ID: id, Address: address, Coordinator: cl, Runner: runner, Events: events})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "trainer %s: all-reduce on %s, coordinators %s, store %s\n", id, c.String("listen"), c.String("coordinators"), store)
	return a.Run(c.Context)
}
