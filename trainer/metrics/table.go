package metrics

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// maxHeaderLen is the longest class name used whole as a confusion-matrix
// column header; longer names are abbreviated and listed in a legend.
const maxHeaderLen = 10

// Table returns the per-class scores as aligned plain text, in the manner of
// scikit-learn's classification_report: one row per class (precision, recall,
// F1, support), the macro and support-weighted averages, then accuracy,
// macro and weighted F1, ECE, NLL, mean confidence and temperature.
func (r Report) Table() string {
	var sb strings.Builder
	// Right-aligned like classification_report; every line ends in a tab so
	// the last column is a cell too and is aligned.
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "class\tprecision\trecall\tf1\tsupport\t\n")
	for i, m := range r.PerClass {
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.4f\t%d\t\n", r.className(i), m.Precision, m.Recall, m.F1, m.Support)
	}
	if len(r.PerClass) > 0 {
		macro, weighted, total := r.averages()
		fmt.Fprint(tw, "\t\t\t\t\t\n")
		fmt.Fprintf(tw, "macro avg\t%.4f\t%.4f\t%.4f\t%d\t\n", macro.Precision, macro.Recall, r.MacroF1, total)
		fmt.Fprintf(tw, "weighted avg\t%.4f\t%.4f\t%.4f\t%d\t\n", weighted.Precision, weighted.Recall, r.WeightedF1, total)
	}
	tw.Flush()

	sb.WriteByte('\n')
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "accuracy\t%.4f  (n=%d)\n", r.Accuracy, r.N)
	fmt.Fprintf(tw, "macro F1\t%.4f\n", r.MacroF1)
	fmt.Fprintf(tw, "weighted F1\t%.4f\n", r.WeightedF1)
	fmt.Fprintf(tw, "ECE (%d bins)\t%.4f\n", r.ECEBins, r.ECE)
	fmt.Fprintf(tw, "NLL\t%.4f\n", r.NLL)
	fmt.Fprintf(tw, "mean confidence\t%.4f\n", r.MeanConfidence)
	fmt.Fprintf(tw, "temperature\t%.4f\n", r.Temperature)
	tw.Flush()
	return trimLines(sb.String())
}

// ConfusionTable returns the confusion matrix as aligned plain text: one row
// per true class (full name) with its support, one column per predicted
// class. Column headers longer than 10 characters are abbreviated — a
// multi-word name to its initials ("Personality disorder" → "PD"), a single
// word to its first 9 letters and a dot — and a legend below the table
// spells them out.
func (r Report) ConfusionTable() string {
	k := len(r.PerClass)
	headers := r.headers()
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, `true \ pred`+"\t")
	for _, h := range headers {
		fmt.Fprint(tw, h+"\t")
	}
	fmt.Fprint(tw, "support\t\n")
	for t := range k {
		fmt.Fprint(tw, r.className(t)+"\t")
		for p := range k {
			fmt.Fprintf(tw, "%d\t", r.cell(t, p))
		}
		fmt.Fprintf(tw, "%d\t\n", r.PerClass[t].Support)
	}
	tw.Flush()
	for _, l := range r.legend(headers) {
		sb.WriteString(l + "\n")
	}
	return trimLines(sb.String())
}

