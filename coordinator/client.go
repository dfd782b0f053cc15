package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Client talks to a coordinator group: it sends writes to the leader,
// following leader hints, and retries across the coordinators with backoff
// while no leader answers. It is safe for concurrent use.
type Client struct {
	addrs []string
	opts  []grpc.DialOption
	// Backoff is the first retry delay (doubled up to 1 s); Attempts bounds retries.
	Backoff  time.Duration
	Attempts int

	mu     sync.Mutex // guards conns and leader
	conns  map[string]*grpc.ClientConn
	leader string
}

// NewClient connects lazily to the coordinators at addrs (gRPC API addresses).
func NewClient(addrs []string, opts ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("coordinator client: no coordinator addresses")
	}
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Client{addrs: addrs, conns: map[string]*grpc.ClientConn{}, opts: opts, Backoff: 50 * time.Millisecond, Attempts: 40}, nil
}

func (c *Client) conn(addr string) (pb.CoordinatorClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, c.opts...); err != nil {
			return nil, fmt.Errorf("coordinator %s: %w", addr, err)
		}
		c.conns[addr] = cc
	}
	return pb.NewCoordinatorClient(cc), nil
}

// write runs call against the leader, retrying on other coordinators.
func (c *Client) write(ctx context.Context, call func(pb.CoordinatorClient) error) error {
	backoff := c.Backoff
	next := 0
	var last error
	for range c.Attempts {
		addr := c.leaderAddr()
		if addr == "" {
			addr = c.addrs[next%len(c.addrs)]
			next++
		}
		cl, err := c.conn(addr)
		if err == nil {
			err = call(cl)
		}
		if err == nil {
			c.setLeader(addr)
			return nil
		}
		last = err
		st, _ := status.FromError(err)
		c.setLeader("")
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			// A follower names the leader (LeaderHint); go straight there.
			if leader := leaderHint(st); leader != "" {
				c.setLeader(leader)
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("coordinator call: %w: %w (last error: %v)", ErrNoLeader, ctx.Err(), last)
			}
		default:
			return err // the leader answered: not a routing problem
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("coordinator call: %w: %w (last error: %v)", ErrNoLeader, ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return fmt.Errorf("coordinator call: %w after %d attempts (last error: %v)", ErrNoLeader, c.Attempts, last)
}

// leaderHint returns the leader's API address a follower named, or "".
func leaderHint(st *status.Status) string {
	for _, d := range st.Details() {
		if h, ok := d.(*pb.LeaderHint); ok {
			return h.GetApiAddress()
		}
	}
	return ""
}

func (c *Client) leaderAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

// Leader returns the API address of the coordinator that last answered a
// leader-only call, or "".
func (c *Client) Leader() string { return c.leaderAddr() }

// LaunchSweep records a sweep through the leader; launching the same sweep
// again succeeds.
func (c *Client) LaunchSweep(ctx context.Context, s *pb.Sweep) error {
	return c.LaunchSweepWithDataset(ctx, s, nil)
}

// LaunchSweepWithDataset records a sweep and the record of its dataset.
func (c *Client) LaunchSweepWithDataset(ctx context.Context, s *pb.Sweep, d *pb.Dataset) error {
	return c.write(ctx, func(cl pb.CoordinatorClient) error {
		_, err := cl.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: s, Dataset: d})
		return err
	})
}

// leaderCall runs one leader-only RPC with routing and retries.
func leaderCall[Req, Resp any](ctx context.Context, c *Client, rpc func(pb.CoordinatorClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var resp Resp
	err := c.write(ctx, func(cl pb.CoordinatorClient) error {
		var err error
		resp, err = rpc(cl, ctx, req)
		return err
	})
	return resp, err
}

// ConsistentState reads the state linearizably from the leader.
func (c *Client) ConsistentState(ctx context.Context) (*pb.State, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.GetState, &pb.GetStateRequest{Consistent: true})
}

// Sweep returns a sweep with its trials' live progress from the leader;
// while no leader answers, any coordinator's applied state (no progress).
func (c *Client) Sweep(ctx context.Context, name string) (*pb.SweepStatus, error) {
	st, err := leaderCall(ctx, c, pb.CoordinatorClient.GetSweep, &pb.GetSweepRequest{Name: name, Consistent: true})
	if err == nil || status.Code(err) == codes.NotFound {
		return st, err
	}
	for _, addr := range c.addrs {
		cl, cerr := c.conn(addr)
		if cerr != nil {
			continue
		}
		if st, err = cl.GetSweep(ctx, &pb.GetSweepRequest{Name: name}); err == nil || status.Code(err) == codes.NotFound {
			return st, err
		}
	}
	return nil, fmt.Errorf("coordinator sweep %s: %w", name, err)
}

// ResumeRun requeues a failed or cancelled run (trial).
func (c *Client) ResumeRun(ctx context.Context, run string) error {
	_, err := leaderCall(ctx, c, pb.CoordinatorClient.ResumeRun, &pb.ResumeRunRequest{Run: run})
	return err
}

// BestTrial returns the sweep's best trial.
func (c *Client) BestTrial(ctx context.Context, sweep string) (*pb.Trial, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.BestTrial, &pb.BestTrialRequest{Sweep: sweep})
}

// AddVoter adds a coordinator to the group.
func (c *Client) AddVoter(ctx context.Context, m *pb.Member) error {
	_, err := leaderCall(ctx, c, pb.CoordinatorClient.AddVoter, &pb.AddVoterRequest{Member: m})
	return err
}

// RemoveVoter removes a coordinator from the group.
func (c *Client) RemoveVoter(ctx context.Context, id string) error {
	_, err := leaderCall(ctx, c, pb.CoordinatorClient.RemoveVoter, &pb.RemoveVoterRequest{Id: id})
	return err
}

// RegisterTrainer records a trainer with the leader.
func (c *Client) RegisterTrainer(ctx context.Context, req *pb.RegisterTrainerRequest) (*pb.RegisterTrainerResponse, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.RegisterTrainer, req)
}

// Heartbeat renews a trainer's lease and fetches its assignment.
func (c *Client) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.Heartbeat, req)
}

// ReportCheckpoint records a committed checkpoint.
func (c *Client) ReportCheckpoint(ctx context.Context, req *pb.ReportCheckpointRequest) (*pb.ReportCheckpointResponse, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.ReportCheckpoint, req)
}

// ReportResult ends or requeues a trial.
func (c *Client) ReportResult(ctx context.Context, req *pb.ReportResultRequest) (*pb.ReportResultResponse, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.ReportResult, req)
}

// CancelSweep cancels a sweep through the leader.
func (c *Client) CancelSweep(ctx context.Context, name string) error {
	return c.write(ctx, func(cl pb.CoordinatorClient) error {
		_, err := cl.CancelSweep(ctx, &pb.CancelSweepRequest{Name: name})
		return err
	})
}

// State reads the state from the first coordinator that answers.
func (c *Client) State(ctx context.Context) (*pb.State, error) {
	var last error
	for _, addr := range c.addrs {
		cl, err := c.conn(addr)
		if err != nil {
			last = err
			continue
		}
		st, err := cl.GetState(ctx, &pb.GetStateRequest{})
		if err == nil {
			return st, nil
		}
		last = err
	}
	return nil, fmt.Errorf("coordinator state: %w", last)
}

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for _, cc := range c.conns {
		err = errors.Join(err, cc.Close())
	}
	return err
}
