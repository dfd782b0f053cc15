package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClusterCommandsBadInput: bad specs, data and flags fail before
// anything is launched, with errors naming the file, line, row or flag.
func TestClusterCommandsBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "name: ok\n")
	badSpec := write("bad.yaml", "name: x\nspace:\n  rank: [0]\n")
	typo := write("typo.yaml", "name: x\ntrials_per_trainer: 2\n")
	badData := write("bad.csv", ",statement,status\n0,hello,Happy\n")
	store := filepath.Join(dir, "store")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"spec value", []string{"sweep", "launch", "--spec", badSpec, "--data", "../../experiments/data/demo.csv", "--store", store}, []string{"bad.yaml:3", "space.rank"}},
		{"spec typo", []string{"sweep", "launch", "--spec", typo, "--data", "../../experiments/data/demo.csv", "--store", store}, []string{"typo.yaml:2", "trials_per_trainer"}},
		{"data row", []string{"sweep", "launch", "--spec", good, "--data", badData, "--store", store}, []string{"bad.csv:2", "status", "Happy"}},
		{"no store", []string{"sweep", "launch", "--spec", good, "--data", badData}, []string{"--store"}},
		{"peers", []string{"coordinator", "--id", "n1", "--raft-addr", "127.0.0.1:1", "--api-addr", "127.0.0.1:2", "--dir", dir, "--peers", "n1=127.0.0.1:1"}, []string{"--peers", "ID=RAFT"}},
		{"peers without self", []string{"coordinator", "--id", "n9", "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "n9"), "--peers", "n1=127.0.0.1:1/127.0.0.1:2"}, []string{"--peers", "n9"}},
		{"coordinator id", []string{"coordinator", "--raft-addr", "127.0.0.1:1"}, []string{"--id"}},
		{"raft profile", []string{"coordinator", "--id", "n1", "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "n1"), "--raft-profile", "turbo"}, []string{"--raft-profile", "turbo"}},
		{"static trainer", []string{"trainer", "--data", "../../experiments/data/demo.csv"}, []string{"--out"}},
		{"status name", []string{"sweep", "status"}, []string{"SWEEP"}},
		{"flag after the name", []string{"sweep", "status", "demo", "--watch"}, []string{`"--watch"`, "flags go before"}},
		{"resume name", []string{"run", "resume"}, []string{"RUN"}},
		{"local trainers", []string{"local", "--trainers", "0"}, []string{"--trainers"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err == nil {
				t.Fatalf("loraft %s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
