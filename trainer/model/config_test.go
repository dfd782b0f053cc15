package model

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolveConfig: an unnamed config is base with weights and tiny
// without; a named one is kept, whatever the weights.
func TestResolveConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"hidden_size": 64, "num_attention_heads": 4}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		weights  bool
		wantName string
		hidden   int
	}{
		{"", false, ConfigTiny, Tiny().HiddenSize},
		{"", true, ConfigBase, Base().HiddenSize},
		{ConfigTiny, true, ConfigTiny, Tiny().HiddenSize},
		{ConfigBase, false, ConfigBase, Base().HiddenSize},
		{"bert-base-uncased", false, "bert-base-uncased", Base().HiddenSize},
		{p, true, p, 64},
	} {
		name, c, err := ResolveConfig(tc.name, tc.weights)
		if err != nil || name != tc.wantName || c.HiddenSize != tc.hidden {
			t.Errorf("ResolveConfig(%q, %v) = %q, hidden %d, %v; want %q, hidden %d", tc.name, tc.weights, name, c.HiddenSize, err, tc.wantName, tc.hidden)
		}
	}
	if _, _, err := ResolveConfig("huge", false); err == nil {
		t.Error("ResolveConfig(huge) succeeded")
	}
}
