package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/coordinator/coordinatortest"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/syncbuf"
	"github.com/urfave/cli/v2"
)

// TestSecureByDefault: a coordinator or trainer that would serve a
// non-loopback address without TLS, or a client that would dial one, refuses
// to start and names --insecure; --insecure with TLS flags is refused as a
// contradiction.
func TestSecureByDefault(t *testing.T) {
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(t.TempDir(), "pki")
	if _, err := run(t, "certs", "init", "--out", certs); err != nil {
		t.Fatal(err)
	}
	n1 := filepath.Join(certs, "coordinator-n1")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"coordinator API on 0.0.0.0", []string{"coordinator", "--id", "n1", "--raft-addr", addrs[0], "--api-addr", "0.0.0.0:0", "--dir", t.TempDir()},
			[]string{"--api-addr 0.0.0.0:0", "not loopback", "--insecure", "loraft certs init"}},
		{"coordinator raft on a LAN IP", []string{"coordinator", "--id", "n1", "--raft-addr", "10.1.2.3:7300", "--api-addr", "127.0.0.1:0", "--dir", t.TempDir()},
			[]string{"--raft-addr 10.1.2.3:7300", "--insecure"}},
		{"trainer listening on all interfaces", []string{"trainer", "--coordinators", "127.0.0.1:1", "--store", t.TempDir(), "--listen", ":7500"},
			[]string{"--listen :7500", "--insecure"}},
		{"static rank on a LAN IP", []string{"trainer", "--data", "x.csv", "--out", t.TempDir(), "--rank", "0", "--world", "2", "--peers", "127.0.0.1:1,10.0.0.2:7500"},
			[]string{"--peers 10.0.0.2:7500", "--insecure"}},
		{"sweep status of a LAN coordinator", []string{"sweep", "ls", "--coordinators", "127.0.0.1:1,10.1.2.3:7400"},
			[]string{"--coordinators: 10.1.2.3:7400 not loopback", "--insecure", "loraft certs init"}},
		{"trainer under LAN coordinators", []string{"trainer", "--coordinators", "10.1.2.3:7400", "--store", t.TempDir()},
			[]string{"--coordinators: 10.1.2.3:7400", "--insecure"}},
		{"coordinator join through a LAN coordinator", []string{"coordinator", "join", "--coordinators", "coord.example:7400", "--id", "n4", "--raft-addr", "127.0.0.1:1", "--api-addr", "127.0.0.1:2"},
			[]string{"--coordinators: coord.example:7400", "--insecure"}},
		{"--insecure with TLS", []string{"coordinator", "--id", "n1", "--raft-addr", addrs[0], "--api-addr", "127.0.0.1:0", "--dir", t.TempDir(), "--insecure",
			"--tls-ca", filepath.Join(n1, "ca.pem"), "--tls-cert", filepath.Join(n1, "cert.pem"), "--tls-key", filepath.Join(n1, "key.pem")},
			[]string{"--insecure contradicts"}},
		{"coordinator with a viewer's certificate", []string{"coordinator", "--id", "n1", "--raft-addr", addrs[0], "--api-addr", "127.0.0.1:0", "--dir", t.TempDir(),
			"--tls-ca", filepath.Join(certs, "viewer-viewer", "ca.pem"), "--tls-cert", filepath.Join(certs, "viewer-viewer", "cert.pem"), "--tls-key", filepath.Join(certs, "viewer-viewer", "key.pem")},
			[]string{"loraft://viewer/viewer is not a coordinator's certificate"}},
		{"trainer with another trainer's certificate", []string{"trainer", "--coordinators", "127.0.0.1:1", "--store", t.TempDir(), "--id", "trainer2",
			"--tls-ca", filepath.Join(certs, "trainer-trainer1", "ca.pem"), "--tls-cert", filepath.Join(certs, "trainer-trainer1", "cert.pem"), "--tls-key", filepath.Join(certs, "trainer-trainer1", "key.pem")},
			[]string{"--id trainer2", "trainer1's"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LORAFT_COORDINATORS", "")
			t.Setenv("LORAFT_INSECURE", "")
			out, err := run(t, tc.args...)
			if err == nil {
				t.Fatalf("loraft %s started:\n%s", strings.Join(tc.args, " "), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestCoordinatorInsecureWarns: with --insecure a coordinator on 0.0.0.0
// starts, and says loudly on stderr that it serves without authentication.
func TestCoordinatorInsecureWarns(t *testing.T) {
	t.Setenv("LORAFT_INSECURE", "")
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	app := newApp()
	out := &syncbuf.Buffer{}
	app.Writer, app.ErrWriter = out, out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, []string{"loraft", "coordinator", "--id", "n1", "--raft-addr", addrs[0], "--api-addr", "0.0.0.0:0",
			"--dir", t.TempDir(), "--peers", "n1=" + addrs[0] + "/127.0.0.1:1", "--insecure"})
	}()
	coordinatortest.Eventually(t, 10*time.Second, func() error {
		if s := out.String(); !strings.Contains(s, "coordinator n1: raft") {
			return errors.New("the coordinator has not started: " + s)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "WARNING: --insecure: --api-addr 0.0.0.0:0 serve without TLS or authentication") {
		t.Fatalf("no warning on stderr:\n%s", s)
	}
}

// TestCertsInitAndIssue: `certs init` writes a CA and one directory per
// identity (keys 0600 in 0700 directories) whose certificate carries
// loraft://<role>/<id> and verifies against the CA; `certs issue` adds
// one later; nothing is ever overwritten.
func TestCertsInitAndIssue(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pki")
	if _, err := run(t, "certs", "init", "--out", out, "--coordinator-ids", "c1,c2", "--coordinator-hosts", "coord.example,10.0.0.5",
		"--trainer-ids", "gpu-1", "--operator-ids", "alice", "--viewer-ids", "grafana"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "certs", "issue", "--ca", out, "--role", "trainer", "--id", "gpu-2", "--hosts", "10.0.0.9", "--out", out); err != nil {
		t.Fatal(err)
	}
	// The object store's HTTPS certificate (deploy/: MinIO), from the same CA.
	if _, err := run(t, "certs", "issue", "--ca", out, "--role", "store", "--id", "minio", "--hosts", "minio", "--out", out); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(out, "ca", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	for _, tc := range []struct {
		dir  string
		id   pki.Identity
		host string
	}{
		{"coordinator-c1", pki.Identity{Role: pki.RoleCoordinator, ID: "c1"}, "coord.example"},
		{"coordinator-c2", pki.Identity{Role: pki.RoleCoordinator, ID: "c2"}, "c2"},
		{"trainer-gpu-1", pki.Identity{Role: pki.RoleTrainer, ID: "gpu-1"}, "127.0.0.1"},
		{"trainer-gpu-2", pki.Identity{Role: pki.RoleTrainer, ID: "gpu-2"}, "10.0.0.9"},
		{"operator-alice", pki.Identity{Role: pki.RoleOperator, ID: "alice"}, ""},
		{"viewer-grafana", pki.Identity{Role: pki.RoleViewer, ID: "grafana"}, ""},
		{"store-minio", pki.Identity{Role: pki.RoleStore, ID: "minio"}, "minio"},
	} {
		dir := filepath.Join(out, tc.dir)
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v, want a 0700 directory", dir, fi, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s/key.pem: %v %v, want 0600", dir, fi, err)
		}
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.FromCertificate(pair.Leaf); err != nil || id != tc.id {
			t.Errorf("%s: identity %v %v, want %v", tc.dir, id, err, tc.id)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: %v", tc.dir, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "ca", "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v, want 0600", fi, err)
	}
	for _, args := range [][]string{
		{"certs", "init", "--out", out},
		{"certs", "issue", "--ca", out, "--role", "trainer", "--id", "gpu-2", "--out", out},
		{"certs", "issue", "--ca", out, "--role", "admin", "--id", "x", "--out", out},
		{"certs", "issue", "--ca", out, "--role", "viewer", "--id", "../x", "--out", out},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("loraft %s succeeded", strings.Join(args, " "))
		}
	}
}

// loraft serve off loopback needs TLS and a credential, or --insecure.
func TestServeRefusesOpenAddressWithoutTLS(t *testing.T) {
	out, err := run(t, "serve", "--adapter", t.TempDir(), "--listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "--tokens-file") {
		t.Fatalf("serve on 0.0.0.0 without TLS: %v\n%s; want a refusal naming --insecure and --tokens-file", err, out)
	}
}

// TestPlaintextDial: dialing a non-loopback address without TLS needs
// --insecure, which then warns on stderr; loopback needs neither.
func TestPlaintextDial(t *testing.T) {
	t.Setenv("LORAFT_INSECURE", "")
	for _, tc := range []struct {
		name     string
		args     []string
		addrs    []string
		wantErr  string
		wantWarn string
	}{
		{"loopback", nil, []string{"127.0.0.1:7400", "[::1]:7400", "localhost:7400"}, "", ""},
		{"LAN without --insecure", nil, []string{"127.0.0.1:7400", "10.0.0.1:7400"}, "--coordinators: 10.0.0.1:7400 not loopback", ""},
		{"LAN with --insecure", []string{"--insecure"}, []string{"10.0.0.1:7400", "coord:7400"}, "", "WARNING: --insecure: dialing --coordinators 10.0.0.1:7400,coord:7400 without TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr := &syncbuf.Buffer{}
			app := &cli.App{Flags: []cli.Flag{insecureFlag()}, ErrWriter: stderr, Writer: stderr,
				Action: func(c *cli.Context) error { return plaintextDial(c, "coordinators", tc.addrs) }}
			err := app.Run(append([]string{"loraft"}, tc.args...))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if got := stderr.String(); (tc.wantWarn == "") != (got == "") || !strings.Contains(got, tc.wantWarn) {
				t.Fatalf("stderr %q, want %q", got, tc.wantWarn)
			}
		})
	}
}
