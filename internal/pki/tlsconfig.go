package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// LoadMutualTLS builds one identity's mutual-TLS configs from PEM files:
// the server side requires and verifies a client certificate from the CA,
// the client side verifies servers against it, and both present the
// identity's certificate. TLS 1.3 only.
func LoadMutualTLS(caFile, certFile, keyFile string) (server, client *tls.Config, err error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("CA certificate %s holds no PEM certificate", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate and key: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// IsLoopback reports whether addr (host:port) names only this machine:
// localhost or a loopback IP. An empty host or 0.0.0.0 listens everywhere.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TrainerID is the trainer id a process with client TLS config cfg may use:
// the id in its certificate, which must be a trainer's. want, when not
// empty, must be that id (the coordinators accept a trainer only as the id
// in its certificate).
func TrainerID(cfg *tls.Config, want string) (string, error) {
	if cfg == nil || len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
		return "", fmt.Errorf("no parsed client certificate")
	}
	id, err := FromCertificate(cfg.Certificates[0].Leaf)
	switch {
	case err != nil:
		return "", err
	case id.Role != RoleTrainer:
		return "", fmt.Errorf("%s is not a trainer's certificate", id)
	case want != "" && want != id.ID:
		return "", fmt.Errorf("id %s: the certificate is %s's; the coordinators accept a trainer only as the id in its certificate", want, id.ID)
	}
	return id.ID, nil
}

// WithIdentity returns a clone of cfg that, like WithRole, requires the
// peer to hold role, and also one of ids when any are given. A client uses
// it to accept only the server it meant to reach (a trainer dialing the
// rank an assignment names), a server to admit only known callers.
func WithIdentity(cfg *tls.Config, role Role, ids ...string) *tls.Config {
	c := WithRole(cfg, role)
	if c == nil || len(ids) == 0 {
		return c
	}
	ids = slices.Clone(ids)
	check := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := check(cs); err != nil {
			return err
		}
		id, err := FromConnectionState(cs)
		if err != nil {
			return err
		}
		if !slices.Contains(ids, id.ID) {
			return fmt.Errorf("peer %s: %w (want %s %s)", id, ErrWrongID, role, strings.Join(ids, " or "))
		}
		return nil
	}
	return c
}

// ErrHostNotInCertificate: an address whose host the certificate does not
// name among its DNS and IP SANs.
var ErrHostNotInCertificate = errors.New("host is not among the certificate's DNS and IP names")

// CheckAddress reports whether addr (host:port) is one the holder of c may
// claim: its host must be one of c's DNS or IP SANs (DNS wildcards as in
// TLS). The coordinators use it so that a trainer advertises only an
// all-reduce address its own certificate is valid for, never someone
// else's.
func CheckAddress(c *x509.Certificate, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" || c.VerifyHostname(host) != nil {
		return fmt.Errorf("address %q: %w %s", addr, ErrHostNotInCertificate, certNames(c))
	}
	return nil
}

// certNames lists a certificate's DNS and IP SANs for error messages.
func certNames(c *x509.Certificate) string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "(it has none)"
	}
	return "[" + strings.Join(names, " ") + "]"
}
