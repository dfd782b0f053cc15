package allreduce

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	pb "github.com/loraft/loraft/proto/allreducepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// testPKI is a throw-away CA that issues certificates for 127.0.0.1.
type testPKI struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	pool  *x509.CertPool
	nextN int64
}

func newTestPKI(t *testing.T) *testPKI {
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
	return &testPKI{ca: ca, key: key, pool: pool, nextN: 2}
}

// issue returns a certificate for name, valid for 127.0.0.1 as both server
// and client.
func (p *testPKI) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.nextN),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	p.nextN++
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLS runs a 3-rank all-reduce over mutual TLS, then checks that
// clients without a certificate, or without TLS, are refused.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	c := newCluster(t, 3, func(cfg *Config) {
		cert := pki.issue(t, "rank")
		cfg.ServerTLS = &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pki.pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
		}
		cfg.ClientTLS = &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      pki.pool,
			MinVersion:   tls.VersionTLS13,
		}
	})
	bufs := [][]float32{{1, 2, 3, 4}, {10, 20, 30, 40}, {100, 200, 300, 400}}
	c.allReduce(t, 1, bufs)
	for r := range bufs {
		if bufs[r][3] != 444 {
			t.Fatalf("rank %d: %v, want [111 222 333 444]", r, bufs[r])
		}
	}

	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"TLS without a client certificate", credentials.NewTLS(&tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS13})},
		{"plaintext", insecure.NewCredentials()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(c.rings[0].Addr(), grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := pb.NewAllReduceClient(conn).Exchange(ctx)
			if err == nil {
				_ = stream.Send(&pb.Chunk{RunId: testRun, Generation: 1, Step: 9, FromRank: 2, Phase: pb.Phase_PHASE_REDUCE_SCATTER, Data: make([]byte, 4), Length: 4})
				_, err = stream.CloseAndRecv()
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("got %v, want Unavailable (refused handshake)", err)
			}
			t.Logf("refused: %v", err)
			if attached(c.rings[0], 9, 2) {
				t.Fatal("the server accepted a chunk from a client it should have refused")
			}
		})
	}
}
