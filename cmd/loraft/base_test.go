package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/trainer/model/hub/hubtest"
)

// TestTrainFromHubCache trains on a base named by hub id and found in an HF
// cache (HF_HUB_CACHE), whose weights real PyTorch wrote as
// pytorch_model.bin and whose tokenizer_config.json says do_lower_case
// false: the adapter names the hub id as its base and records the cased
// tokenizer, and predict uses it.
func TestTrainFromHubCache(t *testing.T) {
	cache := t.TempDir()
	const id, rev = "loraft/torch-bert-micro", "0123456789abcdef0123456789abcdef01234567"
	snap := hubtest.WriteRepo(t, cache, hubtest.Folder(id), rev, hubtest.Files("../../trainer/model/testdata/torchbert",
		"config.json", "vocab.txt", "tokenizer_config.json", "pytorch_model.bin"))
	t.Setenv("HF_HUB_CACHE", cache)
	data := "../../experiments/data/demo.csv"
	out := filepath.Join(t.TempDir(), "adapter")
	if text, err := run(t, "train", "--data", data, "--no-cache", "--base", id, "--epochs", "1", "--batch-size", "32",
		"--max-len", "16", "--out", out); err != nil {
		t.Fatalf("train: %v\n%s", err, text)
	}
	var pc struct {
		Base string `json:"base_model_name_or_path"`
	}
	raw, _ := os.ReadFile(filepath.Join(out, "adapter_config.json"))
	if err := json.Unmarshal(raw, &pc); err != nil || pc.Base != id {
		t.Errorf("adapter_config.json base_model_name_or_path = %q (%v), want %s", pc.Base, err, id)
	}
	raw, _ = os.ReadFile(filepath.Join(out, "loraft.json"))
	if !strings.Contains(string(raw), `"do_lower_case": false`) {
		t.Errorf("loraft.json does not record the cased tokenizer:\n%s", raw)
	}
	if _, err := run(t, "predict", "--adapter", out, "--text", "Hello World"); err != nil {
		t.Errorf("predict: %v", err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--base", "google-bert/bert-base-cased"}, "huggingface-cli download google-bert/bert-base-cased"},
		{[]string{"--base", id, "--weights", filepath.Join(snap, "pytorch_model.bin")}, "flags --base and --weights"},
		{[]string{"--base", t.TempDir()}, "flag --base"},
	} {
		args := append([]string{"train", "--data", data, "--no-cache", "--out", filepath.Join(t.TempDir(), "a")}, tc.args...)
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("train %v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
