package dashboard

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/pki"
)

func TestParseTokens(t *testing.T) {
	sum := sha256.Sum256([]byte("secret"))
	hash := hex.EncodeToString(sum[:])
	cases := []struct {
		name, file string
		err        string // "" for success
		role       pki.Role
	}{
		{"viewer", "viewer " + hash + "\n", "", pki.RoleViewer},
		{"operator with comments", "# who\n\n  operator   " + hash + "  \n", "", pki.RoleOperator},
		{"listed twice alike", "viewer " + hash + "\nviewer " + hash, "", pki.RoleViewer},
		{"a role alone", "viewer\n", "tokens.txt line 1: the hash is 6 characters", ""},
		{"a hash without a role", "# t\n" + hash + "\n", "tokens.txt line 2: no role", ""},
		{"three fields", "viewer " + hash + " extra", "line 1: 3 fields", ""},
		{"unknown role", "\nadmin " + hash, "line 2: role \"admin\"", ""},
		{"trainer role", "trainer " + hash, "line 1: role trainer: a token is for a viewer or an operator", ""},
		{"plain token", "viewer secret", "line 1: the hash is 6 characters, want 64 hex digits", ""},
		{"short hash", "viewer " + hash[:62], "line 1: the hash is 62 characters", ""},
		{"long hash", "viewer " + hash + "00", "line 1: the hash is 66 characters", ""},
		{"not hex", "viewer " + strings.Repeat("g", 64), "line 1: the hash is not 64 hex digits", ""},
		{"two roles", "viewer " + hash + "\noperator " + hash, "line 2: the same token is listed as viewer and operator", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := ParseTokens(strings.NewReader(c.file), "tokens.txt")
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), hash) {
					t.Fatalf("the error shows the hash: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			role, who, ok := tok.Lookup("secret")
			if !ok || role != c.role || who != "token:"+hash[:8] {
				t.Fatalf("lookup: %v %q %v, want %s", role, who, ok, c.role)
			}
			if _, _, ok := tok.Lookup("Secret"); ok {
				t.Fatal("another token is accepted")
			}
		})
	}
}

// FuzzParseTokens: any file parses or fails with an error naming the file,
// never panics, and never echoes a line's content (it may hold a token).
func FuzzParseTokens(f *testing.F) {
	sum := sha256.Sum256([]byte("x"))
	f.Add("viewer " + hex.EncodeToString(sum[:]))
	f.Add("# c\noperator " + strings.ToUpper(hex.EncodeToString(sum[:])) + "\n")
	f.Add("viewer zz\n")
	f.Add("trainer " + hex.EncodeToString(sum[:]))
	f.Fuzz(func(t *testing.T, file string) {
		tok, err := ParseTokens(strings.NewReader(file), "fz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tokens file fz") && !strings.HasPrefix(err.Error(), "reading tokens file fz") {
				t.Fatalf("error without the file: %v", err)
			}
			return
		}
		if tok.Len() == 0 || tok.RequireRoles("fz") != nil {
			t.Fatalf("parsed %d tokens, some without a role", tok.Len())
		}
	})
}
