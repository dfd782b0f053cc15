package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestHelpers: no package of loraft's own that the binary
// links imports "testing" (test harnesses live in _test files and in
// packages only tests import). hashicorp/raft's own testing.go still pulls
// "testing" into the binary; that is upstream's and outside this check.
func TestBinaryLinksNoTestHelpers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
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
