// Package testpki is a throw-away certificate authority for tests of
// loraft's mutual TLS: it issues certificates for 127.0.0.1 and writes them
// as PEM files the way an operator would hand them to the CLI.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/pki"
)

// CA is a test certificate authority.
type CA struct {
	Cert  *x509.Certificate
	Pool  *x509.CertPool
	key   *ecdsa.PrivateKey
	nextN int64
}

// New creates a CA valid for an hour.
func New(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "loraft test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &CA{Cert: ca, Pool: pool, key: key, nextN: 2}
}

// Issue returns a certificate for name, valid for 127.0.0.1 and localhost
// as both server and client.
func (c *CA) Issue(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return c.issue(t, name, nil)
}

// IssueAs returns a certificate like Issue's that also carries id as its
// loraft://<role>/<id> URI SAN, as `loraft certs` issues them.
func (c *CA) IssueAs(t testing.TB, role pki.Role, id string) tls.Certificate {
	t.Helper()
	ident := pki.Identity{Role: role, ID: id}
	if err := ident.Validate(); err != nil {
		t.Fatal(err)
	}
	return c.issue(t, id, []*url.URL{ident.URI()})
}

func (c *CA) issue(t testing.TB, name string, uris []*url.URL) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(c.nextN),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		URIs:         uris,
	}
	c.nextN++
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// WriteFiles issues a certificate for name and writes ca.pem, NAME.pem and
// NAME-key.pem under dir, returning their paths.
func (c *CA) WriteFiles(t testing.TB, dir, name string) (ca, cert, key string) {
	t.Helper()
	pair := c.Issue(t, name)
	der, err := x509.MarshalECPrivateKey(pair.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	for path, block := range map[string]*pem.Block{
		ca:   {Type: "CERTIFICATE", Bytes: c.Cert.Raw},
		cert: {Type: "CERTIFICATE", Bytes: pair.Certificate[0]},
		key:  {Type: "EC PRIVATE KEY", Bytes: der},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// ServerConfig is a TLS 1.3 server configuration presenting cert and
// requiring a client certificate from this CA.
func (c *CA) ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: c.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
}

// ClientConfig is a TLS 1.3 client configuration presenting cert and
// trusting this CA.
func (c *CA) ClientConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: c.Pool, MinVersion: tls.VersionTLS13}
}
