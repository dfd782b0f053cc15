package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/coordinator/dashboard"
	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
)

// coordinatorsFlag names the coordinator group for clients.
func coordinatorsFlag() cli.Flag {
	return &cli.StringFlag{Name: "coordinators", EnvVars: []string{"LORAFT_COORDINATORS"}, Value: "127.0.0.1:7400",
		Usage: "gRPC API addresses of the coordinators, comma-separated (any of them will do)"}
}

// withCoordinators wraps an action that talks to the coordinators: it
// dials --coordinators (lazily, with the TLS flags) and closes the client after.
func withCoordinators(action func(c *cli.Context, cl *coordinator.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		cl, err := dialCoordinators(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		return action(c, cl)
	}
}

// dialCoordinators connects a client to --coordinators: mutual TLS with the
// TLS flags; plaintext only to loopback, or with --insecure.
func dialCoordinators(c *cli.Context) (*coordinator.Client, error) {
	addrs := splitList(c.String("coordinators"))
	if len(addrs) == 0 {
		return nil, errors.New("flag --coordinators: no address")
	}
	_, clientTLS, err := mutualTLS(c)
	if err != nil {
		return nil, err
	}
	if clientTLS == nil {
		if err := plaintextDial(c, "coordinators", addrs); err != nil {
			return nil, err
		}
	}
	return coordinator.NewClient(addrs, transportCredentials(clientTLS))
}

// transportCredentials dials the coordinators with cfg (nil: plaintext),
// accepting only a coordinator's certificate from the server.
func transportCredentials(cfg *tls.Config) grpc.DialOption { return coordinator.DialTLS(cfg) }

// parsePeers reads --peers: ID=RAFT_ADDR/API_ADDR,...
func parsePeers(s string) ([]coordinator.Peer, error) {
	var out []coordinator.Peer
	for _, p := range splitList(s) {
		id, addrs, ok := strings.Cut(p, "=")
		raftAddr, api, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 || id == "" || raftAddr == "" || api == "" {
			return nil, fmt.Errorf("flag --peers: %q, want ID=RAFT_HOST:PORT/API_HOST:PORT", p)
		}
		out = append(out, coordinator.Peer{ID: id, RaftAddr: raftAddr, APIAddr: api})
	}
	return out, nil
}

func coordinatorCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "id", Usage: "this coordinator's stable raft server ID"},
		&cli.StringFlag{Name: "raft-addr", Usage: "raft TCP address (host:port)"},
		&cli.StringFlag{Name: "api-addr", Usage: "gRPC API address (host:port) for the CLI and trainers"},
		&cli.PathFlag{Name: "dir", Usage: "raft data directory (log, stable store, snapshots)"},
		&cli.StringFlag{Name: "peers", Usage: "the initial group, the same on every member: ID=RAFT_ADDR/API_ADDR,... (bootstraps a fresh group; ignored once it has state). Without it the node waits to be added by `loraft coordinator join`"},
		&cli.StringFlag{Name: "raft-profile", Value: "default", Usage: "raft timeouts: default (hashicorp/raft's: 1 s heartbeat and election) or lan (150 ms)"},
		&cli.DurationFlag{Name: "lease", Value: 3 * time.Second, Usage: "a trainer silent this long is lost and its trial requeued"},
		&cli.DurationFlag{Name: "sweep-retention", Usage: "the leader deletes sweeps that ended longer ago than this from the state (0: keep them; store objects always stay)"},
		&cli.DurationFlag{Name: "forget-trainer-after", Value: coordinator.DefaultForgetTrainerAfter, Usage: "the leader forgets an idle trainer silent this long"},
		&cli.StringFlag{Name: "http-addr", Usage: "HTTP listener for the dashboard and Prometheus /metrics (host:port; empty: none). With the TLS flags it serves HTTPS; without them only loopback, unless --insecure"},
		&cli.PathFlag{Name: "http-tokens-file", Usage: "dashboard tokens for browsers and scripts: a file of '<role> <sha256-of-token>' lines, made with loraft certs token"},
	}
	flags = append(flags, tlsFlags()...)
	flags = append(flags, insecureFlag())
	return &cli.Command{
		Name:  "coordinator",
		Usage: "run one member of the raft-replicated coordinator group (scheduler, leases, sweep state)",
		Description: "Start three (or five) with the same --peers. The leader schedules trials on trainers;\n" +
			"followers answer reads and send writers to the leader. TLS flags secure the gRPC API and raft\n" +
			"(certificates from `loraft certs init`); without them only loopback addresses are served, unless --insecure.",
		Flags: flags,
		Subcommands: []*cli.Command{
			{
				Name:  "join",
				Usage: "add a coordinator (already started without --peers) to the group as a voter",
				Flags: append([]cli.Flag{coordinatorsFlag(),
					&cli.StringFlag{Name: "id", Required: true}, &cli.StringFlag{Name: "raft-addr", Required: true}, &cli.StringFlag{Name: "api-addr", Required: true},
					insecureFlag()}, tlsFlags()...),
				Action: withCoordinators(func(c *cli.Context, cl *coordinator.Client) error {
					if err := cl.AddVoter(c.Context, &pb.Member{Id: c.String("id"), RaftAddress: c.String("raft-addr"), ApiAddress: c.String("api-addr")}); err != nil {
						return fmt.Errorf("adding coordinator %s: %w", c.String("id"), err)
					}
					fmt.Fprintf(c.App.Writer, "coordinator %s (raft %s, API %s) joined the group\n", c.String("id"), c.String("raft-addr"), c.String("api-addr"))
					return nil
				}),
			},
			{
				Name:  "remove",
				Usage: "remove a coordinator from the group",
				Flags: append([]cli.Flag{coordinatorsFlag(), &cli.StringFlag{Name: "id", Required: true}, insecureFlag()}, tlsFlags()...),
				Action: withCoordinators(func(c *cli.Context, cl *coordinator.Client) error {
					if err := cl.RemoveVoter(c.Context, c.String("id")); err != nil {
						return fmt.Errorf("removing coordinator %s: %w", c.String("id"), err)
					}
					fmt.Fprintf(c.App.Writer, "coordinator %s removed from the group\n", c.String("id"))
					return nil
				}),
			},
		},
		Action: runCoordinator,
	}
}

