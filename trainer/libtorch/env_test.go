package libtorch

import (
	"os"
	"testing"
)

// unsetenv removes key for the rest of the test (after t.Setenv registered
// its restore), so code under test sees the variable as absent.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatalf("unsetenv %s: %v", key, err)
	}
}
