package allreducepb

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fencedServer accepts chunks of one run and generation only.
type fencedServer struct {
	UnimplementedAllReduceServer
	run string
	gen uint64
}

func (s *fencedServer) Exchange(stream grpc.ClientStreamingServer[Chunk, ExchangeAck]) error {
	var n uint64
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&ExchangeAck{Chunks: n})
		}
		if err != nil {
			return err
		}
		if c.GetRunId() != s.run || c.GetGeneration() != s.gen {
			return status.Errorf(codes.FailedPrecondition, "chunk from run %q generation %d, serving %q generation %d", c.GetRunId(), c.GetGeneration(), s.run, s.gen)
		}
		n++
	}
}

// TestExchangeOverLoopback checks the generated service end to end over a real
// TCP socket: a stream is counted, and a wrong generation comes back as the
// status code the trainer will map to "stale".
func TestExchangeOverLoopback(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	RegisterAllReduceServer(srv, &fencedServer{run: "r1", gen: 3})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := NewAllReduceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		gen  uint64
		want codes.Code
	}{
		{"current generation", 3, codes.OK},
		{"stale generation", 2, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := client.Exchange(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ {
				c := &Chunk{RunId: "r1", Generation: tc.gen, Phase: Phase_PHASE_REDUCE_SCATTER, Segment: uint32(i), Data: make([]byte, 1024)}
				if err := stream.Send(c); err != nil {
					break // the server closed the stream; CloseAndRecv reports why
				}
			}
			ack, err := stream.CloseAndRecv()
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Exchange status = %v (%v), want %v", got, err, tc.want)
			}
			if tc.want == codes.OK && ack.GetChunks() != 4 {
				t.Fatalf("server counted %d chunks, want 4", ack.GetChunks())
			}
		})
	}
}
