package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/coordinator/dashboard"
)

// TestCertsToken: `certs token` prints a token and the tokens-file line
// that admits it with the asked role, holding the token's SHA-256 only.
func TestCertsToken(t *testing.T) {
	out, err := run(t, "certs", "token", "--role", "operator")
	if err != nil {
		t.Fatal(err)
	}
	var token, line string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "token: "); ok {
			token = v
		}
		if v, ok := strings.CutPrefix(l, "tokens-file line: "); ok {
			line = v
		}
	}
	sum := sha256.Sum256([]byte(token))
	if token == "" || line != "operator "+hex.EncodeToString(sum[:]) {
		t.Fatalf("output:\n%s", out)
	}
	if _, err := dashboard.ParseTokens(strings.NewReader(line), "printed"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "certs", "token", "--role", "trainer"); err == nil || !strings.Contains(err.Error(), "flag --role") {
		t.Fatalf("a trainer token: %v", err)
	}
}

// TestCoordinatorTokensFile: a bad --http-tokens-file stops the coordinator
// before it opens anything, naming the flag and the line, not the hash.
func TestCoordinatorTokensFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "tokens")
	if err := os.WriteFile(bad, []byte("# ok\nviewer lrt_a-plain-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "coordinator", "--id", "n1", "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "raft"),
		"--http-tokens-file", bad)
	if err == nil || !strings.Contains(err.Error(), "flag --http-tokens-file") || !strings.Contains(err.Error(), "line 2") ||
		strings.Contains(err.Error(), "lrt_a-plain-token") {
		t.Fatalf("coordinator with a bad tokens file: %v", err)
	}
}
