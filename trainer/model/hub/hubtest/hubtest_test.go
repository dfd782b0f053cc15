package hubtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFolder(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"google-bert/bert-base-uncased", "models--google-bert--bert-base-uncased"},
		{"bert-base-uncased", "models--bert-base-uncased"},
	} {
		if got := Folder(tc.id); got != tc.want {
			t.Errorf("Folder(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestWriteRepo: each snapshot file is a relative link into blobs/ holding
// its source's bytes, and refs/main names the revision.
func TestWriteRepo(t *testing.T) {
	src := t.TempDir()
	want := map[string]string{"config.json": `{"hidden_size": 32}`, "vocab.txt": "[PAD]\n[UNK]\n"}
	for n, body := range want {
		if err := os.WriteFile(filepath.Join(src, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cache := t.TempDir()
	const rev = "0123456789abcdef0123456789abcdef01234567"
	snap := WriteRepo(t, cache, Folder("acme/tiny"), rev, Files(src, "config.json", "vocab.txt"))
	if wantSnap := filepath.Join(cache, "models--acme--tiny", "snapshots", rev); snap != wantSnap {
		t.Errorf("snapshot %s, want %s", snap, wantSnap)
	}
	for n, body := range want {
		link, err := os.Readlink(filepath.Join(snap, n))
		if err != nil || filepath.IsAbs(link) || filepath.Base(filepath.Dir(link)) != "blobs" {
			t.Errorf("snapshot's %s links to %q (%v), want a relative link into blobs/", n, link, err)
		}
		if got, err := os.ReadFile(filepath.Join(snap, n)); err != nil || string(got) != body {
			t.Errorf("snapshot's %s holds %q (%v), want %q", n, got, err, body)
		}
	}
	if got, err := os.ReadFile(filepath.Join(cache, "models--acme--tiny", "refs", "main")); err != nil || string(got) != rev {
		t.Errorf("refs/main holds %q (%v), want %q", got, err, rev)
	}
}
