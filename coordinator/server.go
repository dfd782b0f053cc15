package coordinator

import (
	"context"
	"errors"
	"sync"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server serves the Coordinator gRPC API on one node. Reads are answered
// locally; writes are applied through raft on the leader, and a follower
// refuses them with FailedPrecondition and a LeaderHint.
type Server struct {
	pb.UnimplementedCoordinatorServer
	node *Node

	mu sync.RWMutex // guards apiAddrs
	// apiAddrs maps raft addresses to gRPC API addresses, for leader hints.
	apiAddrs map[string]string
}

// NewServer serves node; apiAddrs maps each member's raft address to its API address.
func NewServer(node *Node, apiAddrs map[string]string) *Server {
	return &Server{node: node, apiAddrs: apiAddrs}
}

// GetState returns this node's applied state.
func (s *Server) GetState(context.Context, *pb.GetStateRequest) (*pb.State, error) {
	return s.node.State(), nil
}

// LaunchSweep records a sweep and its trials.
func (s *Server) LaunchSweep(ctx context.Context, req *pb.LaunchSweepRequest) (*pb.LaunchSweepResponse, error) {
	err := s.node.Apply(ctx, &pb.Command{Cmd: &pb.Command_CreateSweep{CreateSweep: &pb.CreateSweep{Sweep: req.GetSweep()}}})
	if err != nil {
		return nil, s.status(err)
	}
	return &pb.LaunchSweepResponse{Leader: s.node.cfg.ID}, nil
}

// CancelSweep cancels a sweep.
func (s *Server) CancelSweep(ctx context.Context, req *pb.CancelSweepRequest) (*pb.CancelSweepResponse, error) {
	err := s.node.Apply(ctx, &pb.Command{Cmd: &pb.Command_CancelSweep{CancelSweep: &pb.CancelSweep{Name: req.GetName()}}})
	if err != nil {
		return nil, s.status(err)
	}
	return &pb.CancelSweepResponse{}, nil
}

// status maps errors to gRPC codes: not-leader → FailedPrecondition with the
// leader's API address in a LeaderHint detail.
func (s *Server) status(err error) error {
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		s.mu.RLock()
		hint := &pb.LeaderHint{ApiAddress: s.apiAddrs[nl.Leader]}
		s.mu.RUnlock()
		st, derr := status.New(codes.FailedPrecondition, err.Error()).WithDetails(hint)
		if derr != nil {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		return st.Err()
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrStaleGeneration):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrBadCommand), errors.Is(err, ErrUnknownVersion):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
