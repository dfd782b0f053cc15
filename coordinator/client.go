package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Client talks to a coordinator group: it sends writes to the leader,
// following leader hints, and retries across the coordinators with backoff
// while no leader answers.
type Client struct {
	addrs []string
	conns map[string]*grpc.ClientConn
	opts  []grpc.DialOption
	// Backoff is the first retry delay (doubled up to 1 s); Attempts bounds retries.
	Backoff  time.Duration
	Attempts int
	leader   string
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
		addr := c.leader
		if addr == "" {
			addr = c.addrs[next%len(c.addrs)]
			next++
		}
		cl, err := c.conn(addr)
		if err == nil {
			err = call(cl)
		}
		if err == nil {
			c.leader = addr
			return nil
		}
		last = err
		st, _ := status.FromError(err)
		c.leader = ""
		switch st.Code() {
		case codes.FailedPrecondition:
			for _, d := range st.Details() {
				if h, ok := d.(*pb.LeaderHint); ok && h.GetApiAddress() != "" {
					c.leader = h.GetApiAddress()
				}
			}
			if c.leader != "" {
				continue // go straight to the named leader
			}
		case codes.Unavailable, codes.DeadlineExceeded:
		default:
			return err // the leader answered: not a routing problem
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("coordinator write: %w (last error: %v)", ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return fmt.Errorf("coordinator write: no leader answered after %d attempts: %w", c.Attempts, last)
}

// LaunchSweep records a sweep through the leader.
func (c *Client) LaunchSweep(ctx context.Context, s *pb.Sweep) error {
	return c.write(ctx, func(cl pb.CoordinatorClient) error {
		_, err := cl.LaunchSweep(ctx, &pb.LaunchSweepRequest{Sweep: s})
		return err
	})
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
	var err error
	for _, cc := range c.conns {
		err = errors.Join(err, cc.Close())
	}
	return err
}
