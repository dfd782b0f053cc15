package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gpuCheckStub is bin/loraft for TestGPUCheckBudget: it logs its arguments,
// writes a JSON file where --out says, and fails or hangs (ignoring SIGTERM)
// when its command line contains $STUB_FAIL or $STUB_HANG.
const gpuCheckStub = `#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG"
case " $* " in
  *" $STUB_HANG "*) trap '' TERM; exec sleep 600 ;; # deaf to TERM: only a KILL ends it
  *" $STUB_FAIL "*) echo "stub: failing on purpose" >&2; exit 3 ;;
esac
prev=
for a in "$@"; do
  [ "$prev" = --out ] && { mkdir -p "$(dirname "$a")"; echo '{}' >"$a"; }
  prev=$a
done
echo '{"version":"stub"}'
`

// TestGPUCheckBudget runs deploy/gpu-check.sh on stubs (bin/loraft, python,
// build-shim.sh) as the GPU machine would run it, in one call of a limited
// length: a failing step is reported and the check goes on, a hanging step
// is cut (killed, if it ignores SIGTERM) at what is left of GPU_CHECK_BUDGET, the steps after it are
// skipped, not started, and the script ends in time with the results it has.
func TestGPUCheckBudget(t *testing.T) {
	script, err := filepath.Abs("gpu-check.sh")
	if err != nil {
		t.Fatal(err)
	}
	const budget = 35
	for _, tc := range []struct {
		name, fail, hang string
		wantRan          []string // argument lines bin/loraft must have seen
		wantOut          []string // files under $GPU_CHECK_OUT
		wantErr          []string // lines on stderr
		wantNotRan       []string
	}{
		{
			name: "a failing step, then one that hangs last",
			fail: "dequant", hang: "allreduce",
			wantRan: []string{"bench dequant --out", "bench trainer --device cpu", "bench dequant --device cuda", "bench trainer --device cuda",
				"train --data experiments/data/demo.csv", "bench epoch --device cuda", "bench allreduce"},
			wantOut: []string{"trainer-host-cpu.json", "trainer-gpu.json", "bucketing-gpu.json", "gpu-host-cpu.txt",
				"logs/dequant-host.txt", "hf-golden/log.txt"},
			wantErr: []string{"(bench dequant) FAILED (rc 3)", "all-reduce benchmark (ranks as processes, a core each on this machine) TIMED OUT"},
		},
		{
			name:    "the cuda trainer hangs",
			hang:    "--device cuda --compute-dtype",
			wantRan: []string{"bench dequant --out", "bench trainer --device cpu", "bench dequant --device cuda", "bench trainer --device cuda"},
			wantOut: []string{"dequant-host.json", "trainer-host-cpu.json"},
			wantErr: []string{"with the torch reference TIMED OUT", "hf-golden.py SKIPPED", "bucketing vs padded SKIPPED",
				"a core each on this machine) SKIPPED"},
			wantNotRan: []string{"train --data", "bench epoch", "bench allreduce"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for path, body := range map[string]string{
				"deploy/gpu-check.sh":                  "",
				"deploy/build-shim.sh":                 "#!/bin/sh\necho built the stub shim\n",
				"third_party/gotch/csrc/torch_api.cpp": "",
				"bin/loraft":                           gpuCheckStub,
				// python: prints a version for -c, and for hf-golden.py logs and succeeds.
				"stub/python": "#!/usr/bin/env bash\n[ \"$1\" = -c ] && { echo torch stub; exit 0; }\necho \"python $*\" >>\"$STUB_LOG\"\n",
			} {
				if path == "deploy/gpu-check.sh" {
					b, err := os.ReadFile(script)
					if err != nil {
						t.Fatal(err)
					}
					body = string(b)
				}
				p := filepath.Join(root, path)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			out, calls := filepath.Join(root, "out"), filepath.Join(root, "calls.txt")
			hang := tc.hang
			if hang == "" {
				hang = "never-matches"
			}
			cmd := exec.Command("bash", filepath.Join(root, "deploy/gpu-check.sh"))
			cmd.Env = append(os.Environ(), "GPU_CHECK_OUT="+out, "GPU_CHECK_BUDGET="+strconv.Itoa(budget), "PYTHON="+filepath.Join(root, "stub/python"),
				"STUB_LOG="+calls, "STUB_FAIL="+tc.fail, "STUB_HANG="+hang)
			// Its own process group, so that a script past its budget is
			// killed with the steps it started.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("gpu-check.sh: %v\n%s", err, stderr.String())
				}
			case <-time.After(3 * budget * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				t.Fatalf("gpu-check.sh still running %v after its start, past its %d s budget\n%s", time.Since(start), budget, stderr.String())
			}
			ran, err := os.ReadFile(calls)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.wantRan {
				if !strings.Contains(string(ran), want) {
					t.Errorf("bin/loraft never ran %q; it ran:\n%s", want, ran)
				}
			}
			for _, not := range tc.wantNotRan {
				if strings.Contains(string(ran), not) {
					t.Errorf("bin/loraft ran %q after the budget was spent:\n%s", not, ran)
				}
			}
			for _, f := range tc.wantOut {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("result %s: %v", f, err)
				}
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestGPUCheckCollect places a gpu-check run's files, read-only as the device
// tool brings them back, where the repository keeps them; a second run
// replaces the first; a folder with nothing of a run is an error.
func TestGPUCheckCollect(t *testing.T) {
	script, err := filepath.Abs("gpu-check-collect.sh")
	if err != nil {
		t.Fatal(err)
	}
	root, src := t.TempDir(), t.TempDir()
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "deploy/gpu-check-collect.sh"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"trainer-gpu.json":                           `{"device":"cuda"}`,
		"gpu-host-cpu.txt":                           "bf16 flags: amx_bf16",
		"logs/trainer-gpu.txt":                       "log",
		"hf-golden/tokenizer.json":                   `{"uncased":[]}`,
		"hf-golden/tiny-bert/config.json":            `{}`,
		"hf-golden/peft/adapter/adapter_config.json": `{}`,
		"hf-golden/peft/logits.json":                 `{"logits":[[1]]}`,
		"hf-golden/loraft-adapter/loraft.json":       `{}`,
	}
	for name, body := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(dir string) (string, error) {
		out, err := exec.Command("bash", filepath.Join(root, "deploy/gpu-check-collect.sh"), dir).CombinedOutput()
		return string(out), err
	}
	for run := 1; run <= 2; run++ {
		if out, err := collect(src); err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
	}
	for to, want := range map[string]string{
		"bench/results/trainer-gpu.json":                                        `{"device":"cuda"}`,
		"bench/results/gpu-host-cpu.txt":                                        "bf16 flags: amx_bf16",
		"bench/results/gpu-logs/trainer-gpu.txt":                                "log",
		"shard/wordpiece/testdata/hf-golden/tokenizer.json":                     `{"uncased":[]}`,
		"trainer/model/hub/testdata/hf-golden/tiny-bert/config.json":            `{}`,
		"trainer/model/hub/testdata/hf-golden/peft/adapter/adapter_config.json": `{}`,
		"trainer/model/hub/testdata/hf-golden/peft/logits.json":                 `{"logits":[[1]]}`,
	} {
		got, err := os.ReadFile(filepath.Join(root, to))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", to, got, err, want)
		}
	}
	// No nesting on the second run (cp -R into an existing folder would).
	if _, err := os.Stat(filepath.Join(root, "trainer/model/hub/testdata/hf-golden/tiny-bert/tiny-bert")); err == nil {
		t.Error("the second run nested tiny-bert/ inside the first's")
	}
	if _, err := os.Stat(filepath.Join(root, "trainer/model/hub/testdata/hf-golden/loraft-adapter")); err == nil {
		t.Error("loraft-adapter/ was kept; peft/adapter/ is the same adapter")
	}
	if out, err := collect(t.TempDir()); err == nil || !strings.Contains(out, "nothing of a gpu-check run") {
		t.Errorf("an empty folder: %v\n%s", err, out)
	}
}
