package main

import (
	"os"
	"testing"
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
