package main

import (
	"crypto/sha256"
	"encoding/hex"
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
