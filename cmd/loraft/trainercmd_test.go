package main

import (
	"strings"
	"testing"
)

// TestTrainerModeFlags: under --coordinators the trainer refuses the
// training and static-ring flags it would ignore, naming each; without it,
// the agent-only flags. Flags the mode reads get past the check.
func TestTrainerModeFlags(t *testing.T) {
	store := t.TempDir()
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
		not  []string // not in it
	}{
		{"training flag under coordinators", []string{"trainer", "--coordinators", "127.0.0.1:1", "--store", store, "--alpha", "32"},
			[]string{"flag --alpha is not used under --coordinators", "sweep spec"}, nil},
		{"several, in flag order", []string{"trainer", "--coordinators", "127.0.0.1:1", "--store", store, "--rank", "1", "--epochs", "2", "--data", "x.csv", "--lora-rank", "4"},
			[]string{"flags --data, --lora-rank, --epochs, --rank are not used under --coordinators"}, nil},
		{"split and config", []string{"trainer", "--coordinators", "127.0.0.1:1", "--split", "70/20/10", "--config", "base"},
			[]string{"--split", "--config"}, nil},
		{"agent flags pass the check", []string{"trainer", "--coordinators", "127.0.0.1:1", "--keep-best", "2", "--no-cache", "--device", "cpu", "--listen", "127.0.0.1:0"},
			[]string{"flag --store"}, []string{"not used under"}},
		{"agent flag in static mode", []string{"trainer", "--listen", "127.0.0.1:0", "--id", "t1", "--data", "x.csv", "--out", "o", "--peers", "127.0.0.1:1"},
			[]string{"flags --id, --listen are only used under --coordinators"}, nil},
		{"spool and advertise pass the check", []string{"trainer", "--coordinators", "127.0.0.1:1", "--spool-dir", store, "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:9"},
			[]string{"flag --store"}, []string{"not used under"}},
		{"metrics address passes the check", []string{"trainer", "--coordinators", "127.0.0.1:1", "--metrics-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0"},
			[]string{"flag --store"}, []string{"not used under"}},
		{"metrics address in static mode", []string{"trainer", "--metrics-addr", "127.0.0.1:0", "--data", "x.csv", "--out", "o", "--peers", "127.0.0.1:1"},
			[]string{"flag --metrics-addr is only used under --coordinators"}, nil},
		{"non-loopback metrics address without TLS", []string{"trainer", "--coordinators", "127.0.0.1:1", "--store", store, "--metrics-addr", "0.0.0.0:9100", "--listen", "127.0.0.1:0"},
			[]string{"--metrics-addr 0.0.0.0:9100", "not loopback"}, nil},
		{"spool and advertise in static mode", []string{"trainer", "--spool-dir", store, "--advertise", "127.0.0.1:9", "--data", "x.csv", "--out", "o", "--peers", "127.0.0.1:1"},
			[]string{"flags --advertise, --spool-dir are only used under --coordinators"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LORAFT_COORDINATORS", "")
			t.Setenv("LORAFT_STORE", "")
			out, err := run(t, tc.args...)
			if err == nil {
				t.Fatalf("loraft %s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q mentions %q", err, w)
				}
			}
		})
	}
}
