// Package pki is loraft's certificate authority: it creates a CA and issues
// leaf certificates that carry their holder's role and identity as a URI
// SAN, loraft://<role>/<id>, and reads that identity back from a verified
// peer certificate. Files are PEM; private keys are written 0600 in 0700
// directories.
//
// The roles are those of DESIGN.md invariant 9: viewers read, operators
// run sweeps and membership, trainers register, heartbeat and report as
// themselves, coordinators form the raft group.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"time"
)

// Role is what a certificate's holder may do.
type Role string

// The roles a loraft certificate can carry.
const (
	RoleCoordinator Role = "coordinator"
	RoleTrainer     Role = "trainer"
	RoleOperator    Role = "operator"
	RoleViewer      Role = "viewer"
	// RoleStore is a TLS server outside loraft, the object store (MinIO):
	// its certificate comes from loraft's CA so that clients can verify
	// it, and no loraft server accepts it for anything (`loraft certs
	// issue --role store --id minio --hosts minio`).
	RoleStore Role = "store"
)

// Roles lists every role: those `loraft certs init` issues, in its order,
// then the store's.
var Roles = []Role{RoleCoordinator, RoleTrainer, RoleOperator, RoleViewer, RoleStore}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: %w", s, ErrUnknownRole)
}

// URIScheme is the scheme of the URI SAN that carries an identity.
const URIScheme = "loraft"

// Sentinel errors.
var (
	// ErrUnknownRole: a role name that is not one of Roles.
	ErrUnknownRole = errors.New("unknown role (want coordinator, trainer, operator, viewer or store)")
	// ErrBadID: an identity that is empty, too long or has characters
	// outside [A-Za-z0-9._-].
	ErrBadID = errors.New("bad id (1–128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit)")
	// ErrNoIdentity: a certificate without exactly one loraft:// URI SAN.
	ErrNoIdentity = errors.New("certificate carries no loraft identity (a URI SAN loraft://<role>/<id>)")
	// ErrWrongRole: a peer whose certificate has a role it is not allowed.
	ErrWrongRole = errors.New("certificate role not allowed here")
	// ErrWrongID: a peer with the right role but not the id expected here.
	ErrWrongID = errors.New("certificate id not the one expected here")
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Identity is who a certificate names: a role and an id within it.
type Identity struct {
	Role Role
	ID   string
}

// String is the identity's URI, loraft://<role>/<id>.
func (i Identity) String() string { return i.URI().String() }

// URI is the identity as the URI SAN it is issued as.
func (i Identity) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(i.Role), Path: "/" + i.ID}
}

// Validate checks the role and the id.
func (i Identity) Validate() error {
	if _, err := ParseRole(string(i.Role)); err != nil {
		return err
	}
	if !idPattern.MatchString(i.ID) {
		return fmt.Errorf("id %q: %w", i.ID, ErrBadID)
	}
	return nil
}

// ParseIdentity parses loraft://<role>/<id>.
func ParseIdentity(u *url.URL) (Identity, error) {
	if u == nil || u.Scheme != URIScheme || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return Identity{}, fmt.Errorf("%v: %w", u, ErrNoIdentity)
	}
	id := Identity{Role: Role(u.Host), ID: u.Path}
	if len(id.ID) > 0 && id.ID[0] == '/' {
		id.ID = id.ID[1:]
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("URI SAN %s: %w", u, err)
	}
	return id, nil
}

// FromCertificate reads the identity of a certificate: its one loraft://
// URI SAN. Call it only on a certificate the TLS handshake has verified.
func FromCertificate(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		id, err := ParseIdentity(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("certificate %q has %d loraft URI SANs: %w", c.Subject.CommonName, len(found), ErrNoIdentity)
	}
	return found[0], nil
}

// FromConnectionState reads the identity of the peer of a verified TLS
// connection (its leaf certificate).
func FromConnectionState(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("peer presented no verified certificate: %w", ErrNoIdentity)
	}
	return FromCertificate(cs.VerifiedChains[0][0])
}

// RequireRole returns a tls.Config.VerifyConnection hook that refuses a
// peer whose verified certificate does not carry one of roles. On a
// server it checks the client; on a client, the server.
func RequireRole(roles ...Role) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := FromConnectionState(cs)
		if err != nil {
			return err
		}
		for _, r := range roles {
			if id.Role == r {
				return nil
			}
		}
		return fmt.Errorf("peer %s: %w (want %v)", id, ErrWrongRole, roles)
	}
}

// WithRole returns a clone of cfg that also requires the peer to hold one
// of roles (after cfg's own VerifyConnection, if any); nil stays nil.
func WithRole(cfg *tls.Config, roles ...Role) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	prev, check := c.VerifyConnection, RequireRole(roles...)
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return check(cs)
	}
	return c
}

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Default validity periods.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 365 * 24 * time.Hour
)

// NewCA creates a self-signed CA named name, valid for validity
// (0: DefaultCAValidity).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"loraft"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool is a pool holding only the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is an issued certificate and its key.
type Leaf struct {
	Identity Identity
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
}

// TLSCertificate is the leaf as crypto/tls uses it.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// Issue signs a certificate for id, usable as TLS server and client, with
// hosts (DNS names or IPs) as SANs beside the identity's URI SAN, valid
// for validity (0: DefaultLeafValidity, and never past the CA's own end).
func (ca *CA) Issue(id Identity, hosts []string, validity time.Duration) (*Leaf, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.ID, OrganizationalUnit: []string{string(id.Role)}, Organization: []string{"loraft"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Leaf{Identity: id, Cert: cert, Key: key}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
