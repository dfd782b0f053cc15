package agent

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator"
	"github.com/loraft/loraft/internal/loopback"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc"
)

// blockingRunner runs until its context ends and records when.
type blockingRunner struct {
	started chan *pb.Assignment
	stopped chan time.Time
}

func (r *blockingRunner) Run(ctx context.Context, a *pb.Assignment, rep Reporter) (*pb.TrialResult, error) {
	r.started <- a
	rep.Progress(&pb.Progress{Step: 1, Steps: 10})
	<-ctx.Done()
	r.stopped <- time.Now()
	return nil, ctx.Err()
}

// TestAgentFencesItselfWhenCoordinatorsVanish: a trainer that can no longer
// reach any coordinator stops its job before the leader could give the
// trial to another trainer: within the lease counted from the last
// heartbeat the leader received (it aims at 80% of it).
func TestAgentFencesItselfWhenCoordinatorsVanish(t *testing.T) {
	lease := 2 * time.Second
	node, err := coordinator.OpenNode(coordinator.NodeConfig{ID: "c0", Addr: freeAddr(t), Dir: filepath.Join(t.TempDir(), "raft"),
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := node.Bootstrap(map[string]string{"c0": node.Addr()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := node.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lastBeat time.Time // when the leader last received a heartbeat
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if _, ok := req.(*pb.HeartbeatRequest); ok {
			mu.Lock()
			lastBeat = time.Now()
			mu.Unlock()
		}
		return h(ctx, req)
	}))
	api := coordinator.NewServer(node, coordinator.ServerConfig{Scheduler: coordinator.SchedulerConfig{Lease: lease, Tick: 10 * time.Millisecond}})
	pb.RegisterCoordinatorServer(srv, api)
	go func() { _ = srv.Serve(lis) }()
	sctx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	go api.RunScheduler(sctx)

	cl, err := coordinator.NewClient([]string{lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	run := &blockingRunner{started: make(chan *pb.Assignment, 1), stopped: make(chan time.Time, 1)}
	a, err := New(Config{ID: "t1", Address: "127.0.0.1:1", Coordinator: cl, Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() { stopAgent(); <-agentDone }()

	if err := cl.LaunchSweep(ctx, &pb.Sweep{Name: "f", DatasetSha256: "x", Trials: []*pb.Trial{{Name: "f-t000", Rank: 8, Alpha: 16}}}); err != nil {
		t.Fatal(err)
	}
	var as *pb.Assignment
	select {
	case as = <-run.started:
	case <-ctx.Done():
		t.Fatal("the trainer never got the trial")
	}
	if as.GetTrial().GetName() != "f-t000" || as.GetGeneration() != 1 {
		t.Fatalf("assignment: %v", as)
	}
	// Every coordinator vanishes at once.
	srv.Stop()
	select {
	case stopped := <-run.stopped:
		mu.Lock()
		requeueAt := lastBeat.Add(lease)
		mu.Unlock()
		if !stopped.Before(requeueAt) {
			t.Fatalf("the job ran until %s after the last heartbeat the leader saw, past its %s lease", stopped.Sub(requeueAt.Add(-lease)), lease)
		}
	case <-time.After(10 * lease):
		t.Fatal("the job never stopped after the coordinators vanished")
	}
}

func TestNewRequiresConfig(t *testing.T) {
	if _, err := New(Config{ID: "x"}); err == nil {
		t.Fatal("an agent without a coordinator or runner was accepted")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}
