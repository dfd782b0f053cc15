package termsafe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"text/tabwriter"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "demo-t001 rank 8", "demo-t001 rank 8"},
		{"unicode kept", "naïve – ok ✓", "naïve – ok ✓"},
		{"clear screen", "x\x1b[2Jy", `x\u001b[2Jy`},
		{"title set (OSC)", "\x1b]0;pwned\x07", `\u001b]0;pwned\u0007`},
		{"carriage return overwrites a line", "FAILED\rSUCCEEDED", `FAILED\u000dSUCCEEDED`},
		{"newline and tab in a field", "a\nb\tc", `a\u000ab\u0009c`},
		{"C1 CSI", "a\u009b31mb", `a\u009b31mb`},
		{"DEL", "a\x7fb", `a\u007fb`},
		{"bidi override", "abc\u202edef", `abc\u202edef`},
		{"invalid UTF-8", "a\xffb", `a\xffb`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestWriterKeepsLayout(t *testing.T) {
	var out bytes.Buffer
	tw := tabwriter.NewWriter(NewWriter(&out), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trial\treason\n")
	fmt.Fprintf(tw, "t1\tstopped \x1b[31mred\x1b[0m\n")
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "trial  reason\nt1     stopped \\u001b[31mred\\u001b[0m\n"
	if out.String() != want {
		t.Errorf("table = %q, want %q", out.String(), want)
	}
}

// JSON written through a Writer still decodes to what was encoded, control
// and bidi characters included: the escapes are JSON's own.
func TestWriterKeepsJSON(t *testing.T) {
	in := map[string]string{"reason": "a\x1b[2J\u009b\u202eb\r\n", "name": "t1"}
	var out bytes.Buffer
	enc := json.NewEncoder(NewWriter(&out))
	enc.SetIndent("", "  ")
	if err := enc.Encode(in); err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(out.Bytes(), "\x1b\r") || bytes.Contains(out.Bytes(), []byte("\u202e")) || bytes.Contains(out.Bytes(), []byte("\u009b")) {
		t.Fatalf("raw control characters reached the output: %q", out.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is no longer JSON: %v\n%s", err, out.String())
	}
	if got["reason"] != in["reason"] || got["name"] != in["name"] {
		t.Errorf("decoded %q, want %q", got, in)
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J", "a\xffb", "\u202e", "\u009b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{Escape(s), writeThrough(t, s)} {
			if !clean(out, true) {
				t.Fatalf("escaped %q still has unsafe characters: %q", s, out)
			}
		}
		if clean(s, false) && Escape(s) != s {
			t.Fatalf("clean text %q was changed to %q", s, Escape(s))
		}
	})
}

func writeThrough(t *testing.T, s string) string {
	var out bytes.Buffer
	if n, err := NewWriter(&out).Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(s))
	}
	return out.String()
}
