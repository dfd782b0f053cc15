package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/loraft/loraft/internal/proc"
)

// TestMain lets the test binary act as the loraft CLI when
// LORAFT_TEST_MAIN=1, so tests can run (and kill) loraft as a real process.
func TestMain(m *testing.M) {
	if os.Getenv("LORAFT_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testBinary runs this test binary as the loraft CLI (see TestMain), for
// tests that run loraft as real processes (internal/proc, proccluster).
func testBinary(t *testing.T) proc.Binary {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return proc.Binary{Path: self, Env: []string{"LORAFT_TEST_MAIN=1"}}
}

// Everything the app prints goes through termsafe: a dataset file whose name
// carries a terminal escape (it could as well be a trial's reason or a
// server's error) is shown escaped, not interpreted.
func TestOutputIsTerminalSafe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "evil\x1b[2J\x1b]0;pwned\x07.csv")
	if err := os.WriteFile(path, []byte(inspectFixture), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	app := newApp() // binds os.Stdout now
	os.Stdout = stdout
	runErr := app.Run([]string{"loraft", "data", "inspect", "--data", path, "--cache-dir", t.TempDir()})
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if runErr != nil {
		t.Fatalf("data inspect: %v\n%s", runErr, out)
	}
	if bytes.ContainsAny(out, "\x1b\x07") {
		t.Errorf("raw escape reached stdout:\n%q", out)
	}
	if !bytes.Contains(out, []byte(`evil\u001b[2J\u001b]0;pwned\u0007.csv`)) {
		t.Errorf("file name not shown escaped:\n%s", out)
	}
}
