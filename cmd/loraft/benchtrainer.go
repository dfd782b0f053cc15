package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/model"
	"github.com/urfave/cli/v2"
)

// procStatusKB reads a "Vm…" line of /proc/self/status in kB.
func procStatusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// stepResult is what `loraft bench step` prints.
type stepResult struct {
	Impl          string    `json:"impl"`
	Config        string    `json:"config"`
	Base          string    `json:"base"`
	Compute       string    `json:"dtype"`
	Device        string    `json:"device"`
	Seq           int       `json:"seq"`
	Batch         int       `json:"batch"`
	Steps         int       `json:"steps"`
	Threads       int       `json:"threads"`
	StepSeconds   []float64 `json:"step_s"`
	StepSMean     float64   `json:"step_s_mean"`
	StepSP50      float64   `json:"step_s_p50"`
	SamplesPerS   float64   `json:"samples_per_s"`
	PeakRSSMB     float64   `json:"peak_rss_mb"`
	BaseBytes     int64     `json:"base_bytes"`
	BitsPerParam  float64   `json:"bits_per_param"`
	Trainable     int64     `json:"trainable_params"`
	RSSAtMB       []float64 `json:"rss_at_mb,omitempty"`
	RSSAtStep     []int     `json:"rss_at_step,omitempty"`
	GoHeapAtMB    []float64 `json:"go_heap_at_mb,omitempty"`
	SetupSeconds  float64   `json:"setup_s"`
	TorchVersion  string    `json:"torch_version"`
	CUDAAvailable bool      `json:"cuda"`
}

func benchStepCommand() *cli.Command {
	return &cli.Command{
		Name:  "step",
		Usage: "time training steps of one model on synthetic batches in this process (JSON); bench trainer runs it",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: "base"},
			&cli.StringFlag{Name: "base", Value: "nf4", Usage: "nf4 or fp32"},
			&cli.StringFlag{Name: "compute-dtype", Value: "fp32"},
			&cli.StringFlag{Name: "device", Value: "cpu"},
			&cli.IntFlag{Name: "seq", Value: 128},
			&cli.IntFlag{Name: "batch", Value: 8},
			&cli.IntFlag{Name: "steps", Value: 3},
			&cli.IntFlag{Name: "warmup", Value: 1},
			&cli.IntSliceFlag{Name: "rss-at", Usage: "record RSS after these step numbers (soak)"},
		},
		Action: func(c *cli.Context) error {
			threads, err := libtorch.SetThreads()
			if err != nil {
				return err
			}
			defer trainer.LockThread()()
			start := time.Now()
			cfg, err := model.LoadConfig(c.String("config"))
			if err != nil {
				return fmt.Errorf("flag --config: %w", err)
			}
			device, err := trainer.ParseDevice(c.String("device"))
			if err != nil {
				return fmt.Errorf("flag --device: %w", err)
			}
			compute, err := trainer.ParseCompute(c.String("compute-dtype"))
			if err != nil {
				return fmt.Errorf("flag --compute-dtype: %w", err)
			}
			lc := lora.Config{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"query", "value"}}
			m, err := model.New(cfg, model.RandomWeights(cfg, 1), nil, nil, model.Options{Quant: model.Quant(c.String("base")),
				Compute: compute, Device: device, LoRA: lc, Labels: shard.NumLabels, Seed: 1})
			if err != nil {
				return err
			}
			defer m.Drop()
			debug.FreeOSMemory() // the host copy of the random base is garbage now
			batch := c.Int("batch")
			st, err := trainer.NewStepTimer(m, trainer.SyntheticData(4*batch, c.Int("seq"), 1), batch)
			if err != nil {
				return err
			}
			defer st.Close()
			res := stepResult{Impl: "go", Config: c.String("config"), Base: c.String("base"), Compute: c.String("compute-dtype"),
				Device: c.String("device"), Seq: c.Int("seq"), Batch: batch, Steps: c.Int("steps"), Threads: threads,
				BaseBytes: m.BaseBytes(), BitsPerParam: 8 * float64(m.BaseBytes()) / float64(m.BaseParams()),
				Trainable: trainableCount(m), TorchVersion: libtorch.Describe().TorchVersion, CUDAAvailable: device.IsCuda()}
			res.SetupSeconds = time.Since(start).Seconds()
			rssAt := c.IntSlice("rss-at")
			for i := 0; i < c.Int("warmup")+c.Int("steps"); i++ {
				d, err := st.Step(c.Context)
				if err != nil {
					return err
				}
				if i >= c.Int("warmup") {
					res.StepSeconds = append(res.StepSeconds, d.Seconds())
				}
				if slices.Contains(rssAt, i+1) {
					// Collect and return freed Go memory first: otherwise the
					// sample mostly shows where the GC happens to be in its cycle
					// (gotch allocates ~100 KB of Go heap per tensor wrapper).
					debug.FreeOSMemory()
					res.RSSAtStep = append(res.RSSAtStep, i+1)
					res.RSSAtMB = append(res.RSSAtMB, float64(procStatusKB("VmRSS"))/1024)
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					res.GoHeapAtMB = append(res.GoHeapAtMB, float64(ms.HeapInuse)/(1<<20))
				}
			}
			if len(res.StepSeconds) > 0 {
				s := slices.Clone(res.StepSeconds)
				slices.Sort(s)
				sum := 0.0
				for _, v := range s {
					sum += v
				}
				res.StepSMean, res.StepSP50 = sum/float64(len(s)), s[len(s)/2]
				res.SamplesPerS = float64(batch) / res.StepSMean
			}
			res.PeakRSSMB = float64(procStatusKB("VmHWM")) / 1024
			return json.NewEncoder(c.App.Writer).Encode(res)
		},
	}
}