// MarkdownTable returns the report as Markdown for a model card: a summary
// list (accuracy, macro and weighted F1, ECE, NLL, mean confidence,
// temperature), a per-class table with macro and weighted averages, and the
// confusion matrix (rows: true class; columns: predicted class, headers
// abbreviated as in ConfusionTable, with a legend).
func (r Report) MarkdownTable() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "- Accuracy: %.4f (n = %d)\n", r.Accuracy, r.N)
	fmt.Fprintf(&sb, "- Macro F1: %.4f\n", r.MacroF1)
	fmt.Fprintf(&sb, "- Weighted F1: %.4f\n", r.WeightedF1)
	fmt.Fprintf(&sb, "- Expected calibration error: %.4f (%d equal-width bins)\n", r.ECE, r.ECEBins)
	fmt.Fprintf(&sb, "- Negative log-likelihood: %.4f\n", r.NLL)
	fmt.Fprintf(&sb, "- Mean confidence: %.4f\n", r.MeanConfidence)
	fmt.Fprintf(&sb, "- Temperature: %.4f\n", r.Temperature)

	sb.WriteString("\n| Class | Precision | Recall | F1 | Support |\n")
	sb.WriteString("| :--- | ---: | ---: | ---: | ---: |\n")
	for i, m := range r.PerClass {
		fmt.Fprintf(&sb, "| %s | %.4f | %.4f | %.4f | %d |\n", mdEscape(r.className(i)), m.Precision, m.Recall, m.F1, m.Support)
	}
	if len(r.PerClass) > 0 {
		macro, weighted, total := r.averages()
		fmt.Fprintf(&sb, "| *Macro average* | %.4f | %.4f | %.4f | %d |\n", macro.Precision, macro.Recall, r.MacroF1, total)
		fmt.Fprintf(&sb, "| *Weighted average* | %.4f | %.4f | %.4f | %d |\n", weighted.Precision, weighted.Recall, r.WeightedF1, total)
	}

	k := len(r.PerClass)
	headers := r.headers()
	sb.WriteString("\nConfusion matrix (rows: true class, columns: predicted class):\n\n")
	sb.WriteString(`| True \ Predicted |`)
	for _, h := range headers {
		sb.WriteString(" " + mdEscape(h) + " |")
	}
	sb.WriteString("\n| :--- |" + strings.Repeat(" ---: |", k) + "\n")
	for t := range k {
		sb.WriteString("| " + mdEscape(r.className(t)) + " |")
		for p := range k {
			fmt.Fprintf(&sb, " %d |", r.cell(t, p))
		}
		sb.WriteByte('\n')
	}
	if l := r.legend(headers); len(l) > 0 {
		sb.WriteString("\n" + mdEscape(strings.Join(l, "; ")) + ".\n")
	}
	return sb.String()
}

// averages returns the macro (unweighted) and support-weighted means of
// precision and recall, and the total support.
func (r Report) averages() (macro, weighted ClassMetrics, total int) {
	for _, m := range r.PerClass {
		macro.Precision += m.Precision
		macro.Recall += m.Recall
		weighted.Precision += m.Precision * float64(m.Support)
		weighted.Recall += m.Recall * float64(m.Support)
		total += m.Support
	}
	if k := float64(len(r.PerClass)); k > 0 {
		macro.Precision /= k
		macro.Recall /= k
	}
	if total > 0 {
		weighted.Precision /= float64(total)
		weighted.Recall /= float64(total)
	}
	return macro, weighted, total
}

// cell returns Confusion[t][p], or 0 where a hand-built or decoded Report's
// matrix is smaller than PerClass.
func (r Report) cell(t, p int) int {
	if t < len(r.Confusion) && p < len(r.Confusion[t]) {
		return r.Confusion[t][p]
	}
	return 0
}

// className returns class i's name made safe for one table cell: tabs and
// newlines become spaces, and an empty name becomes "class i".
func (r Report) className(i int) string {
	name := strings.Join(strings.Fields(r.PerClass[i].Name), " ")
	if name == "" {
		return "class " + strconv.Itoa(i)
	}
	return name
}

// headers returns a short, distinct column header per class.
func (r Report) headers() []string {
	out := make([]string, len(r.PerClass))
	seen := make(map[string]bool, len(out))
	for i := range r.PerClass {
		h := abbreviate(r.className(i), maxHeaderLen)
		for n := 2; seen[h]; n++ {
			h = abbreviate(r.className(i), maxHeaderLen) + strconv.Itoa(n)
		}
		seen[h] = true
		out[i] = h
	}
	return out
}

// legend returns "ABBR = Full name" for each header that differs from its
// class name.
func (r Report) legend(headers []string) []string {
	var out []string
	for i, h := range headers {
		if name := r.className(i); h != name {
			out = append(out, h+" = "+name)
		}
	}
	return out
}

// abbreviate shortens a name longer than maxLen runes: a name of several
// words to the upper-cased initials of its words, a single word to its first
// maxLen-1 runes and a dot.
func abbreviate(name string, maxLen int) string {
	if utf8.RuneCountInString(name) <= maxLen {
		return name
	}
	if words := strings.Fields(name); len(words) > 1 {
		var sb strings.Builder
		for _, w := range words {
			first, _ := utf8.DecodeRuneInString(w)
			sb.WriteRune(unicode.ToUpper(first))
		}
		if s := sb.String(); utf8.RuneCountInString(s) <= maxLen {
			return s
		}
	}
	return string([]rune(name)[:maxLen-1]) + "."
}

// trimLines removes trailing spaces, which tabwriter leaves on a line of
// empty cells.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// mdEscape escapes the characters that would break a Markdown table cell.
func mdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "|", `\|`).Replace(s)
}
