package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestHelpers: the binary links neither "testing" nor a
// test harness of loraft's (they live in _test files and in packages only
// tests import). hashicorp/raft's own testing.go, which imports "testing",
// is left out of third_party/raft by deploy/setup.sh.
func TestBinaryLinksNoTestHelpers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		if pkg == "testing" {
			t.Errorf("the binary links package testing")
		}
		if !strings.HasPrefix(pkg, "github.com/loraft/loraft") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if imp == "testing" || strings.HasSuffix(imp, "test") && strings.HasPrefix(imp, "github.com/loraft/loraft") {
				t.Errorf("%s, linked into the binary, imports %s", pkg, imp)
			}
		}
	}
}