func benchTrainerCommand() *cli.Command {
	return &cli.Command{
		Name:  "trainer",
		Usage: "QLoRA step speed and memory vs PyTorch eager on the same libtorch, and an RSS soak (JSON)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: "base"},
			&cli.StringFlag{Name: "device", Value: "cpu"},
			&cli.StringFlag{Name: "compute-dtype", Value: "fp32"},
			&cli.IntFlag{Name: "seq", Value: 128},
			&cli.IntFlag{Name: "batch", Value: 8},
			&cli.IntFlag{Name: "steps", Value: 3},
			&cli.IntFlag{Name: "soak-steps", Value: 2200, Usage: "tiny-config steps of the RSS soak (0: skip)"},
			&cli.StringFlag{Name: "python", Value: "/usr/bin/python3", Usage: "python with torch for the reference"},
			&cli.PathFlag{Name: "reference", Value: "bench/reference/qlora_step.py"},
			&cli.StringFlag{Name: "out", Usage: "write the JSON here (default: stdout)"},
		},
		Action: func(c *cli.Context) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			common := []string{"--config", c.String("config"), "--device", c.String("device"), "--compute-dtype", c.String("compute-dtype"),
				"--seq", strconv.Itoa(c.Int("seq")), "--batch", strconv.Itoa(c.Int("batch")), "--steps", strconv.Itoa(c.Int("steps"))}
			run := func(name string, args ...string) (map[string]any, error) {
				fmt.Fprintf(os.Stderr, "bench trainer: %s …\n", name)
				ctx, cancel := context.WithTimeout(c.Context, 20*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, args[0], args[1:]...)
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				if err := cmd.Run(); err != nil {
					return nil, fmt.Errorf("%s: %w\n%s", name, err, errb.String())
				}
				var v map[string]any
				if err := json.Unmarshal(lastLine(out.Bytes()), &v); err != nil {
					return nil, fmt.Errorf("%s printed no JSON: %w\n%s", name, err, out.String())
				}
				return v, nil
			}
			goNF4, err := run("go nf4", append([]string{self, "bench", "step", "--base", "nf4"}, common...)...)
			if err != nil {
				return err
			}
			goFP32, err := run("go fp32 base", append([]string{self, "bench", "step", "--base", "fp32"}, common...)...)
			if err != nil {
				return err
			}
			dtype := "fp32"
			if c.String("compute-dtype") == "bf16" {
				dtype = "bf16"
			}
			ref, err := run("torch reference", c.String("python"), c.Path("reference"), "--config", c.String("config"),
				"--device", c.String("device"), "--dtype", dtype, "--seq", strconv.Itoa(c.Int("seq")),
				"--batch", strconv.Itoa(c.Int("batch")), "--steps", strconv.Itoa(c.Int("steps")), "--warmup", "1",
				"--threads", strconv.Itoa(runtime.NumCPU()), "--json")
			if err != nil {
				return err
			}
			report := map[string]any{
				"date": time.Now().UTC().Format(time.RFC3339), "loraft": version, "cpus": runtime.NumCPU(),
				"config": c.String("config"), "device": c.String("device"), "dtype": c.String("compute-dtype"),
				"seq": c.Int("seq"), "batch": c.Int("batch"), "steps": c.Int("steps"),
				"go_samples_per_s":           goNF4["samples_per_s"],
				"torch_samples_per_s":        ref["samples_per_s"],
				"ratio":                      num(goNF4["samples_per_s"]) / num(ref["samples_per_s"]),
				"peak_rss_mb":                goNF4["peak_rss_mb"],
				"peak_rss_mb_fp32_base":      goFP32["peak_rss_mb"],
				"torch_peak_rss_mb":          ref["peak_rss_mb"],
				"base_bytes":                 goNF4["base_bytes"],
				"bits_per_param":             goNF4["bits_per_param"],
				"go_fp32_base_samples_per_s": goFP32["samples_per_s"],
				"runs":                       map[string]any{"go_nf4": goNF4, "go_fp32_base": goFP32, "torch": ref},
			}
			if n := c.Int("soak-steps"); n > 0 {
				soak, err := run("soak", self, "bench", "step", "--config", "tiny", "--base", "nf4", "--seq", "128", "--batch", "8",
					"--steps", strconv.Itoa(n), "--warmup", "0", "--rss-at", "200", "--rss-at", strconv.Itoa(n))
				if err != nil {
					return err
				}
				rss, _ := soak["rss_at_mb"].([]any)
				if len(rss) == 2 {
					report["rss_growth_mb_per_1k_steps"] = (num(rss[1]) - num(rss[0])) / (float64(n-200) / 1000)
					report["rss_growth_method"] = "VmRSS after runtime/debug.FreeOSMemory at step 200 and at the last step, bert-tiny, seq 128, batch 8, NF4"
				}
				report["soak"] = soak
			}
			return writeJSON(c, c.String("out"), report)
		},
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}
