package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrainPredictEval runs the train → predict → eval path of the CLI on the
// shipped demo data with a small, fast configuration, with layer
// recomputation and the compute dtype left to the probe (recorded resolved).
func TestTrainPredictEval(t *testing.T) {
	out := filepath.Join(t.TempDir(), "adapter")
	data := "../../experiments/data/demo.csv"
	if _, err := run(t, "train", "--data", data, "--no-cache", "--config", "tiny", "--epochs", "1", "--batch-size", "32",
		"--max-len", "32", "--out", out, "--grad-checkpoint", "--compute-dtype", "auto"); err != nil {
		t.Fatalf("train: %v", err)
	}
	var man struct {
		Base struct {
			Compute string `json:"compute_dtype"`
		} `json:"base"`
	}
	if raw, err := os.ReadFile(filepath.Join(out, "loraft.json")); err != nil || json.Unmarshal(raw, &man) != nil ||
		(man.Base.Compute != "fp32" && man.Base.Compute != "bf16") {
		t.Fatalf("loraft.json records compute dtype %q (%v), want the one auto chose: fp32 or bf16", man.Base.Compute, err)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "loraft.json", "metrics.json", "vocab.txt"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("adapter lacks %s: %v", f, err)
		}
	}
	var pc map[string]any
	raw, _ := os.ReadFile(filepath.Join(out, "adapter_config.json"))
	if err := json.Unmarshal(raw, &pc); err != nil || pc["peft_type"] != "LORA" || pc["task_type"] != "SEQ_CLS" {
		t.Fatalf("adapter_config.json = %s (%v)", raw, err)
	}

	text, err := run(t, "predict", "--adapter", out, "--json", "--text", "i feel fine, thanks", "--text", "so much pressure at work")
	if err != nil {
		t.Fatalf("predict: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	for sc.Scan() {
		var p struct {
			Label         string             `json:"label"`
			Confidence    float64            `json:"confidence"`
			Probabilities map[string]float64 `json:"probabilities"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("predict line %q: %v", sc.Text(), err)
		}
		sum := 0.0
		for _, v := range p.Probabilities {
			sum += v
		}
		if len(p.Probabilities) != 7 || sum < 0.999 || sum > 1.001 || p.Probabilities[p.Label] != p.Confidence {
			t.Fatalf("prediction %+v: want 7 probabilities summing to 1 with the label's as confidence", p)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("predict printed %d lines for 2 statements (a comma must not split --text)", n)
	}

	text, err = run(t, "eval", "--adapter", out, "--data", data)
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if !strings.Contains(text, "the test split it was trained with (28 rows)") || !strings.Contains(text, "macro F1") {
		t.Fatalf("eval output:\n%s", text)
	}
}

func TestTrainBadFlags(t *testing.T) {
	data := "../../experiments/data/demo.csv"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--rank", "0"}, "flags --rank/--alpha/--lora-dropout/--targets"},
		{[]string{"--quant", "int8"}, "flag --quant"},
		{[]string{"--compute-dtype", "fp8"}, "flag --compute-dtype"},
		{[]string{"--device", "tpu"}, "flag --device"},
		{[]string{"--config", "/nonexistent/config.json"}, "flag --config"},
		{[]string{"--epochs", "0"}, "epochs 0"},
		{[]string{"--weights", "/nonexistent/model.safetensors"}, "flag --weights"},
		{[]string{"--store", t.TempDir(), "--store-timeout", "0s"}, "flag --store-timeout"},
	}
	for _, tc := range tests {
		args := append([]string{"train", "--data", data, "--no-cache", "--out", filepath.Join(t.TempDir(), "a")}, tc.args...)
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("train %v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
	if _, err := run(t, "predict", "--adapter", t.TempDir(), "--text", "x"); err == nil || !strings.Contains(err.Error(), "loraft.json") {
		t.Errorf("predict on an empty directory: %v, want an error naming loraft.json", err)
	}
	if _, err := run(t, "predict", "--adapter", t.TempDir()); err == nil || !strings.Contains(err.Error(), "nothing to classify") {
		t.Errorf("predict without input: %v", err)
	}
}
