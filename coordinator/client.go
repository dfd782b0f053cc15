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
	grpckeepalive "google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Client talks to a coordinator group: it sends writes to the leader,
// following leader hints, and retries across the coordinators with backoff
// while no leader answers. Every attempt has its own deadline, so a
// coordinator that stops answering without closing its connections (paused,
// black-holed) costs one attempt: it is then suspected and skipped for a
// while, and the others are tried. It is safe for concurrent use.
type Client struct {
	addrs []string
	opts  []grpc.DialOption
	// Backoff is the first retry delay (doubled up to 1 s); Attempts bounds retries.
	Backoff  time.Duration
	Attempts int
	// AttemptTimeout bounds one try on one coordinator (at most half of
	// what is left of the call's own deadline, so a second try fits).
	AttemptTimeout time.Duration
	// HedgeDelay is how long a read waits for one coordinator before it
	// also asks the others.
	HedgeDelay time.Duration
	// SuspectFor is how long a coordinator whose attempt timed out is tried
	// only when no other is left.
	SuspectFor time.Duration

	mu      sync.Mutex // guards conns, leader and suspect
	conns   map[string]*grpc.ClientConn
	leader  string
	suspect map[string]time.Time // address → when it last timed out
}

// clientKeepalive makes a connection whose peer stopped answering fail within
// seconds instead of when the kernel gives up on it.
var clientKeepalive = grpc.WithKeepaliveParams(grpckeepalive.ClientParameters{Time: 5 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true})

// NewClient connects lazily to the coordinators at addrs (gRPC API addresses).
func NewClient(addrs []string, opts ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("coordinator client: no coordinator addresses")
	}
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append(opts, clientKeepalive, clientMsgSizes)
	return &Client{addrs: addrs, conns: map[string]*grpc.ClientConn{}, suspect: map[string]time.Time{}, opts: opts,
		Backoff: 50 * time.Millisecond, Attempts: 40, AttemptTimeout: 2 * time.Second, HedgeDelay: 300 * time.Millisecond, SuspectFor: 10 * time.Second}, nil
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

// attemptContext bounds one attempt: AttemptTimeout, or half of what is
// left of ctx's deadline when that is shorter (but at least 50 ms).
func (c *Client) attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.AttemptTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl)/2, 50*time.Millisecond))
	}
	return context.WithTimeout(ctx, d)
}

// pick returns the coordinator to try next: the known leader unless it is
// suspected, else the next unsuspected address in turn, else the one
// suspected longest ago.
func (c *Client) pick(next *int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.leader != "" && !c.suspectedLocked(c.leader, now) {
		return c.leader
	}
	for range c.addrs {
		addr := c.addrs[*next%len(c.addrs)]
		*next++
		if !c.suspectedLocked(addr, now) {
			return addr
		}
	}
	oldest := c.addrs[0]
	for _, a := range c.addrs {
		if c.suspect[a].Before(c.suspect[oldest]) {
			oldest = a
		}
	}
	return oldest
}

func (c *Client) suspectedLocked(addr string, now time.Time) bool {
	t, ok := c.suspect[addr]
	return ok && now.Sub(t) < c.SuspectFor
}

// setSuspect marks addr as not answering (or clears it).
func (c *Client) setSuspect(addr string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.suspect[addr] = time.Now()
		if c.leader == addr {
			c.leader = ""
		}
	} else {
		delete(c.suspect, addr)
	}
}

