package bearer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/pki"
)

func TestParse(t *testing.T) {
	sum := sha256.Sum256([]byte("secret"))
	hash := hex.EncodeToString(sum[:])
	cases := []struct {
		name, file string
		err        string // "" for success
		role       pki.Role
		roles      bool // RequireRoles passes
	}{
		{"viewer", "viewer " + hash + "\n", "", pki.RoleViewer, true},
		{"operator with comments", "# who\n\n  operator   " + hash + "  \n", "", pki.RoleOperator, true},
		{"upper-case hex", "viewer " + strings.ToUpper(hash), "", pki.RoleViewer, true},
		{"listed twice alike", "viewer " + hash + "\nviewer " + hash, "", pki.RoleViewer, true},
		{"a hash alone", hash + "\n", "", "", false},
		{"empty", "# nothing\n\n", "tokens.txt: no token hashes", "", false},
		{"a raw token", "secret\n", "line 1: the hash is 6 characters, want 64 hex digits", "", false},
		{"three fields", "viewer " + hash + " extra", "line 1: 3 fields", "", false},
		{"unknown role", "\nadmin " + hash, "line 2: role \"admin\"", "", false},
		{"trainer role", "trainer " + hash, "line 1: role trainer: a token is for a viewer or an operator", "", false},
		{"short hash", "viewer " + hash[:62], "line 1: the hash is 62 characters", "", false},
		{"long hash", "viewer " + hash + "00", "line 1: the hash is 66 characters", "", false},
		{"not hex", "viewer " + strings.Repeat("g", 64), "line 1: the hash is not 64 hex digits", "", false},
		{"two roles", "viewer " + hash + "\noperator " + hash, "line 2: the same token is listed as viewer and operator", "", false},
		{"a role and none", hash + "\nviewer " + hash, "line 2: the same token is listed as without a role and viewer", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(c.file), "tokens.txt")
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), hash) || strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error shows the line: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			role, who, ok := s.Lookup("secret")
			if !ok || role != c.role || who != "token:"+hash[:8] {
				t.Fatalf("Lookup: %q %q %v, want %q", role, who, ok, c.role)
			}
			if _, _, ok := s.Lookup("Secret"); ok {
				t.Fatal("another token is accepted")
			}
			if _, _, ok := s.Lookup(""); ok {
				t.Fatal("the empty token is accepted")
			}
			if err := s.RequireRoles("tokens.txt"); (err == nil) != c.roles {
				t.Fatalf("RequireRoles: %v, want ok=%v", err, c.roles)
			}
		})
	}
}

func TestNewAndLoad(t *testing.T) {
	tok, line, err := New("operator")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, tok) || !strings.HasPrefix(line, "operator ") {
		t.Fatalf("line %q for token %q", line, tok)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if role, _, ok := s.Lookup(tok); !ok || role != pki.RoleOperator || s.Len() != 1 {
		t.Fatalf("the new token is %q %v (%d tokens)", role, ok, s.Len())
	}
	if other, _, _ := New("operator"); other == tok {
		t.Fatal("two tokens are the same")
	}
	if _, _, err := New("coordinator"); err == nil {
		t.Fatal("a coordinator token was made")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "opening tokens file") {
		t.Fatalf("a missing file: %v", err)
	}
}

// FuzzParse: any file parses into at least one token or fails with an
// error naming the file; it never panics and never echoes a line.
func FuzzParse(f *testing.F) {
	sum := sha256.Sum256([]byte("x"))
	h := hex.EncodeToString(sum[:])
	f.Add("viewer " + h)
	f.Add("# c\noperator " + strings.ToUpper(h) + "\n")
	f.Add("# c\n\n" + h)
	f.Add("viewer zz\n")
	f.Add("trainer " + h)
	f.Add("a b c")
	f.Fuzz(func(t *testing.T, file string) {
		s, err := Parse(strings.NewReader(file), "fz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tokens file fz") && !strings.HasPrefix(err.Error(), "reading tokens file fz") {
				t.Fatalf("error without the file: %v", err)
			}
			return
		}
		if s.Len() == 0 {
			t.Fatal("no error and no tokens")
		}
		for _, e := range s.entries {
			if e.role != "" && e.role != pki.RoleViewer && e.role != pki.RoleOperator {
				t.Fatalf("a token has role %s", e.role)
			}
		}
	})
}
