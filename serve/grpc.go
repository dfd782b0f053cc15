package serve

import (
	"context"
	"errors"
	"time"

	"github.com/loraft/loraft/proto/servepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// GRPCServer is the gRPC front: loraft.serve.v1.Classifier.
type GRPCServer struct {
	servepb.UnimplementedClassifierServer
	s *Service
	o HTTPOptions
}

// NewGRPCServer answers Classify with s under o's timeout and credentials
// (a bearer token in the "authorization" metadata, or a verified client
// certificate).
func NewGRPCServer(s *Service, o HTTPOptions) *GRPCServer { return &GRPCServer{s: s, o: o} }

// Register adds the service to srv.
func (g *GRPCServer) Register(srv *grpc.Server) { servepb.RegisterClassifierServer(srv, g) }

// Classify implements servepb.ClassifierServer.
func (g *GRPCServer) Classify(ctx context.Context, req *servepb.ClassifyRequest) (resp *servepb.ClassifyResponse, err error) {
	start := time.Now()
	defer func() { g.s.metrics.observeRequest("grpc", status.Code(err).String(), time.Since(start)) }()
	if !g.authorized(ctx) {
		return nil, status.Error(codes.Unauthenticated, "a bearer token or a client certificate is required")
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	ans, err := g.s.Classify(ctx, req.GetTexts())
	switch {
	case err == nil:
	case errors.Is(err, ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrOverloaded):
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrNotReady):
		return nil, status.Error(codes.Unavailable, err.Error())
	default:
		return nil, status.FromContextError(err).Err()
	}
	resp = &servepb.ClassifyResponse{Model: ans.Model, Disclaimer: Disclaimer}
	for _, r := range ans.Results {
		c := &servepb.Classification{Label: r.Label, Confidence: r.Confidence, Probabilities: r.Probabilities,
			NeedsReview: r.NeedsReview, Truncated: r.Truncated, TokensTruncated: r.TokensTruncated}
		for _, rr := range r.ReviewReasons {
			c.ReviewReasons = append(c.ReviewReasons, &servepb.ReviewReason{Rule: rr.Rule, Detail: rr.Detail})
		}
		resp.Results = append(resp.Results, c)
	}
	return resp, nil
}

func (g *GRPCServer) authorized(ctx context.Context) bool {
	if g.o.Tokens.Len() == 0 {
		return true
	}
	if p, ok := peerTLS(ctx); ok && len(p.State.VerifiedChains) > 0 {
		return true
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := cutBearer(v); ok {
			if _, _, known := g.o.Tokens.Lookup(tok); known {
				return true
			}
		}
	}
	return false
}

func cutBearer(v string) (string, bool) {
	const p = "Bearer "
	if len(v) > len(p) && v[:len(p)] == p {
		return v[len(p):], true
	}
	return "", false
}

func peerTLS(ctx context.Context) (credentials.TLSInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return credentials.TLSInfo{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return info, ok
}
