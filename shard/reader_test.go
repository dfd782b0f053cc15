package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeFixture writes content to a file in a fresh temp dir, as a user's file would be.
func writeFixture(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type rowWant struct {
	line  int
	stmt  string
	label Label
}

func rowsOf(ds *Dataset) []rowWant {
	var out []rowWant
	for _, r := range ds.Rows {
		out = append(out, rowWant{r.Line, r.Statement, r.Label})
	}
	return out
}

func TestReadFixtures(t *testing.T) {
	long := strings.Repeat("worry ", 6666) + "done" // 40,000 characters
	tests := []struct {
		name     string
		content  string
		opts     Options
		rows     []rowWant
		dropped  map[Reason]int
		repaired int
		wantErr  error  // sentinel the error must wrap
		errText  string // substring the error must contain (file, line, field)
	}{
		{
			name:    "bom crlf kaggle header",
			content: "\ufeff,statement,status\r\n0,I feel fine,Normal\r\n1,\"so tired, always\",Depression\r\n",
			rows:    []rowWant{{2, "I feel fine", Normal}, {3, "so tired, always", Depression}},
			dropped: map[Reason]int{},
		},
		{
			name:    "unnamed header lf extra column",
			content: "Unnamed: 0,statement,status,source\n7,panic attacks,Anxiety,reddit\n",
			rows:    []rowWant{{2, "panic attacks", Anxiety}},
			dropped: map[Reason]int{},
		},
		{
			name:    "embedded newlines and quotes",
			content: ",statement,status\r\n0,\"line one\r\nline \"\"two\"\", with comma\",Stress\r\n1,next,Bipolar\r\n",
			rows:    []rowWant{{2, "line one\nline \"two\", with comma", Stress}, {4, "next", Bipolar}},
			dropped: map[Reason]int{},
		},
		{
			name:    "empty and whitespace statements dropped",
			content: ",statement,status\n0,,Normal\n1,\"   \n\t\",Normal\n2,real,Normal\n",
			rows:    []rowWant{{5, "real", Normal}},
			dropped: map[Reason]int{ReasonEmpty: 2},
		},
		{
			name:    "40000 character statement",
			content: ",statement,status\n0,\"" + long + "\",Suicidal\n",
			rows:    []rowWant{{2, long, Suicidal}},
			dropped: map[Reason]int{},
		},
		{
			name:    "duplicates removed, conflicting label reported",
			content: ",statement,status\n0,same words,Normal\n1, same words ,Normal\n2,same words,Stress\n3,other,Stress\n",
			rows:    []rowWant{{2, "same words", Normal}, {5, "other", Stress}},
			dropped: map[Reason]int{ReasonDuplicate: 1, ReasonDuplicateLabel: 1},
		},
		{
			name:    "label aliases and case",
			content: ",statement,status\n0,a,personality-disorder\n1,b, DEPRESSION \n2,c,Personality_Disorder\n",
			rows:    []rowWant{{2, "a", PersonalityDisorder}, {3, "b", Depression}, {4, "c", PersonalityDisorder}},
			dropped: map[Reason]int{},
		},
		{
			name:     "invalid utf8 repaired",
			content:  ",statement,status\n0,caf\xe9 au lait,Normal\n",
			rows:     []rowWant{{2, "caf\uFFFD au lait", Normal}},
			dropped:  map[Reason]int{},
			repaired: 1,
		},
		{
			name:    "unknown label is an error naming the line",
			content: ",statement,status\n0,fine,Normal\n1,hmm,Happy\n",
			wantErr: ErrUnknownLabel,
			errText: `data.csv:3 (record 2) field "status": unknown label: "Happy"`,
		},
		{
			name:    "unknown label dropped with DropBad",
			content: ",statement,status\n0,fine,Normal\n1,hmm,Happy\n",
			opts:    Options{DropBad: true},
			rows:    []rowWant{{2, "fine", Normal}},
			dropped: map[Reason]int{ReasonUnknownLabel: 1},
		},
		{
			name:    "unbalanced quote",
			content: ",statement,status\n0,fine,Normal\n1,\"never closed,Normal\n2,more,Stress\n",
			wantErr: ErrMalformed,
			errText: "data.csv:3 (record 2): malformed record: extraneous or missing \" in quoted-field: quoted field opened on line 3 is never closed",
		},
		{
			name:    "bare quote dropped with DropBad",
			content: ",statement,status\n0,a \"bad\" quote,Normal\n1,fine,Stress\n",
			opts:    Options{DropBad: true},
			rows:    []rowWant{{3, "fine", Stress}},
			dropped: map[Reason]int{ReasonMalformed: 1},
		},
		{
			name:    "missing column",
			content: ",statement,label\n0,a,Normal\n",
			wantErr: ErrMissingColumn,
			errText: `data.csv:1 field "status": missing column`,
		},
		{
			name:    "short record",
			content: ",statement,status\n0,only two\n",
			wantErr: ErrMalformed,
			errText: "data.csv:2 (record 1): malformed record: 2 fields, want at least 3",
		},
		{
			name:    "empty file",
			content: "",
			wantErr: ErrEmptyFile,
			errText: "data.csv: empty file",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFixture(t, "data.csv", tc.content)
			ds, err := ReadFile(path, tc.opts)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %q, want it to contain %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			if got := rowsOf(ds); !reflect.DeepEqual(got, tc.rows) {
				t.Fatalf("rows = %+v, want %+v", got, tc.rows)
			}
			if !reflect.DeepEqual(ds.Report.Dropped, tc.dropped) {
				t.Fatalf("dropped = %v, want %v", ds.Report.Dropped, tc.dropped)
			}
			if ds.Report.RepairedUTF8 != tc.repaired {
				t.Fatalf("repaired = %d, want %d", ds.Report.RepairedUTF8, tc.repaired)
			}
			dropped := 0
			for _, n := range ds.Report.Dropped {
				dropped += n
			}
			if ds.Report.Kept+dropped != ds.Report.Records {
				t.Fatalf("kept %d + dropped %d != records %d", ds.Report.Kept, dropped, ds.Report.Records)
			}
			if len(ds.SHA256) != 64 {
				t.Fatalf("SHA256 = %q", ds.SHA256)
			}
		})
	}
}

