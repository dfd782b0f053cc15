package chart

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func ptr(v float64) *float64 { return &v }

// sweep3x3 is a full 3×3 rank×alpha sweep with loss and eval curves; edit,
// if not nil, changes each trial.
func sweep3x3(edit func(t *Trial)) *Report {
	r := &Report{Sweep: "rank-alpha", Metric: "macro_f1"}
	i := 0
	for _, rank := range []int{4, 8, 16} {
		for _, alpha := range []float64{8, 16, 32} {
			m := 0.3 + 0.05*math.Log2(float64(rank)) + 0.03*math.Log2(alpha)
			t := Trial{
				Name: "rank-alpha-t00" + string(rune('0'+i)), Rank: rank, Alpha: alpha,
				State: "SUCCEEDED", Metric: ptr(m), Accuracy: ptr(m + 0.2), WallMS: 123456,
			}
			for s := 1; s <= 100; s++ {
				t.Loss = append(t.Loss, Point{Step: s, Value: 2*math.Exp(-float64(s)/float64(20+rank)) + 0.3})
			}
			for s := 10; s <= 100; s += 10 {
				t.Eval = append(t.Eval, Point{Step: s, Value: m * (1 - math.Exp(-float64(s)/30))})
			}
			if edit != nil {
				edit(&t)
			}
			r.Trials = append(r.Trials, t)
			i++
		}
	}
	return r
}

// decodePNG checks path is a PNG of a plausible size that is not one colour,
// and returns it.
func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: not a PNG: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 600 || b.Dy() < 400 {
		t.Errorf("%s: %dx%d pixels, want at least 600x400", path, b.Dx(), b.Dy())
	}
	colours := map[color.RGBA]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			colours[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)] = true
		}
	}
	if len(colours) < 10 {
		t.Errorf("%s: only %d distinct colours: the image is (nearly) blank", path, len(colours))
	}
	return img
}

// countColour counts the pixels of img that are exactly c.
func countColour(img image.Image, c color.Color) int {
	want := color.RGBAModel.Convert(c).(color.RGBA)
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == want {
				n++
			}
		}
	}
	return n
}

func TestRender(t *testing.T) {
	missingMiddle := sweep3x3(func(t *Trial) {
		if t.Rank == 8 && t.Alpha == 16 {
			t.State, t.Metric, t.Eval = "RUNNING", nil, t.Eval[:2]
		}
	})
	// A hole in the grid: no trial at rank 16, alpha 32.
	hole := sweep3x3(nil)
	hole.Trials = hole.Trials[:8]
	noMetrics := sweep3x3(func(t *Trial) { t.Metric, t.Eval, t.State = nil, nil, "PENDING" })
	noCurves := sweep3x3(func(t *Trial) { t.Loss, t.Eval = nil, nil })
	one := &Report{Sweep: "solo", Metric: "macro_f1", Trials: []Trial{{
		Name: "solo-t000", Rank: 8, Alpha: 16, Metric: ptr(0.5),
		Loss: []Point{{Step: 1, Value: 1.2}}, Eval: []Point{{Step: 1, Value: 0.5}},
	}}}
	unsorted := sweep3x3(func(t *Trial) {
		t.Loss[0], t.Loss[len(t.Loss)-1] = t.Loss[len(t.Loss)-1], t.Loss[0]
	})
	fractional := sweep3x3(func(t *Trial) { t.Alpha /= 4 })

	for _, tc := range []struct {
		name        string
		report      *Report
		wantMissing bool // grey cells in the heat map
	}{
		{"full 3x3", sweep3x3(nil), false},
		{"missing metric", missingMiddle, true},
		{"missing trial", hole, true},
		{"no metric yet", noMetrics, true},
		{"no curve points", noCurves, false},
		{"single trial", one, false},
		{"unsorted steps", unsorted, false},
		{"fractional alpha", fractional, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			hm, cv := filepath.Join(dir, "heatmap.png"), filepath.Join(dir, "curves.png")
			if err := Heatmap(tc.report, hm); err != nil {
				t.Fatalf("Heatmap: %v", err)
			}
			if err := Curves(tc.report, cv); err != nil {
				t.Fatalf("Curves: %v", err)
			}
			img := decodePNG(t, hm)
			decodePNG(t, cv)
			grey := countColour(img, missingColor)
			if tc.wantMissing && grey < 5000 {
				t.Errorf("heat map has %d missing-grey pixels, want a grey cell (>= 5000)", grey)
			}
			if !tc.wantMissing && grey > 500 {
				t.Errorf("heat map has %d missing-grey pixels, want no grey cell", grey)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 2 {
				t.Errorf("%d files in the output directory, want 2 (no temporary files left)", len(entries))
			}
		})
	}
}

