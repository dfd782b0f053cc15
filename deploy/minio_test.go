package deploy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/internal/pki"
	"github.com/loraft/loraft/internal/proc"
)

// mcBinary is the MinIO client minio/init.sh runs: $LORAFT_MC or mc on $PATH.
func mcBinary() (string, error) {
	if p := os.Getenv("LORAFT_MC"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("mc from LORAFT_MC: %w (build it with deploy/mc.sh)", err)
		}
		return p, nil
	}
	return exec.LookPath("mc")
}

// TestMinIOInitAndPolicies runs the deployment's store set-up for real: a MinIO server with
// an HTTPS certificate of loraft's CA laid out as the manifests lay it out (public.crt,
// private.key, CAs/), minio/init.sh (twice: reruns are safe) creating the bucket, users and
// policies through mc, and then loraft's own S3 store over HTTPS, trusting the CA through
// SSL_CERT_FILE, as each role: trainers write checkpoints but cannot touch datasets or sweeps,
// nor create buckets; operators upload datasets and sweeps but cannot write checkpoints.
func TestMinIOInitAndPolicies(t *testing.T) {
	mc, err := mcBinary()
	if err != nil {
		t.Skipf("needs the MinIO client mc: export LORAFT_MC=$(deploy/mc.sh) (%v)", err)
	}
	minio, err := proc.MinIOBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The store's certificate, as `loraft certs issue --role store` makes it.
	ca, err := pki.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.Identity{Role: pki.RoleStore, ID: "minio"}, []string{"127.0.0.1", "localhost"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "certs")
	caFile := filepath.Join(dir, "ca.pem")
	for path, b := range map[string]*pem.Block{
		filepath.Join(certs, "public.crt"):    {Type: "CERTIFICATE", Bytes: leaf.Cert.Raw},
		filepath.Join(certs, "private.key"):   {Type: "EC PRIVATE KEY", Bytes: keyDER},
		filepath.Join(certs, "CAs", "ca.pem"): {Type: "CERTIFICATE", Bytes: ca.Cert.Raw},
		caFile:                                {Type: "CERTIFICATE", Bytes: ca.Cert.Raw},
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addrs, err := loopback.Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	root, rootPass := "root-user", "root-password-0123456789"
	srv := &proc.Proc{Name: "minio", Log: filepath.Join(dir, "minio.log"), Bin: proc.Binary{Path: minio},
		Args: []string{"server", filepath.Join(dir, "data"), "--address", addrs[0], "--console-address", addrs[1], "--certs-dir", certs, "--quiet"},
		Env:  []string{"MINIO_ROOT_USER=" + root, "MINIO_ROOT_PASSWORD=" + rootPass, "MINIO_BROWSER=off", "MINIO_UPDATE=off"}}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping minio: %v", err)
		}
	})
	waitHTTPS(t, "https://"+addrs[0]+"/minio/health/cluster", ca.Pool(), srv)

	users := map[string][2]string{"trainer": {"loraft-trainer", "trainer-secret-0123456789"}, "operator": {"loraft-operator", "operator-secret-0123456789"}}
	home := t.TempDir()
	for range 2 {
		cmd := exec.Command("/bin/sh", "minio/init.sh")
		cmd.Env = []string{
			"PATH=" + filepath.Dir(mc) + ":/usr/bin:/bin", "HOME=" + home,
			"MC_HOST_local=https://" + root + ":" + rootPass + "@" + addrs[0],
			"SSL_CERT_FILE=" + caFile, "POLICIES=minio",
			"TRAINER_S3_USER=" + users["trainer"][0], "TRAINER_S3_SECRET_KEY=" + users["trainer"][1],
			"OPERATOR_S3_USER=" + users["operator"][0], "OPERATOR_S3_SECRET_KEY=" + users["operator"][1],
		}
		if filepath.Base(mc) != "mc" { // init.sh calls mc by name
			link := filepath.Join(t.TempDir(), "mc")
			if err := os.Symlink(mc, link); err != nil {
				t.Fatal(err)
			}
			cmd.Env[0] = "PATH=" + filepath.Dir(link) + ":/usr/bin:/bin"
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("minio/init.sh: %v\n%s", err, out)
		}
		for _, u := range users {
			if strings.Contains(string(out), u[1]) {
				t.Fatalf("minio/init.sh printed a secret key:\n%s", out)
			}
		}
	}

	// loraft's S3 store over HTTPS, trusting the CA only through SSL_CERT_FILE.
	t.Setenv("SSL_CERT_FILE", caFile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	open := func(role, bucket string) (checkpoint.Store, error) {
		return checkpoint.NewS3Store(ctx, checkpoint.S3Config{Endpoint: "https://" + addrs[0], Bucket: bucket, Prefix: "k8s",
			AccessKey: users[role][0], SecretKey: users[role][1], CallTimeout: 20 * time.Second})
	}
	trainer, err := open("trainer", "loraft")
	if err != nil {
		t.Fatalf("the trainer opens the store: %v", err)
	}
	operator, err := open("operator", "loraft")
	if err != nil {
		t.Fatalf("the operator opens the store: %v", err)
	}
	if _, err := open("trainer", "another"); err == nil || !strings.Contains(err.Error(), "Access Denied") {
		t.Errorf("the trainer opening (creating) another bucket: %v, want Access Denied", err)
	}
	dataset := checkpoint.DatasetKey(strings.Repeat("cd", 32))
	ckpt := checkpoint.Prefix("demo-t000", 7) + "adapter.safetensors"
	sweep := checkpoint.SweepKey("demo")
	put := func(s checkpoint.Store, key string) error {
		return s.Put(ctx, key, strings.NewReader("x"), 1)
	}
	get := func(s checkpoint.Store, key string) error {
		rc, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.ReadAll(rc)
		return err
	}
	for _, tc := range []struct {
		what string
		do   func() error
		ok   bool
	}{
		{"operator uploads a dataset", func() error { return put(operator, dataset) }, true},
		{"operator writes a sweep record", func() error { return put(operator, sweep) }, true},
		{"trainer reads the dataset", func() error { return get(trainer, dataset) }, true},
		{"trainer overwrites the dataset", func() error { return put(trainer, dataset) }, false},
		{"trainer deletes the dataset", func() error { return trainer.Delete(ctx, dataset) }, false},
		{"trainer reads the sweep record", func() error { return get(trainer, sweep) }, false},
		{"trainer writes a sweep record", func() error { return put(trainer, sweep) }, false},
		{"trainer writes a checkpoint", func() error { return put(trainer, ckpt) }, true},
		{"trainer lists its run", func() error { _, err := trainer.List(ctx, checkpoint.RunPrefix("demo-t000")); return err }, true},
		{"operator reads the checkpoint", func() error { return get(operator, ckpt) }, true},
		{"operator overwrites the checkpoint", func() error { return put(operator, ckpt) }, false},
		{"trainer deletes an old checkpoint", func() error { return trainer.Delete(ctx, ckpt) }, true},
		{"operator reads the dataset, still there", func() error { return get(operator, dataset) }, true},
	} {
		err := tc.do()
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.what, err, tc.ok)
		}
		if !tc.ok && err != nil && !strings.Contains(err.Error(), "Access Denied") {
			t.Errorf("%s: %v, want Access Denied", tc.what, err)
		}
	}
}

// waitHTTPS polls url over HTTPS (trusting pool) until it answers 200, failing t when the
// server exits or a minute passes.
func waitHTTPS(t *testing.T, url string, pool *x509.CertPool, p *proc.Proc) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-p.Done():
			log, _ := os.ReadFile(p.Log)
			t.Fatalf("minio exited before it was ready:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(p.Log)
	t.Fatalf("minio not ready over HTTPS after a minute: %v\n%s", last, log)
}