// coordinatorConfig reads the coordinator's flags into a coordinator.Config.
func coordinatorConfig(c *cli.Context) (coordinator.Config, error) {
	cfg := coordinator.DefaultConfig()
	for _, f := range []string{"id", "raft-addr", "api-addr", "dir"} {
		if c.String(f) == "" {
			return cfg, fmt.Errorf("flag --%s is required", f)
		}
	}
	peers, err := parsePeers(c.String("peers"))
	if err != nil {
		return cfg, err
	}
	timing, err := coordinator.Profile(c.String("raft-profile"))
	if err != nil {
		return cfg, fmt.Errorf("flag --raft-profile: %w", err)
	}
	serverTLS, clientTLS, err := mutualTLS(c)
	if err != nil {
		return cfg, err
	}
	if err := secureByDefault(c, serverTLS != nil, []addrFlag{{"raft-addr", c.String("raft-addr")}, {"api-addr", c.String("api-addr")}, {"http-addr", c.String("http-addr")}}); err != nil {
		return cfg, err
	}
	if serverTLS != nil {
		// Raft admits only coordinator certificates: catch a wrong one here
		// rather than as refused raft connections.
		id, err := pki.FromCertificate(serverTLS.Certificates[0].Leaf)
		if err != nil {
			return cfg, fmt.Errorf("flag --tls-cert: %w", err)
		}
		if id.Role != pki.RoleCoordinator {
			return cfg, fmt.Errorf("flag --tls-cert: %s is not a coordinator's certificate (see `loraft certs init`)", id)
		}
	}
	cfg.ID, cfg.RaftAddr, cfg.APIAddr, cfg.Dir, cfg.Peers = c.String("id"), c.String("raft-addr"), c.String("api-addr"), c.Path("dir"), peers
	cfg.Raft, cfg.Scheduler.Lease = timing, c.Duration("lease")
	cfg.Scheduler.SweepRetention, cfg.Scheduler.ForgetTrainerAfter = c.Duration("sweep-retention"), c.Duration("forget-trainer-after")
	cfg.ServerTLS, cfg.ClientTLS, cfg.HTTPAddr = serverTLS, clientTLS, c.String("http-addr")
	cfg.Logger = slog.Default()
	var tokens *dashboard.Tokens
	if p := c.Path("http-tokens-file"); p != "" {
		if tokens, err = dashboard.LoadTokens(p); err != nil {
			return cfg, fmt.Errorf("flag --http-tokens-file: %w", err)
		}
	}
	cfg.HTTPHandlers = coordinator.Dashboard(c.Context, dashboard.Config{Tokens: tokens})
	return cfg, flagErrors(cfg.Validate())
}

// configFlags names the flag behind each coordinator.Config field.
var configFlags = map[string]string{"ID": "--id", "RaftAddr": "--raft-addr", "APIAddr": "--api-addr", "Dir": "--dir",
	"Peers": "--peers", "Raft": "--raft-profile", "Scheduler": "--lease", "ServerTLS": "--tls-cert", "ClientTLS": "--tls-cert", "HTTPAddr": "--http-addr",
	"Scheduler.SweepRetention": "--sweep-retention", "Scheduler.ForgetTrainerAfter": "--forget-trainer-after"}

// flagErrors rewrites a Config's field errors in terms of the flags that set them.
func flagErrors(err error) error {
	if err == nil {
		return nil
	}
	var msgs []string
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *coordinator.FieldError
		if !errors.As(e, &fe) {
			msgs = append(msgs, e.Error())
			continue
		}
		top, _, _ := strings.Cut(fe.Field, ".")
		top, _, _ = strings.Cut(top, "[")
		if flag, ok := configFlags[fe.Field]; ok {
			msgs = append(msgs, fmt.Sprintf("flag %s: %s", flag, fe.Msg))
		} else if flag, ok := configFlags[top]; ok {
			msgs = append(msgs, fmt.Sprintf("flag %s: %s", flag, fe.Msg))
		} else {
			msgs = append(msgs, e.Error())
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

func runCoordinator(c *cli.Context) error {
	cfg, err := coordinatorConfig(c)
	if err != nil {
		return err
	}
	co, err := coordinator.Open(c.Context, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "coordinator %s: raft %s, API %s, data %s\n", cfg.ID, cfg.RaftAddr, co.APIAddr(), cfg.Dir)
	if u := co.HTTPURL(); u != "" {
		fmt.Fprintf(c.App.ErrWriter, "dashboard: %s (Prometheus: %smetrics)\n", u, u)
	}
	select {
	case <-c.Context.Done():
		return co.Close()
	case err := <-co.Failed():
		return errors.Join(err, co.Close())
	}
}
