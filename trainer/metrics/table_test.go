package metrics

import (
	"strings"
	"testing"
)

// goldenReport is the three-class example of TestEvaluateCounts with longer
// names: every sample has confidence 0.6, 14 of 20 are right.
func goldenReport(t *testing.T) Report {
	t.Helper()
	labels, probs := fromConfusion([][]int{{5, 1, 0}, {2, 3, 1}, {0, 2, 6}})
	r, err := Evaluate(labels, probs, []string{"Anxiety", "Personality disorder", "Hypochondriasis"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTable(t *testing.T) {
	// macro avg precision = (5/7 + 3/6 + 6/7)/3 ≈ 0.6905, recall = (5/6 + 3/6 + 6/8)/3 ≈ 0.6944
	// weighted avg precision = (6·5/7 + 6·3/6 + 8·6/7)/20 ≈ 0.7071, recall = accuracy = 0.7
	// ECE: one bin (0.6), |0.7 − 0.6| = 0.1; NLL = (14·−ln 0.6 + 6·−ln 0.2)/20 ≈ 0.8404
	want := `                 class  precision  recall      f1  support
               Anxiety     0.7143  0.8333  0.7692        6
  Personality disorder     0.5000  0.5000  0.5000        6
       Hypochondriasis     0.8571  0.7500  0.8000        8

             macro avg     0.6905  0.6944  0.6897       20
          weighted avg     0.7071  0.7000  0.7008       20

accuracy         0.7000  (n=20)
macro F1         0.6897
weighted F1      0.7008
ECE (10 bins)    0.1000
NLL              0.8404
mean confidence  0.6000
temperature      1.0000
`
	if got := goldenReport(t).Table(); got != want {
		t.Errorf("Table() =\n%s\nwant\n%s", got, want)
	}
}

func TestConfusionTable(t *testing.T) {
	want := `           true \ pred  Anxiety  PD  Hypochond.  support
               Anxiety        5   1           0        6
  Personality disorder        2   3           1        6
       Hypochondriasis        0   2           6        8
PD = Personality disorder
Hypochond. = Hypochondriasis
`
	if got := goldenReport(t).ConfusionTable(); got != want {
		t.Errorf("ConfusionTable() =\n%s\nwant\n%s", got, want)
	}
}

func TestMarkdownTable(t *testing.T) {
	want := `- Accuracy: 0.7000 (n = 20)
- Macro F1: 0.6897
- Weighted F1: 0.7008
- Expected calibration error: 0.1000 (10 equal-width bins)
- Negative log-likelihood: 0.8404
- Mean confidence: 0.6000
- Temperature: 1.0000

| Class | Precision | Recall | F1 | Support |
| :--- | ---: | ---: | ---: | ---: |
| Anxiety | 0.7143 | 0.8333 | 0.7692 | 6 |
| Personality disorder | 0.5000 | 0.5000 | 0.5000 | 6 |
| Hypochondriasis | 0.8571 | 0.7500 | 0.8000 | 8 |
| *Macro average* | 0.6905 | 0.6944 | 0.6897 | 20 |
| *Weighted average* | 0.7071 | 0.7000 | 0.7008 | 20 |

Confusion matrix (rows: true class, columns: predicted class):

| True \ Predicted | Anxiety | PD | Hypochond. |
| :--- | ---: | ---: | ---: |
| Anxiety | 5 | 1 | 0 |
| Personality disorder | 2 | 3 | 1 |
| Hypochondriasis | 0 | 2 | 6 |

PD = Personality disorder; Hypochond. = Hypochondriasis.
`
	if got := goldenReport(t).MarkdownTable(); got != want {
		t.Errorf("MarkdownTable() =\n%s\nwant\n%s", got, want)
	}
}

func TestTablesSevenClasses(t *testing.T) {
	names := []string{"Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "Personality disorder"}
	logits, labels := overconfident(1, 700, len(names), 3, 1)
	r, err := Evaluate(labels, Calibrate(logits, 1), names, DefaultECEBins)
	if err != nil {
		t.Fatal(err)
	}
	// Every line of the aligned blocks is equally wide, with no trailing spaces.
	for name, s := range map[string]string{"Table": r.Table(), "ConfusionTable": r.ConfusionTable()} {
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		width := len(lines[0])
		for i, l := range lines[:len(names)+1] {
			if len(l) != width {
				t.Errorf("%s line %d is %d wide, want %d:\n%s", name, i, len(l), width, s)
			}
		}
		for i, l := range lines {
			if strings.HasSuffix(l, " ") {
				t.Errorf("%s line %d has trailing spaces: %q", name, i, l)
			}
		}
	}
	header := strings.Fields(strings.Split(r.ConfusionTable(), "\n")[0])
	wantHeader := []string{"true", `\`, "pred", "Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "PD", "support"}
	if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
		t.Errorf("confusion header = %q, want %q", header, wantHeader)
	}
	// Markdown: 7 class rows + 2 averages in the first table, 7 in the matrix,
	// every table row with the right number of cells.
	var rows int
	for l := range strings.SplitSeq(r.MarkdownTable(), "\n") {
		if !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| :---") {
			continue
		}
		rows++
		if cells := strings.Count(l, " |"); cells != 5 && cells != len(names)+1 {
			t.Errorf("markdown row %q has %d cells", l, cells)
		}
	}
	if want := 1 + len(names) + 2 + 1 + len(names); rows != want {
		t.Errorf("markdown has %d table rows, want %d", rows, want)
	}
}

func TestTablesOddNames(t *testing.T) {
	// An empty name, a name with a pipe and a tab, and two names with the
	// same initials.
	names := []string{"", "a|b\tc", "Panic disorder", "Personality disorder"}
	r, err := Evaluate([]int{0, 1, 2, 3}, [][]float64{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}, names, 5)
	if err != nil {
		t.Fatal(err)
	}
	ct := r.ConfusionTable()
	for _, s := range []string{"class 0", "a|b c", "PD = Panic disorder", "PD2 = Personality disorder"} {
		if !strings.Contains(ct, s) {
			t.Errorf("ConfusionTable lacks %q:\n%s", s, ct)
		}
	}
	md := r.MarkdownTable()
	if !strings.Contains(md, `| a\|b c | 1.0000 |`) {
		t.Errorf("MarkdownTable does not escape the pipe:\n%s", md)
	}
	if strings.Contains(r.Table(), "\t") {
		t.Errorf("Table keeps a tab from a class name:\n%s", r.Table())
	}
}

func TestTablesZeroReport(t *testing.T) {
	// A zero Report (or one decoded with a short matrix) renders without panicking.
	var r Report
	_ = r.Table()
	_ = r.ConfusionTable()
	_ = r.MarkdownTable()
	r.PerClass = []ClassMetrics{{Name: "a"}, {Name: "b"}}
	r.Confusion = [][]int{{1}}
	if got := r.ConfusionTable(); !strings.Contains(got, "a  1  0") {
		t.Errorf("ConfusionTable with a short matrix:\n%s", got)
	}
}

func TestAbbreviate(t *testing.T) {
	tests := []struct {
		name string
		max  int
		want string
	}{
		{"Normal", 10, "Normal"},
		{"Depression", 10, "Depression"}, // exactly 10: kept
		{"Personality disorder", 10, "PD"},
		{"personality disorder", 10, "PD"},
		{"Hypochondriasis", 10, "Hypochond."},
		{"Schizoaffective", 6, "Schiz."},
		{"Überängstlichkeit", 6, "Überä."},
		{"a b c d e f g h i j k l", 10, "a b c d e."}, // initials would be 12 long
	}
	for _, tt := range tests {
		if got := abbreviate(tt.name, tt.max); got != tt.want {
			t.Errorf("abbreviate(%q, %d) = %q, want %q", tt.name, tt.max, got, tt.want)
		}
	}
}
