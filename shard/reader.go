package shard

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Sentinel errors of the reader; a *RowError wraps one of them.
var (
	// ErrMissingColumn: the header lacks the statement or status column.
	ErrMissingColumn = errors.New("missing column")
	// ErrUnknownLabel: a status value is not one of the seven classes or an alias.
	ErrUnknownLabel = errors.New("unknown label")
	// ErrMalformed: a record is not valid CSV or has too few fields.
	ErrMalformed = errors.New("malformed record")
	// ErrEmptyFile: the file has no header.
	ErrEmptyFile = errors.New("empty file")
)

// missingColumns is the error for a header without the statement or the
// status column (nil when it has both): it names every missing column, in
// the order statement, status, so the same file always gives the same error.
func missingColumns(file string, header []string, stmtCol, statusCol int) error {
	var missing []string
	for _, c := range []struct {
		name string
		idx  int
	}{{"statement", stmtCol}, {"status", statusCol}} {
		if c.idx < 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	want := fmt.Sprintf("a %q column", missing[0])
	if len(missing) == 2 {
		want = fmt.Sprintf("%q and %q columns", missing[0], missing[1])
	}
	return &RowError{File: file, Line: 1, Field: strings.Join(missing, ","), Err: ErrMissingColumn,
		Detail: fmt.Sprintf("header is %q, want %s", strings.Join(header, ","), want)}
}

// RowError names the file, the line and the record of a bad row, the way
// encoding/csv.ParseError does. It unwraps to one of the sentinels above.
type RowError struct {
	File   string
	Line   int // 1-based line where the record starts
	Record int // 1-based data record number (the header is record 0)
	Field  string
	Err    error
	Detail string
}

func (e *RowError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Record > 0 {
		fmt.Fprintf(&b, " (record %d)", e.Record)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " field %q", e.Field)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

func (e *RowError) Unwrap() error { return e.Err }

// Row is one kept statement.
type Row struct {
	// Line is the 1-based line where the record starts in the source file.
	Line int
	// Index is the record's first column (the Kaggle row index), as written.
	Index     string
	Statement string
	Label     Label
}

// Reason says why a row was dropped or changed.
type Reason string

// Row events the reader reports.
const (
	ReasonEmpty            Reason = "empty_statement"
	ReasonDuplicate        Reason = "duplicate_statement"
	ReasonDuplicateLabel   Reason = "duplicate_statement_other_label"
	ReasonUnknownLabel     Reason = "unknown_label"
	ReasonMalformed        Reason = "malformed_record"
	ReasonRepairedUTF8     Reason = "repaired_utf8"
	ReasonNoStatementField Reason = "missing_field"
)

// Event is one row-level decision of the reader's policy.
type Event struct {
	Line   int    `json:"line"`
	Record int    `json:"record"`
	Reason Reason `json:"reason"`
	// Detail is a short human explanation (e.g. the bad label, the first line of a duplicate).
	Detail string `json:"detail,omitempty"`
}

// Report counts what the reader did with each record.
type Report struct {
	// Records is the number of data records read (the header excluded).
	Records int `json:"records"`
	// Kept is the number of rows in the dataset.
	Kept int `json:"kept"`
	// Dropped counts dropped records by reason.
	Dropped map[Reason]int `json:"dropped"`
	// RepairedUTF8 counts kept or dropped records whose invalid UTF-8 was
	// replaced with U+FFFD.
	RepairedUTF8 int `json:"repaired_utf8"`
	// Events lists every drop and repair, row by row, in file order.
	Events []Event `json:"events,omitempty"`
}

// Options tune the reader's policy. The zero value is the strict default.
type Options struct {
	// DropBad drops records with an unknown label or malformed CSV (and
	// reports them) instead of failing on the first one.
	DropBad bool
}

// Dataset is a parsed, de-duplicated file.
type Dataset struct {
	// Name is the file name errors and reports use.
	Name string
	// SHA256 is the hex sha256 of the file's bytes: with the split seed and
	// ratios it identifies a split on every machine.
	SHA256 string
	Rows   []Row
	Report Report
}

// ClassCounts counts the dataset's rows per label.
func (d *Dataset) ClassCounts() [NumLabels]int {
	var c [NumLabels]int
	for _, r := range d.Rows {
		c[r.Label]++
	}
	return c
}

// ReadFile reads a Kaggle-layout CSV file; see Read.
func ReadFile(path string, opts Options) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	return Read(f, path, opts)
}

// Read parses the Kaggle "Combined Data.csv" layout from r: an optional UTF-8
// byte-order mark; CRLF or LF line ends; a header naming the columns
// "statement" and "status" (any other columns, such as the unnamed or
// "Unnamed: 0" index, are ignored, except that the first column is kept as
// the row index); RFC 4180 quoting with commas, quotes and newlines inside
// statements of any length.
//
// Policy, every decision recorded in the Report: empty or whitespace-only
// statements are dropped; invalid UTF-8 is replaced with U+FFFD; exact
// duplicate statements (compared after trimming surrounding whitespace) are
// dropped after their first occurrence, before any split, so no statement can
// be in two splits; an unknown label or malformed record is an error naming
// the line, unless opts.DropBad.
func Read(r io.Reader, name string, opts Options) (*Dataset, error) {
	h := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(r, h), 1<<16)
	if bom, err := br.Peek(3); err == nil && bytes.Equal(bom, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // checked here, to name the missing field
	cr.ReuseRecord = true

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &RowError{File: name, Err: ErrEmptyFile, Detail: "no header line"}
	}
	if err != nil {
		return nil, parseError(name, 0, err)
	}
	stmtCol, statusCol := -1, -1
	for i, col := range header {
		switch strings.ToLower(strings.TrimSpace(col)) {
		case "statement":
			stmtCol = i
		case "status":
			statusCol = i
		}
	}
	if err := missingColumns(name, header, stmtCol, statusCol); err != nil {
		return nil, err
	}
	need := max(stmtCol, statusCol) + 1

	ds := &Dataset{Name: name, Report: Report{Dropped: map[Reason]int{}}}
	rep := &ds.Report
	drop := func(line, rec int, reason Reason, detail string) {
		rep.Dropped[reason]++
		rep.Events = append(rep.Events, Event{Line: line, Record: rec, Reason: reason, Detail: detail})
	}
	firstLine := map[string]int{} // trimmed statement → line of its kept occurrence
	firstLabel := map[string]Label{}
	for rec := 1; ; rec++ {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			perr := parseError(name, rec, err)
			if !opts.DropBad {
				return nil, perr
			}
			rep.Records++
			var pe *RowError
			errors.As(perr, &pe)
			drop(pe.Line, rec, ReasonMalformed, pe.Detail)
			continue
		}
		rep.Records++
		line, _ := cr.FieldPos(0) // only valid after a successful Read
		if len(fields) < need {
			e := &RowError{File: name, Line: line, Record: rec, Err: ErrMalformed,
				Detail: fmt.Sprintf("%d fields, want at least %d (statement in column %d, status in column %d)", len(fields), need, stmtCol+1, statusCol+1)}
			if !opts.DropBad {
				return nil, e
			}
			drop(line, rec, ReasonMalformed, e.Detail)
			continue
		}
		stmt, status := fields[stmtCol], fields[statusCol]
		index := ""
		if stmtCol != 0 && statusCol != 0 {
			index = strings.TrimSpace(fields[0])
		}
		repaired := false
		if !utf8.ValidString(stmt) {
			stmt, repaired = strings.ToValidUTF8(stmt, "\uFFFD"), true
		}
		if !utf8.ValidString(status) {
			status, repaired = strings.ToValidUTF8(status, "\uFFFD"), true
		}
		if repaired {
			rep.RepairedUTF8++
			rep.Events = append(rep.Events, Event{Line: line, Record: rec, Reason: ReasonRepairedUTF8})
		}
		label, ok := ParseLabel(status)
		if !ok {
			e := &RowError{File: name, Line: line, Record: rec, Field: "status", Err: ErrUnknownLabel,
				Detail: fmt.Sprintf("%q is not one of %s", status, strings.Join(LabelNames(), ", "))}
			if !opts.DropBad {
				return nil, e
			}
			drop(line, rec, ReasonUnknownLabel, fmt.Sprintf("%q", status))
			continue
		}
		key := strings.TrimSpace(stmt)
		if key == "" {
			drop(line, rec, ReasonEmpty, "")
			continue
		}
		if first, dup := firstLine[key]; dup {
			reason := ReasonDuplicate
			if firstLabel[key] != label {
				reason = ReasonDuplicateLabel
			}
			drop(line, rec, reason, fmt.Sprintf("same statement as line %d (%s), labelled %s here", first, firstLabel[key], label))
			continue
		}
		firstLine[key], firstLabel[key] = line, label
		ds.Rows = append(ds.Rows, Row{Line: line, Index: index, Statement: stmt, Label: label})
	}
	// Drain what the CSV reader did not consume so the hash covers every byte.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	ds.Report.Kept = len(ds.Rows)
	ds.SHA256 = hexSum(h)
	return ds, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// parseError turns an encoding/csv error into a RowError naming the line.
func parseError(name string, rec int, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		var detail string
		if errors.Is(pe.Err, csv.ErrQuote) && pe.StartLine != pe.Line {
			detail = fmt.Sprintf("%v: quoted field opened on line %d is never closed (reached line %d)", pe.Err, pe.StartLine, pe.Line)
		} else {
			detail = fmt.Sprintf("%v at line %d column %d", pe.Err, pe.Line, pe.Column)
		}
		return &RowError{File: name, Line: pe.StartLine, Record: rec, Err: ErrMalformed, Detail: detail}
	}
	return fmt.Errorf("reading %s: %w", name, err)
}
