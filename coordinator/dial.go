package coordinator

import (
	"crypto/tls"

	"github.com/loraft/loraft/internal/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DialTLS is the transport of a client of the coordinators (NewClient's
// option): mutual TLS with cfg, accepting only a server whose certificate
// is a coordinator's, so that an address taken over by a trainer, viewer
// or operator (or a leader hint pointing at one) fails the handshake
// instead of receiving the client's requests. A nil cfg is plaintext, for
// loopback clusters only.
func DialTLS(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(pki.WithRole(cfg, pki.RoleCoordinator)))
}
