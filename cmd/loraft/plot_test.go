package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loraft/loraft/internal/chart"
)

// runPlot runs the loraft app with args, like run, with the plot command
// registered even where newApp does not list it yet.
func runPlot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	registered := false
	for _, c := range app.Commands {
		registered = registered || c.Name == "plot"
	}
	if !registered {
		app.Commands = append(app.Commands, plotCommand())
	}
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"loraft"}, args...))
	return out.String(), err
}

// writePlotReport writes a 3×3 rank×alpha sweep report, one trial still
// running, and returns its path.
func writePlotReport(t *testing.T) string {
	t.Helper()
	r := chart.Report{Sweep: "rank-alpha", Metric: "macro_f1"}
	for i, rank := range []int{4, 8, 16} {
		for j, alpha := range []float64{8, 16, 32} {
			tr := chart.Trial{
				Name: fmt.Sprintf("rank-alpha-t%03d", 3*i+j), Rank: rank, Alpha: alpha,
				State: "SUCCEEDED", WallMS: 60000,
			}
			m := 0.4 + 0.05*float64(i) + 0.02*float64(j)
			if i == 2 && j == 2 {
				tr.State = "RUNNING"
			} else {
				tr.Metric = &m
			}
			for s := 1; s <= 50; s++ {
				tr.Loss = append(tr.Loss, chart.Point{Step: s, Value: 2 / float64(s+i)})
			}
			for s := 10; s <= 50; s += 10 {
				tr.Eval = append(tr.Eval, chart.Point{Step: s, Value: m * float64(s) / 50})
			}
			r.Trials = append(r.Trials, tr)
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "sweep.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlot(t *testing.T) {
	report := writePlotReport(t)
	for _, tc := range []struct {
		name   string
		format []string // --format flag, if any
		ext    string
	}{
		{"default png", nil, "png"},
		{"svg", []string{"--format", "svg"}, "svg"},
		{"upper-case PNG", []string{"--format", "PNG"}, "png"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "plots", "rank-alpha") // created by the command
			out, err := runPlot(t, append([]string{"plot", "--report", report, "--out", dir}, tc.format...)...)
			if err != nil {
				t.Fatalf("plot: %v\n%s", err, out)
			}
			want := []string{filepath.Join(dir, "heatmap."+tc.ext), filepath.Join(dir, "curves."+tc.ext)}
			if got := strings.Fields(out); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("printed %q, want the paths %q", got, want)
			}
			for _, p := range want {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if tc.ext == "svg" {
					if !bytes.Contains(data, []byte("<svg")) || !bytes.Contains(data, []byte("rank-alpha: validation macro_f1")) {
						t.Errorf("%s is not the sweep's SVG plot", p)
					}
					continue
				}
				img, err := png.Decode(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("%s: not a PNG: %v", p, err)
				}
				b := img.Bounds()
				if b.Dx() < 600 || b.Dy() < 400 {
					t.Errorf("%s: %dx%d pixels, want at least 600x400", p, b.Dx(), b.Dy())
				}
				colours := map[color.RGBA]bool{}
				for y := b.Min.Y; y < b.Max.Y; y += 4 {
					for x := b.Min.X; x < b.Max.X; x += 4 {
						colours[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)] = true
					}
				}
				if len(colours) < 10 {
					t.Errorf("%s: only %d distinct colours: the image is (nearly) blank", p, len(colours))
				}
			}
		})
	}
}

func TestPlotBadInput(t *testing.T) {
	good := writePlotReport(t)
	tmp := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(tmp, "nope.json")
	malformed := write("malformed.json", "{\"sweep\": \"s\",\n \"trials\": [}")
	empty := write("empty.json", `{"sweep":"s","metric":"macro_f1","trials":[]}`)
	badRank := write("bad-rank.json", `{"sweep":"s","metric":"macro_f1","trials":[{"name":"t0","rank":0,"alpha":8}]}`)
	aFile := write("not-a-dir", "x")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing report", []string{"--report", missing, "--out", tmp}, []string{"flag --report", missing, "no such file"}},
		{"malformed report", []string{"--report", malformed, "--out", tmp}, []string{"flag --report", malformed, "line 2 column", "malformed JSON"}},
		{"no trials", []string{"--report", empty, "--out", tmp}, []string{"flag --report", empty, "no trials"}},
		{"bad field", []string{"--report", badRank, "--out", tmp}, []string{"flag --report", badRank, "trials[0] (t0).rank"}},
		{"bad format", []string{"--report", good, "--out", tmp, "--format", "gif"}, []string{"flag --format", `"gif"`, "png, svg"}},
		{"out is a file", []string{"--report", good, "--out", aFile}, []string{"flag --out", "not-a-dir"}},
		{"no --report", []string{"--out", tmp}, []string{"report"}},
		{"no --out", []string{"--report", good}, []string{"out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPlot(t, append([]string{"plot"}, tc.args...)...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 4 {
		t.Errorf("%d entries in %s after failed runs, want the 4 inputs only", len(entries), tmp)
	}
}