func TestRenderSVG(t *testing.T) {
	dir := t.TempDir()
	r := sweep3x3(nil)
	for name, fn := range map[string]func(*Report, string) error{"heatmap.svg": Heatmap, "curves.svg": Curves} {
		p := filepath.Join(dir, name)
		if err := fn(r, p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("<svg")) || !bytes.HasSuffix(bytes.TrimSpace(data), []byte("</svg>")) {
			t.Errorf("%s is not an SVG document", name)
		}
		for _, want := range []string{"rank-alpha: validation macro_f1"} {
			if !bytes.Contains(data, []byte(want)) {
				t.Errorf("%s lacks the text %q", name, want)
			}
		}
	}
	heat, _ := os.ReadFile(filepath.Join(dir, "heatmap.svg"))
	for _, want := range []string{"LoRA alpha", "LoRA rank", "0.490"} { // r=4 α=8: 0.3 + 0.05·2 + 0.03·3
		if !bytes.Contains(heat, []byte(want)) {
			t.Errorf("heatmap.svg lacks the text %q", want)
		}
	}
	curves, _ := os.ReadFile(filepath.Join(dir, "curves.svg"))
	for _, want := range []string{"r=4 α=8", "r=16 α=32", "training loss", "step"} {
		if !bytes.Contains(curves, []byte(want)) {
			t.Errorf("curves.svg lacks the text %q", want)
		}
	}
}

func TestDeterministic(t *testing.T) {
	r := sweep3x3(func(t *Trial) {
		if t.Rank == 4 && t.Alpha == 32 {
			t.Metric = nil
		}
	})
	for _, ext := range Formats {
		for name, fn := range map[string]func(*Report, string) error{"heatmap": Heatmap, "curves": Curves} {
			a, b := filepath.Join(t.TempDir(), name+"."+ext), filepath.Join(t.TempDir(), name+"."+ext)
			if err := fn(r, a); err != nil {
				t.Fatal(err)
			}
			if err := fn(r, b); err != nil {
				t.Fatal(err)
			}
			da, _ := os.ReadFile(a)
			db, _ := os.ReadFile(b)
			if !bytes.Equal(da, db) {
				t.Errorf("%s.%s differs between two renders of the same report", name, ext)
			}
		}
	}
}

func TestRenderErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		report *Report
		file   string
		want   []string
	}{
		{"no trials", &Report{Sweep: "s", Metric: "macro_f1"}, "h.png", []string{"h.png", `"trials"`, "no trials"}},
		{"nil report", nil, "h.png", []string{"h.png", "no report"}},
		{"bad extension", sweep3x3(nil), "h.jpg", []string{"h.jpg", `"jpg"`, ".png", ".svg"}},
		{"no extension", sweep3x3(nil), "heatmap", []string{"heatmap", "unsupported output format"}},
		{"missing directory", sweep3x3(nil), "nope/h.png", []string{"nope/h.png"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			for name, fn := range map[string]func(*Report, string) error{"Heatmap": Heatmap, "Curves": Curves} {
				err := fn(tc.report, path)
				if err == nil {
					t.Fatalf("%s: no error", name)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not mention %q", name, err, w)
					}
				}
			}
			if _, err := os.Stat(path); err == nil {
				t.Errorf("%s was written despite the error", path)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(r *Report)
		want string // "" for valid
	}{
		{"valid", func(r *Report) {}, ""},
		{"null metric is fine", func(r *Report) { r.Trials[3].Metric = nil }, ""},
		{"no sweep name", func(r *Report) { r.Sweep = " " }, `"sweep"`},
		{"no metric name", func(r *Report) { r.Metric = "" }, `"metric"`},
		{"no trials", func(r *Report) { r.Trials = nil }, "no trials"},
		{"no trial name", func(r *Report) { r.Trials[2].Name = "" }, "trials[2].name"},
		{"duplicate name", func(r *Report) { r.Trials[2].Name = r.Trials[0].Name }, "trials[2] (rank-alpha-t000).name: duplicates trials[0]"},
		{"zero rank", func(r *Report) { r.Trials[1].Rank = 0 }, "trials[1] (rank-alpha-t001).rank: must be > 0, got 0"},
		{"negative alpha", func(r *Report) { r.Trials[1].Alpha = -8 }, "trials[1] (rank-alpha-t001).alpha"},
		{"duplicate cell", func(r *Report) { r.Trials[1].Alpha = 8 }, "rank 4 alpha 8 is also trials[0] (rank-alpha-t000)"},
		{"NaN metric", func(r *Report) { r.Trials[4].Metric = ptr(math.NaN()) }, "trials[4] (rank-alpha-t004).metric"},
		{"Inf accuracy", func(r *Report) { r.Trials[4].Accuracy = ptr(math.Inf(1)) }, ".accuracy"},
		{"negative wall", func(r *Report) { r.Trials[5].WallMS = -1 }, ".wall_ms"},
		{"negative step", func(r *Report) { r.Trials[6].Loss[3].Step = -1 }, "trials[6] (rank-alpha-t006).loss[3].step"},
		{"NaN eval", func(r *Report) { r.Trials[7].Eval[2].Value = math.NaN() }, ".eval[2].value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sweep3x3(nil)
			tc.edit(r)
			err := r.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want one mentioning %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestReadReport(t *testing.T) {
	const valid = `{"sweep":"rank-alpha","metric":"macro_f1","future_field":1,
 "trials":[{"name":"rank-alpha-t000","rank":4,"alpha":8,"state":"SUCCEEDED",
   "metric":0.31,"accuracy":0.52,"wall_ms":123456,
   "loss":[{"step":1,"value":1.9},{"step":2,"value":1.7}],
   "eval":[{"step":10,"value":0.21}]},
  {"name":"rank-alpha-t001","rank":8,"alpha":0.5,"state":"RUNNING","metric":null}]}`
	for _, tc := range []struct {
		name    string
		content string // "" for a file that does not exist
		want    []string
	}{
		{"valid", valid, nil},
		{"missing file", "", []string{"report.json", "no such file"}},
		{"empty file", " ", []string{"report.json", "line 1", "malformed JSON"}},
		{"truncated", `{"sweep":"s","metric":"m","trials":[{"name":`, []string{"report.json", "malformed JSON"}},
		{"syntax error", "{\"sweep\":\"s\",\n \"metric\": macro_f1}", []string{"report.json", "line 2 column", "malformed JSON"}},
		{"wrong type", `{"sweep":"s","metric":"m","trials":[{"name":"a","rank":"four","alpha":8}]}`,
			[]string{"report.json", "line 1 column", "field trials.rank", "string", "int"}},
		{"not an object", `[1,2]`, []string{"report.json", "must be a JSON object"}},
		{"no trials", `{"sweep":"s","metric":"m","trials":[]}`, []string{"report.json", `"trials"`, "no trials"}},
		{"invalid trial", `{"sweep":"s","metric":"m","trials":[{"name":"a","rank":4}]}`,
			[]string{"report.json", "trials[0] (a).alpha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "report.json")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r, err := ReadReport(path)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ReadReport: %v", err)
				}
				if r.Sweep != "rank-alpha" || r.Metric != "macro_f1" || len(r.Trials) != 2 {
					t.Fatalf("report header = %q %q %d trials", r.Sweep, r.Metric, len(r.Trials))
				}
				t0, t1 := r.Trials[0], r.Trials[1]
				if t0.Rank != 4 || t0.Alpha != 8 || t0.State != "SUCCEEDED" || t0.Metric == nil || *t0.Metric != 0.31 ||
					t0.Accuracy == nil || *t0.Accuracy != 0.52 || t0.WallMS != 123456 ||
					len(t0.Loss) != 2 || t0.Loss[1] != (Point{Step: 2, Value: 1.7}) || len(t0.Eval) != 1 {
					t.Errorf("trial 0 = %+v", t0)
				}
				if t1.Alpha != 0.5 || t1.Metric != nil || t1.Accuracy != nil {
					t.Errorf("trial 1 = %+v: want alpha 0.5 and no metric", t1)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTrialLabel(t *testing.T) {
	for _, tc := range []struct {
		rank  int
		alpha float64
		want  string
	}{{4, 8, "r=4 α=8"}, {16, 32, "r=16 α=32"}, {8, 0.5, "r=8 α=0.5"}} {
		if got := TrialLabel(&Trial{Rank: tc.rank, Alpha: tc.alpha}); got != tc.want {
			t.Errorf("TrialLabel(r=%d, α=%g) = %q, want %q", tc.rank, tc.alpha, got, tc.want)
		}
	}
}
