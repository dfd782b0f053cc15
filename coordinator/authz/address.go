package authz

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/loraft/loraft/internal/pki"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// registerAddress lets a trainer register only an all-reduce address whose
// host its own certificate names (a DNS or IP SAN): the coordinators hand
// that address to the other ranks of its trials, so a trainer that could
// register any address could send them to another trainer's or a
// stranger's listener. Only TLS connections are checked (the loopback and
// --insecure modes authenticate nobody); an address that is not host:port
// is left to the handler's validation, which refuses it with the field.
func registerAddress(ctx context.Context, req any) error {
	m, ok := req.(*pb.RegisterTrainerRequest)
	if !ok {
		return nil
	}
	addr := m.GetTrainer().GetAddress()
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil
	}
	cert := peerCertificate(ctx)
	if cert == nil {
		return fmt.Errorf("%w: no verified client certificate", ErrDenied)
	}
	if err := pki.CheckAddress(cert, addr); err != nil {
		return fmt.Errorf("%w: a trainer registers only an address its certificate is valid for: %w", ErrDenied, err)
	}
	return nil
}

// peerCertificate is the verified leaf certificate of the caller of a
// TLS connection, or nil.
func peerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}
