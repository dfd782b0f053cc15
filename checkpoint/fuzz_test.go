package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParseManifest: any bytes as a manifest never panic; a refusal wraps
// ErrCorrupt and names the key; an accepted manifest passes Validate, its
// entries have 64-hex hashes and safe names, and it survives a JSON round
// trip unchanged.
func FuzzParseManifest(f *testing.F) {
	ctx := context.Background()
	s, err := NewDirStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	ck, err := Save(ctx, s, "seed", 3, files(3), map[string]float64{"macro_f1": 0.5}, time.Unix(0, 0))
	if err != nil {
		f.Fatal(err)
	}
	good, err := GetBytes(ctx, s, Prefix("seed", 3)+ManifestName)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(ck.Manifest.Files[0].SHA256), []byte("abc"), 1))
	f.Add([]byte(`{"format":1,"run":"r","step":1,"files":[]}`))
	f.Add([]byte(`{"format":1,"run":"r","step":-1,"files":[{"name":"../x","size":-1,"sha256":""}]}`))
	f.Add([]byte(`{"format":1,"run":"r","step":1,"files":[{"name":"a","size":1,"sha256":"` + strings.Repeat("0", 64) + `"}],"metrics":{"x":1e999}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{} {}`))
	const key = "runs/r/ckpt/000000000001/MANIFEST.json"
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(key, b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), key) {
				t.Fatalf("refusal %v does not wrap ErrCorrupt naming %s", err, key)
			}
			return
		}
		if err := m.Validate(key); err != nil {
			t.Fatalf("accepted a manifest Validate refuses: %v", err)
		}
		for _, e := range m.Files {
			if len(e.SHA256) != 64 || e.Size < 0 || e.Name == "" || strings.ContainsAny(e.Name, "/\\") || e.Name == ".." {
				t.Fatalf("accepted entry %+v", e)
			}
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encoding an accepted manifest: %v", err)
		}
		m2, err := ParseManifest(key, again)
		if err != nil || !reflect.DeepEqual(m2.Files, m.Files) || m2.Run != m.Run || m2.Step != m.Step || !m2.Created.Equal(m.Created) {
			t.Fatalf("round trip: %+v, %v; want %+v", m2, err, m)
		}
	})
}

// FuzzParseCredentials: any file content never panics, and an error never
// holds a value from the file, since a value may be a secret.
func FuzzParseCredentials(f *testing.F) {
	f.Add("access_key=AKIAEXAMPLE\nsecret_key=s3cr3t-value\n")
	f.Add("\ufeff[default]\naws_access_key_id = AKIA\naws_secret_access_key = \"wJalrXUtnFEMI\"\n")
	f.Add("[profile other]\nsecret_key=zzzzzzzz\n[default\nsecret_key=hunter2hunter2\n")
	f.Add("# comment\n; another\nsecret_key hunter2hunter2\n")
	f.Add("secret_key=" + strings.Repeat("x", 70000) + "\n")
	f.Add("access_key=\nsecret_key=\n")
	f.Fuzz(func(t *testing.T, content string) {
		access, secret, err := parseCredentials(strings.NewReader(content), "creds.ini")
		if err == nil {
			if access == "" || secret == "" {
				t.Fatalf("accepted empty credentials %q/%q", access, secret)
			}
			return
		}
		msg := err.Error()
		for line := range strings.SplitSeq(content, "\n") {
			// Any run of 8 or more characters from a line could be a
			// secret; none may appear in the error. Shorter runs match
			// the error's own words by chance.
			for _, part := range strings.FieldsFunc(line, func(r rune) bool { return r == '=' || r == ' ' || r == '\t' || r == '"' || r == '\'' }) {
				part = strings.TrimSpace(strings.TrimPrefix(part, "\ufeff"))
				if len(part) >= 8 && strings.Contains(msg, part) && !strings.Contains(credentialsErrorWords, part) {
					t.Fatalf("error %q holds %q from the file", msg, part)
				}
			}
		}
	})
}

// credentialsErrorWords are the fixed texts of parseCredentials' errors: a
// part of a line that is one of them says nothing secret.
const credentialsErrorWords = "s3 credentials file creds.ini: line: malformed section header; want key=value; " +
	"want access_key= and secret_key= lines, or a [default] section with aws_access_key_id and aws_secret_access_key; " +
	"bufio.Scanner: token too long"

// TestReadCredentialsFileBounded: a credentials path naming an endless or
// huge file is refused after reading at most the limit, not read whole.
func TestReadCredentialsFileBounded(t *testing.T) {
	huge := t.TempDir() + "/huge"
	if err := os.WriteFile(huge, bytes.Repeat([]byte("# padding\n"), maxCredentialsFileBytes/10+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", huge} {
		if _, _, err := readCredentialsFile(path); err == nil || !strings.Contains(err.Error(), "longer than") {
			t.Errorf("readCredentialsFile(%s) = %v, want a refusal for its length", path, err)
		}
	}
}
