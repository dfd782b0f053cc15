package allreduce

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestFenceRawClient sends single chunks to a rank's server with a plain
// gRPC client and checks which ones it refuses, with which code and sentinel.
func TestFenceRawClient(t *testing.T) {
	c := newCluster(t, 2, func(cfg *Config) { cfg.Generation = 5 })
	conn, err := grpc.NewClient(c.rings[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewAllReduceClient(conn)

	for _, tc := range []struct {
		name     string
		run      string
		gen      uint64
		step     uint64
		code     codes.Code
		sentinel error
	}{
		{"current", testRun, 5, 1, codes.OK, nil},
		{"older generation", testRun, 4, 2, codes.FailedPrecondition, ErrStaleGeneration},
		{"zero generation", testRun, 0, 2, codes.FailedPrecondition, ErrStaleGeneration},
		{"another run", "run-other", 5, 2, codes.FailedPrecondition, ErrWrongRun},
		{"newer generation", testRun, 6, 3, codes.FailedPrecondition, ErrStaleGeneration},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := client.Exchange(ctx)
			if err != nil {
				t.Fatal(err)
			}
			chunk := &pb.Chunk{
				RunId: tc.run, Generation: tc.gen, Step: tc.step, Phase: pb.Phase_PHASE_REDUCE_SCATTER,
				FromRank: 1, Segment: 1, Data: make([]byte, 4), Length: 2,
			}
			_ = stream.Send(chunk) // a refusal shows in CloseAndRecv
			ack, err := stream.CloseAndRecv()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("status %v (%v), want %v", got, err, tc.code)
			}
			if tc.sentinel == nil {
				if ack.GetChunks() != 1 {
					t.Fatalf("ack counts %d chunks, want 1", ack.GetChunks())
				}
				return
			}
			if mapped := sendError(0, err); !errors.Is(mapped, tc.sentinel) {
				t.Fatalf("mapped to %v, want %v", mapped, tc.sentinel)
			}
		})
	}

	// The chunk of generation 6 told rank 0 it is stale: its step 3 fails
	// without waiting for the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.rings[0].AllReduce(ctx, 3, []float32{1, 2}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("rank 0 step 3 after a newer generation: %v, want ErrStaleGeneration", err)
	}
}

// TestSetGenerationFencesRing moves one rank of four to a new generation:
// every rank's step fails with ErrStaleGeneration; once all have moved, the
// ring works again.
func TestSetGenerationFencesRing(t *testing.T) {
	const w, n = 4, 5000
	c := newCluster(t, w, nil)
	bufs := make([][]float32, w)
	fill := func() {
		for r := range bufs {
			bufs[r] = make([]float32, n)
			for j := range bufs[r] {
				bufs[r][j] = float32(r + 1)
			}
		}
	}
	fill()
	c.allReduce(t, 1, bufs)

	c.rings[1].SetGeneration(2)
	fill()
	errs, took := c.reduce(nil, func(r *Ring) error { return r.AllReduce(context.Background(), 2, bufs[r.Rank()]) })
	for i, err := range errs {
		t.Logf("rank %d: %v", i, err)
		if !errors.Is(err, ErrStaleGeneration) {
			t.Errorf("rank %d: %v, want ErrStaleGeneration", i, err)
		}
		if took[i] > 5*time.Second {
			t.Errorf("rank %d took %v to notice", i, took[i])
		}
	}
	if _, ok := errors.AsType[*RemoteError](errs[3]); !ok {
		t.Errorf("rank 3: %v, want a RemoteError naming the rank that saw it first", errs[3])
	}

	for _, r := range c.rings {
		r.SetGeneration(2)
	}
	fill()
	c.allReduce(t, 3, bufs)
	for r := range bufs {
		if bufs[r][0] != 1+2+3+4 {
			t.Fatalf("rank %d after the move: %v, want 10", r, bufs[r][0])
		}
	}
}