// TestReadHashCoversFile checks that two files differing only after the last
// record (here, a trailing blank line) have different dataset hashes: the split
// is identified by the file bytes, not by what the parser kept.
func TestReadHashCoversFile(t *testing.T) {
	a, err := Read(strings.NewReader(",statement,status\n0,a,Normal\n"), "a", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Read(strings.NewReader(",statement,status\n0,a,Normal\n\n"), "b", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 == b.SHA256 {
		t.Fatal("different bytes, same hash")
	}
	want := sha256.Sum256([]byte(",statement,status\n0,a,Normal\n"))
	if a.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("SHA256 = %s, want the sha256 of the file bytes", a.SHA256)
	}
}

func TestParseLabel(t *testing.T) {
	tests := []struct {
		in   string
		want Label
		ok   bool
	}{
		{"Normal", Normal, true},
		{" normal ", Normal, true},
		{"Personality disorder", PersonalityDisorder, true},
		{"Personality-disorder", PersonalityDisorder, true},
		{"PERSONALITY  DISORDER", PersonalityDisorder, true},
		{"personality disorders", PersonalityDisorder, true},
		{"Suicide", Suicidal, true},
		{"Bipolar disorder", Bipolar, true},
		{"Happy", 0, false},
		{"", 0, false},
		{"Normal!", 0, false},
	}
	for _, tc := range tests {
		got, ok := ParseLabel(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ParseLabel(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for i, n := range LabelNames() {
		if Label(i).String() != n {
			t.Errorf("Label(%d).String() = %q, want %q", i, Label(i).String(), n)
		}
	}
}

// TestReadMissingColumnsDeterministic: a header without either column names
// both, in a fixed order, every time (it once named one of them at random).
func TestReadMissingColumnsDeterministic(t *testing.T) {
	path := writeFixture(t, "data.csv", ",text,label\n0,a,Normal\n")
	const want = `data.csv:1 field "statement,status": missing column: header is ",text,label", want "statement" and "status" columns`
	for range 50 {
		_, err := ReadFile(path, Options{})
		if !errors.Is(err, ErrMissingColumn) {
			t.Fatalf("err = %v, want ErrMissingColumn", err)
		}
		var re *RowError
		if !errors.As(err, &re) || re.Field != "statement,status" || !strings.HasSuffix(err.Error(), want) {
			t.Fatalf("err = %q, want it to end with %q", err, want)
		}
	}
}
