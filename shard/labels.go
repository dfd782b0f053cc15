package shard

import (
	"strconv"
	"strings"
	"unicode"
)

// Label is one of the seven classes, in the canonical order below; the order
// fixes the classifier's output index and must never change.
type Label uint8

// The canonical classes of Kaggle's "Sentiment Analysis for Mental Health".
const (
	Normal Label = iota
	Depression
	Suicidal
	Anxiety
	Bipolar
	Stress
	PersonalityDisorder
	// NumLabels is the number of classes.
	NumLabels = 7
)

var labelNames = [NumLabels]string{
	"Normal", "Depression", "Suicidal", "Anxiety", "Bipolar", "Stress", "Personality disorder",
}

// String returns the canonical class name, as the Kaggle file spells it.
func (l Label) String() string {
	if int(l) < len(labelNames) {
		return labelNames[l]
	}
	return "Label(" + strconv.Itoa(int(l)) + ")"
}

// LabelNames returns the canonical class names in index order.
func LabelNames() []string { return append([]string(nil), labelNames[:]...) }

// labelAliases maps the folded spelling of accepted alternative names to their
// class. Folding (see foldLabel) already makes matching case-insensitive and
// treats '-', '_' and runs of spaces alike, so "Personality-disorder",
// "personality_disorder" and "PERSONALITY  DISORDER" all match without an
// entry here. Aliases are deliberately few: a guess that maps a label to the
// wrong class would silently poison training.
var labelAliases = map[string]Label{
	"personality disorders": PersonalityDisorder,
	"depressed":             Depression,
	"suicide":               Suicidal,
	"anxious":               Anxiety,
	"bipolar disorder":      Bipolar,
	"stressed":              Stress,
}

var labelByFolded = func() map[string]Label {
	m := make(map[string]Label, NumLabels+len(labelAliases))
	for i, n := range labelNames {
		m[foldLabel(n)] = Label(i)
	}
	for k, v := range labelAliases {
		m[k] = v
	}
	return m
}()

// ParseLabel matches s to a class after trimming, case folding and treating
// '-', '_' and whitespace runs as one space. ok is false for anything else.
func ParseLabel(s string) (l Label, ok bool) {
	l, ok = labelByFolded[foldLabel(s)]
	return l, ok
}

func foldLabel(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.TrimSpace(s) {
		if r == '-' || r == '_' || unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
