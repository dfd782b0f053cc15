package proccluster

import (
	"context"
	"fmt"
	"time"

	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// How often the waits poll, and how long one read may take.
const (
	statePoll   = 100 * time.Millisecond
	healthPoll  = 20 * time.Millisecond
	readTimeout = 2 * time.Second
)

// Client is a coordinator client of the cluster's coordinators but those in
// except, with the client's usual retries. The caller closes it.
func (c *Cluster) Client(except ...*Coordinator) (*coordinator.Client, error) {
	return coordinator.NewClient(c.APIAddrs(except...))
}

// PollingClient is a coordinator client that retries every few milliseconds
// a few times: for loops that poll (and measure), which the client's growing
// backoff would only slow down and blur.
func PollingClient(addrs []string) (*coordinator.Client, error) {
	cl, err := coordinator.NewClient(addrs)
	if err != nil {
		return nil, err
	}
	cl.Backoff, cl.Attempts = 5*time.Millisecond, 4
	return cl, nil
}

// DialAPI is a plain gRPC connection to one coordinator's API, without the
// client's leader following: for asking one member in particular.
func DialAPI(addr string) (*grpc.ClientConn, pb.CoordinatorClient, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return cc, pb.NewCoordinatorClient(cc), nil
}

// WaitState reads the consistent state (through the leader) until cond
// holds and returns it. When ctx ends first it returns the last state it
// read (nil if none) with an error that says why it was not reached.
func (c *Cluster) WaitState(ctx context.Context, cond func(*pb.State) bool) (*pb.State, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var last *pb.State
	var lastErr error
	for {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		st, err := cl.ConsistentState(rctx)
		cancel()
		if err == nil {
			last, lastErr = st, nil
			if cond(st) {
				return st, nil
			}
		} else {
			lastErr = err
		}
		if err := sleep(ctx, statePoll); err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (last read: %v)", err, lastErr)
			}
			return last, err
		}
	}
}

// Leader waits until a coordinator answers a consistent read and returns
// the one that leads.
func (c *Cluster) Leader(ctx context.Context) (*Coordinator, error) {
	cl, err := PollingClient(c.APIAddrs())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		_, err := cl.ConsistentState(rctx)
		cancel()
		if err == nil {
			if co := c.ByAPI(cl.Leader()); co != nil {
				return co, nil
			}
			err = fmt.Errorf("leader API address %q is none of the coordinators'", cl.Leader())
		}
		if serr := sleep(ctx, healthPoll); serr != nil {
			return nil, fmt.Errorf("no leader: %w (last read: %v)", serr, err)
		}
	}
}

// WaitHealthy waits until every coordinator runs and answers GetState with a
// state for which cond holds (nil: any), and the group answers a consistent
// read through its leader; it returns the leader.
func (c *Cluster) WaitHealthy(ctx context.Context, cond func(*pb.State) bool) (*Coordinator, error) {
	for {
		leader, err := c.healthy(ctx, cond)
		if err == nil {
			return leader, nil
		}
		if serr := sleep(ctx, healthPoll); serr != nil {
			return nil, fmt.Errorf("coordinators not healthy: %w (last: %v)", serr, err)
		}
	}
}

func (c *Cluster) healthy(ctx context.Context, cond func(*pb.State) bool) (*Coordinator, error) {
	for _, co := range c.Coordinators {
		if !co.Running() {
			return nil, fmt.Errorf("%s exited: %v", co.Name, co.ExitErr())
		}
	}
	cl, err := PollingClient(c.APIAddrs())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := cl.ConsistentState(rctx); err != nil {
		return nil, fmt.Errorf("consistent read: %w", err)
	}
	leader := c.ByAPI(cl.Leader())
	if leader == nil {
		return nil, fmt.Errorf("leader API address %q is none of the coordinators'", cl.Leader())
	}
	for _, co := range c.Coordinators {
		cc, api, err := DialAPI(co.APIAddr)
		if err != nil {
			return nil, err
		}
		st, err := api.GetState(rctx, &pb.GetStateRequest{})
		cc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", co.Name, err)
		}
		if cond != nil && !cond(st) {
			return nil, fmt.Errorf("%s: its state does not hold yet", co.Name)
		}
	}
	return leader, nil
}

// sleep waits d, or returns ctx's error when it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
