package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names inside a CA directory and a leaf directory. A leaf directory
// holds everything one process needs: --tls-ca DIR/ca.pem --tls-cert
// DIR/cert.pem --tls-key DIR/key.pem.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	CertFile   = "cert.pem"
	KeyFile    = "key.pem"
)

// Permissions of what is written: directories 0700, keys 0600,
// certificates 0644.
const (
	dirPerm  = 0o700
	keyPerm  = 0o600
	certPerm = 0o644
)

// ErrExists: a file would be overwritten (pki never overwrites keys).
var ErrExists = errors.New("already exists (pki never overwrites a certificate or key)")

// WriteCA writes the CA's certificate and key into dir (created 0700).
func WriteCA(dir string, ca *CA) error {
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{
		{CACertFile, pemBytes("CERTIFICATE", ca.Cert.Raw), certPerm},
		{CAKeyFile, pemBytes("EC PRIVATE KEY", keyDER), keyPerm},
	})
}

// LoadCA reads a CA written by WriteCA.
func LoadCA(dir string) (*CA, error) {
	cert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", filepath.Join(dir, CACertFile))
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile))
	}
	return &CA{Cert: cert, Key: key}, nil
}

// WriteLeaf writes the CA's certificate, the leaf's certificate and its
// key into dir (created 0700).
func WriteLeaf(dir string, ca *CA, l *Leaf) error {
	keyDER, err := x509.MarshalECPrivateKey(l.Key)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{
		{CACertFile, pemBytes("CERTIFICATE", ca.Cert.Raw), certPerm},
		{CertFile, pemBytes("CERTIFICATE", l.Cert.Raw), certPerm},
		{KeyFile, pemBytes("EC PRIVATE KEY", keyDER), keyPerm},
	})
}

// LeafDir is the directory, under out, that Init and Issue write id's
// files to: <role>-<id>.
func LeafDir(out string, id Identity) string { return filepath.Join(out, string(id.Role)+"-"+id.ID) }

// Request names one leaf to issue: its identity and its host SANs.
type Request struct {
	Identity Identity
	Hosts    []string
}

// Init creates a CA in out/ca and one leaf per request in LeafDir(out, …).
// It refuses to overwrite anything, and checks every request before it
// writes a file.
func Init(out string, reqs []Request) (*CA, error) {
	seen := map[Identity]bool{}
	for _, r := range reqs {
		if err := r.Identity.Validate(); err != nil {
			return nil, err
		}
		if seen[r.Identity] {
			return nil, fmt.Errorf("%s requested twice", r.Identity)
		}
		seen[r.Identity] = true
	}
	if _, err := os.Stat(filepath.Join(out, "ca")); err == nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(out, "ca"), ErrExists)
	}
	ca, err := NewCA("loraft CA", 0)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, dirPerm); err != nil {
		return nil, err
	}
	if err := WriteCA(filepath.Join(out, "ca"), ca); err != nil {
		return nil, err
	}
	for _, r := range reqs {
		if _, err := IssueTo(out, ca, r); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

// IssueTo issues one leaf and writes it to LeafDir(out, r.Identity),
// returning that directory.
func IssueTo(out string, ca *CA, r Request) (string, error) {
	l, err := ca.Issue(r.Identity, r.Hosts, 0)
	if err != nil {
		return "", err
	}
	dir := LeafDir(out, r.Identity)
	if err := WriteLeaf(dir, ca, l); err != nil {
		return "", err
	}
	return dir, nil
}

type file struct {
	name string
	data []byte
	perm os.FileMode
}

// writeFiles creates dir 0700 (tightening an existing one) and writes each
// file exclusively with its permission.
func writeFiles(dir string, files []file) error {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	if err := os.Chmod(dir, dirPerm); err != nil {
		return err
	}
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f.name)); err == nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, f.name), ErrExists)
		}
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.perm)
		if err != nil {
			return err
		}
		_, err = w.Write(f.data)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("%s: no PEM %s block", path, typ)
	}
	return b.Bytes, nil
}

func readCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "EC PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
