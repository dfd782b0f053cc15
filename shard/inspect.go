package shard

import (
	"slices"
	"unicode/utf8"
)

// Percentiles are the p50/p90/p95/p99/max of a length distribution.
type Percentiles struct {
	P50 int `json:"p50"`
	P90 int `json:"p90"`
	P95 int `json:"p95"`
	P99 int `json:"p99"`
	Max int `json:"max"`
}

func percentiles(v []int) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(p float64) int { // nearest rank
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P95: at(0.95), P99: at(0.99), Max: s[len(s)-1]}
}

// PartCounts are one split part's class counts.
type PartCounts struct {
	Name   string         `json:"name"`
	Rows   int            `json:"rows"`
	Counts map[string]int `json:"counts"`
}

// Summary describes a dataset the way `loraft data inspect` reports it.
type Summary struct {
	File    string `json:"file"`
	SHA256  string `json:"sha256"`
	SplitID string `json:"split_id"`
	Seed    uint64 `json:"seed"`
	Ratios  string `json:"ratios"`
	// RowsRead counts data records; Kept the rows used; Dropped is by reason.
	RowsRead     int            `json:"rows_read"`
	Kept         int            `json:"kept"`
	Dropped      map[Reason]int `json:"dropped"`
	Duplicates   int            `json:"duplicates"`
	RepairedUTF8 int            `json:"repaired_utf8"`
	Parts        []PartCounts   `json:"splits"`
	// Chars are statement lengths in Unicode characters.
	Chars Percentiles `json:"chars"`
	// Tokens are lengths in WordPiece tokens including [CLS] and [SEP], before truncation.
	Tokens         Percentiles `json:"tokens"`
	MaxLen         int         `json:"max_len"`
	Truncated      int         `json:"truncated"`
	TruncatedShare float64     `json:"truncated_share"`
}

// Summarize reports on a dataset, its split and its tokens.
func Summarize(ds *Dataset, sp *Split, tok *Tokens) Summary {
	s := Summary{
		File: ds.Name, SHA256: ds.SHA256, SplitID: sp.Spec.ID(), Seed: sp.Spec.Seed, Ratios: sp.Spec.Ratios.String(),
		RowsRead: ds.Report.Records, Kept: ds.Report.Kept, Dropped: ds.Report.Dropped,
		Duplicates:   ds.Report.Dropped[ReasonDuplicate] + ds.Report.Dropped[ReasonDuplicateLabel],
		RepairedUTF8: ds.Report.RepairedUTF8,
		MaxLen:       tok.MaxLen,
		Truncated:    tok.Truncated(),
	}
	for _, p := range sp.Parts() {
		pc := PartCounts{Name: p.Name, Rows: len(p.Rows), Counts: map[string]int{}}
		for _, n := range LabelNames() {
			pc.Counts[n] = 0
		}
		for _, i := range p.Rows {
			pc.Counts[ds.Rows[i].Label.String()]++
		}
		s.Parts = append(s.Parts, pc)
	}
	chars := make([]int, len(ds.Rows))
	toks := make([]int, len(ds.Rows))
	for i, r := range ds.Rows {
		chars[i] = utf8.RuneCountInString(r.Statement)
		toks[i] = int(tok.FullLen[i])
	}
	s.Chars, s.Tokens = percentiles(chars), percentiles(toks)
	if len(ds.Rows) > 0 {
		s.TruncatedShare = float64(s.Truncated) / float64(len(ds.Rows))
	}
	return s
}