// write runs call against the leader, retrying on other coordinators. call
// gets the attempt's context.
func (c *Client) write(ctx context.Context, call func(context.Context, pb.CoordinatorClient) error) error {
	backoff := c.Backoff
	next := 0
	var last error
	for range c.Attempts {
		addr := c.pick(&next)
		cl, err := c.conn(addr)
		if err == nil {
			actx, cancel := c.attemptContext(ctx)
			err = call(actx, cl)
			timedOut := actx.Err() != nil && ctx.Err() == nil
			cancel()
			if timedOut && err != nil {
				// The coordinator did not answer in time: skip it for a while.
				c.setSuspect(addr, true)
				last = fmt.Errorf("coordinator %s: no answer within the attempt's deadline: %w", addr, err)
				continue
			}
		}
		if err == nil {
			c.setLeader(addr)
			c.setSuspect(addr, false)
			return nil
		}
		last = err
		st, _ := status.FromError(err)
		c.setLeader("")
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			if ctx.Err() != nil {
				return fmt.Errorf("coordinator call: %w: %w (last error: %v)", ErrNoLeader, ctx.Err(), last)
			}
			// A follower names the leader (LeaderHint); go straight there
			// unless it is the one that stopped answering.
			if leader := leaderHint(st); leader != "" && !c.suspected(leader) {
				c.setLeader(leader)
				continue
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

func (c *Client) suspected(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.suspectedLocked(addr, time.Now())
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
	return c.write(ctx, func(actx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.LaunchSweep(actx, &pb.LaunchSweepRequest{Sweep: s, Dataset: d})
		return err
	})
}

// leaderCall runs one leader-only RPC with routing and retries.
func leaderCall[Req, Resp any](ctx context.Context, c *Client, rpc func(pb.CoordinatorClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var resp Resp
	err := c.write(ctx, func(actx context.Context, cl pb.CoordinatorClient) error {
		var err error
		resp, err = rpc(cl, actx, req)
		return err
	})
	return resp, err
}

// ConsistentState reads the state linearizably from the leader.
func (c *Client) ConsistentState(ctx context.Context) (*pb.State, error) {
	return leaderCall(ctx, c, pb.CoordinatorClient.GetState, &pb.GetStateRequest{Consistent: true})
}

// ReadBudget is how long Sweep waits for the leader's consistent answer
// before it settles for one coordinator's applied state, marked stale.
const ReadBudget = 1500 * time.Millisecond

// Sweep returns a sweep with its trials' live progress from the leader.
// When no leader answers within ReadBudget it returns the first applied
// state any coordinator serves, with Stale set (and no progress).
func (c *Client) Sweep(ctx context.Context, name string) (*pb.SweepStatus, error) {
	lctx, cancel := context.WithTimeout(ctx, ReadBudget)
	st, err := leaderCall(lctx, c, pb.CoordinatorClient.GetSweep, &pb.GetSweepRequest{Name: name, Consistent: true})
	cancel()
	if err == nil || status.Code(err) == codes.NotFound {
		return st, err
	}
	st, serr := hedged(ctx, c, func(actx context.Context, cl pb.CoordinatorClient) (*pb.SweepStatus, error) {
		return cl.GetSweep(actx, &pb.GetSweepRequest{Name: name})
	})
	if serr != nil {
		return nil, fmt.Errorf("coordinator sweep %s: %w (leader: %v)", name, serr, err)
	}
	st.Stale = true
	return st, nil
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
	return c.write(ctx, func(actx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.CancelSweep(actx, &pb.CancelSweepRequest{Name: name})
		return err
	})
}

// State reads one coordinator's applied state: the first to answer. The
// coordinators are asked one after another, HedgeDelay apart, so one that
// does not answer delays the read by that much, not by its timeout.
func (c *Client) State(ctx context.Context) (*pb.State, error) {
	st, err := hedged(ctx, c, func(actx context.Context, cl pb.CoordinatorClient) (*pb.State, error) {
		return cl.GetState(actx, &pb.GetStateRequest{})
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator state: %w", err)
	}
	return st, nil
}

// hedged runs a read on the coordinators, starting the next one each
// HedgeDelay (or as soon as one fails) until one answers. NotFound is an
// answer. Each try has its own attempt deadline.
func hedged[T any](ctx context.Context, c *Client, read func(context.Context, pb.CoordinatorClient) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, len(c.addrs))
	order := c.readOrder()
	started, failed := 0, 0
	start := func() {
		addr := order[started]
		started++
		go func() {
			var zero T
			cl, err := c.conn(addr)
			if err != nil {
				results <- result{zero, err}
				return
			}
			actx, acancel := c.attemptContext(ctx)
			defer acancel()
			v, err := read(actx, cl)
			if err != nil && actx.Err() != nil && ctx.Err() == nil {
				c.setSuspect(addr, true)
			}
			results <- result{v, err}
		}()
	}
	start()
	hedge := time.NewTimer(c.HedgeDelay)
	defer hedge.Stop()
	var last error
	for {
		select {
		case r := <-results:
			if r.err == nil || status.Code(r.err) == codes.NotFound {
				return r.v, r.err
			}
			last, failed = r.err, failed+1
			if failed == len(order) {
				var zero T
				return zero, last
			}
			if started < len(order) {
				start()
			}
		case <-hedge.C:
			if started < len(order) {
				start()
				hedge.Reset(c.HedgeDelay)
			}
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		}
	}
}

// readOrder lists the coordinators for a read: the known leader first,
// suspected ones last.
func (c *Client) readOrder() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var good, bad []string
	if c.leader != "" && !c.suspectedLocked(c.leader, now) {
		good = append(good, c.leader)
	}
	for _, a := range c.addrs {
		switch {
		case a == c.leader && len(good) > 0 && good[0] == a:
		case c.suspectedLocked(a, now):
			bad = append(bad, a)
		default:
			good = append(good, a)
		}
	}
	return append(good, bad...)
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
