package serve

import (
	"fmt"
	"slices"
	"strings"
)

// Review rule names, as answers spell them.
const (
	RuleLowConfidence     = "low_confidence"
	RuleReviewLabel       = "review_label"
	RuleOutOfDistribution = "out_of_distribution"
)

// ReviewReason is one rule that sent a statement to a person.
type ReviewReason struct {
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// Review decides which statements a person must see. The zero value
// reviews nothing; DefaultReview is what `loraft serve` starts from.
type Review struct {
	// Below sends predictions with a confidence under it to review. A
	// negative value means the adapter's own threshold (Model.ReviewBelow,
	// chosen on validation).
	Below float64
	// Labels are always reviewed.
	Labels []string
	// LongFactor marks a text unlike the training data when its token count
	// exceeds LongFactor × the model's max length.
	LongFactor int
	// UNKShare marks a text unlike the training data when at least this
	// share of its word pieces are [UNK].
	UNKShare float64
}

// DefaultReview reviews under the adapter's threshold, every Suicidal
// label, and texts 4× longer than the max length or half [UNK].
func DefaultReview() Review {
	return Review{Below: -1, Labels: []string{"Suicidal"}, LongFactor: 4, UNKShare: 0.5}
}

// threshold is the confidence threshold for m.
func (r Review) threshold(m *Model) float64 {
	if r.Below >= 0 {
		return r.Below
	}
	if m.ReviewBelow > 0 {
		return m.ReviewBelow
	}
	return FallbackReviewBelow
}

// textSignals are what the review needs to know about a statement's tokens.
type textSignals struct {
	empty   bool
	fullLen int // word pieces before truncation, [CLS] and [SEP] included
	pieces  int // word pieces kept, specials excluded
	unk     int // [UNK] among them
}

// reasons lists the rules that fire for one prediction.
func (r Review) reasons(m *Model, label string, confidence float64, s textSignals) []ReviewReason {
	var out []ReviewReason
	if th := r.threshold(m); confidence < th {
		out = append(out, ReviewReason{RuleLowConfidence, fmt.Sprintf("confidence %.3f below %.3f", confidence, th)})
	}
	if slices.ContainsFunc(r.Labels, func(l string) bool { return strings.EqualFold(l, label) }) {
		out = append(out, ReviewReason{RuleReviewLabel, fmt.Sprintf("label %s is always reviewed", label)})
	}
	switch {
	case s.empty:
		out = append(out, ReviewReason{RuleOutOfDistribution, "empty text"})
	case r.LongFactor > 0 && s.fullLen > r.LongFactor*m.MaxLen:
		out = append(out, ReviewReason{RuleOutOfDistribution, fmt.Sprintf("%d tokens, more than %d× the max length %d", s.fullLen, r.LongFactor, m.MaxLen)})
	case r.UNKShare > 0 && s.pieces > 0 && float64(s.unk) >= r.UNKShare*float64(s.pieces):
		out = append(out, ReviewReason{RuleOutOfDistribution, fmt.Sprintf("%d of %d word pieces unknown", s.unk, s.pieces)})
	}
	return out
}
