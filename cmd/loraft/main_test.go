package main

import (
	"os"
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
