package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
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

// dialCoordinators connects a client to --coordinators (mutual TLS with the TLS flags).
func dialCoordinators(c *cli.Context) (*coordinator.Client, error) {
	addrs := splitList(c.String("coordinators"))
	if len(addrs) == 0 {
		return nil, errors.New("flag --coordinators: no address")
	}
	_, clientTLS, err := mutualTLS(c)
	if err != nil {
		return nil, err
	}
	return coordinator.NewClient(addrs, transportCredentials(clientTLS))
}

func transportCredentials(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// peerSpec is one coordinator of --peers: ID=RAFT_ADDR/API_ADDR.
type peerSpec struct{ id, raft, api string }

func parsePeers(s string) ([]peerSpec, error) {
	var out []peerSpec
	for _, p := range splitList(s) {
		id, addrs, ok := strings.Cut(p, "=")
		raftAddr, api, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 || id == "" || raftAddr == "" || api == "" {
			return nil, fmt.Errorf("flag --peers: %q, want ID=RAFT_HOST:PORT/API_HOST:PORT", p)
		}
		out = append(out, peerSpec{id, raftAddr, api})
	}
	return out, nil
}

// raftProfile is a named set of raft timeouts.
func raftProfile(name string) (hb, election, lease time.Duration, err error) {
	switch name {
	case "default":
		return 0, 0, 0, nil // hashicorp/raft's: 1 s, 1 s, 500 ms
	case "fast":
		// For a LAN or loopback: elections in a few hundred milliseconds.
		return 150 * time.Millisecond, 150 * time.Millisecond, 100 * time.Millisecond, nil
	}
	return 0, 0, 0, fmt.Errorf("flag --raft-profile: %q, want default or fast", name)
}

func coordinatorCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "id", Usage: "this coordinator's stable raft server ID"},
		&cli.StringFlag{Name: "raft-addr", Usage: "raft TCP address (host:port)"},
		&cli.StringFlag{Name: "api-addr", Usage: "gRPC API address (host:port) for the CLI and trainers"},
		&cli.PathFlag{Name: "dir", Usage: "raft data directory (log, stable store, snapshots)"},
		&cli.StringFlag{Name: "peers", Usage: "the initial group, the same on every member: ID=RAFT_ADDR/API_ADDR,... (bootstraps a fresh group; ignored once it has state). Without it the node waits to be added by `loraft coordinator join`"},
		&cli.StringFlag{Name: "raft-profile", Value: "default", Usage: "raft timeouts: default (hashicorp/raft's) or fast (LAN)"},
		&cli.DurationFlag{Name: "lease", Value: 3 * time.Second, Usage: "a trainer silent this long is lost and its trial requeued"},
	}
	flags = append(flags, tlsFlags()...)
	return &cli.Command{
		Name:  "coordinator",
		Usage: "run one member of the raft-replicated coordinator group (scheduler, leases, sweep state)",
		Description: "Start three (or five) with the same --peers. The leader schedules trials on trainers;\n" +
			"followers answer reads and send writers to the leader. TLS flags secure the gRPC API and raft.",
		Flags: flags,
		Subcommands: []*cli.Command{
			{
				Name:  "join",
				Usage: "add a coordinator (already started without --peers) to the group as a voter",
				Flags: append([]cli.Flag{coordinatorsFlag(),
					&cli.StringFlag{Name: "id", Required: true}, &cli.StringFlag{Name: "raft-addr", Required: true}, &cli.StringFlag{Name: "api-addr", Required: true}},
					tlsFlags()...),
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
				Flags: append([]cli.Flag{coordinatorsFlag(), &cli.StringFlag{Name: "id", Required: true}}, tlsFlags()...),
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

// coordinatorOptions is one coordinator process's configuration.
type coordinatorOptions struct {
	id, raftAddr, apiAddr, dir string
	peers                      []peerSpec
	profile                    string
	lease                      time.Duration
	serverTLS, clientTLS       *tls.Config
}

func runCoordinator(c *cli.Context) error {
	for _, f := range []string{"id", "raft-addr", "api-addr", "dir"} {
		if c.String(f) == "" {
			return fmt.Errorf("flag --%s is required", f)
		}
	}
	peers, err := parsePeers(c.String("peers"))
	if err != nil {
		return err
	}
	serverTLS, clientTLS, err := mutualTLS(c)
	if err != nil {
		return err
	}
	o := coordinatorOptions{id: c.String("id"), raftAddr: c.String("raft-addr"), apiAddr: c.String("api-addr"), dir: c.Path("dir"),
		peers: peers, profile: c.String("raft-profile"), lease: c.Duration("lease"), serverTLS: serverTLS, clientTLS: clientTLS}
	member, err := startCoordinator(c.Context, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "coordinator %s: raft %s, API %s, data %s\n", o.id, o.raftAddr, member.api.Addr(), o.dir)
	<-c.Context.Done()
	return member.Close()
}

// coordinatorMember is a running coordinator: raft node, API server, scheduler.
type coordinatorMember struct {
	node   *coordinator.Node
	server *grpc.Server
	api    net.Listener
	cancel context.CancelFunc
	done   chan struct{}
}

func startCoordinator(ctx context.Context, o coordinatorOptions) (*coordinatorMember, error) {
	hb, el, ll, err := raftProfile(o.profile)
	if err != nil {
		return nil, err
	}
	node, err := coordinator.OpenNode(coordinator.NodeConfig{ID: o.id, Addr: o.raftAddr, Dir: o.dir,
		HeartbeatTimeout: hb, ElectionTimeout: el, LeaderLeaseTimeout: ll, ServerTLS: o.serverTLS, ClientTLS: o.clientTLS})
	if err != nil {
		return nil, err
	}
	apiAddrs := map[string]string{}
	if len(o.peers) > 0 {
		servers := map[string]string{}
		for _, p := range o.peers {
			servers[p.id], apiAddrs[p.raft] = p.raft, p.api
		}
		if _, ok := servers[o.id]; !ok {
			node.Close()
			return nil, fmt.Errorf("flag --peers does not list this coordinator's --id %s", o.id)
		}
		if err := node.Bootstrap(servers); err != nil {
			node.Close()
			return nil, fmt.Errorf("bootstrapping the raft group: %w", err)
		}
	}
	lis, err := net.Listen("tcp", o.apiAddr)
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("coordinator API on %s: %w", o.apiAddr, err)
	}
	var opts []grpc.ServerOption
	if o.serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.serverTLS)))
	}
	srv := grpc.NewServer(opts...)
	api := coordinator.NewServer(node, coordinator.ServerConfig{APIAddrs: apiAddrs, Scheduler: coordinator.SchedulerConfig{Lease: o.lease}})
	pb.RegisterCoordinatorServer(srv, api)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &coordinatorMember{node: node, server: srv, api: lis, cancel: cancel, done: make(chan struct{})}
	go func() { _ = srv.Serve(lis) }()
	go func() {
		defer close(m.done)
		api.RunScheduler(sctx)
	}()
	return m, nil
}

// Close stops the scheduler, the API and the raft node.
func (m *coordinatorMember) Close() error {
	m.cancel()
	<-m.done
	m.server.Stop()
	return m.node.Close()
}
