// Package termsafe keeps text that came from elsewhere (sweep and trial
// names, reasons a trainer reported, statements from a dataset, error
// messages a server sent) from driving the operator's terminal: control
// characters, bidirectional overrides and invalid UTF-8 are written as
// visible escapes instead of being interpreted.
//
// The escapes use the \uXXXX form for characters, so output that was valid
// JSON stays valid JSON with the same meaning (encoding/json never emits raw
// control bytes, and a \uXXXX escape inside a JSON string decodes to the
// character it replaced). Bytes that are not UTF-8 become \xNN.
package termsafe

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every unsafe character escaped, including tab and
// newline: use it for one field of a table or one line of output.
func Escape(s string) string {
	if clean(s, false) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	appendEscaped(&b, s, false)
	return b.String()
}

// Writer escapes unsafe characters in everything written through it, but
// passes tab and newline, so tables (text/tabwriter) and lines keep their
// layout. Each Write is escaped on its own: a UTF-8 sequence split across
// two writes is escaped as invalid bytes (fmt and tabwriter write whole
// strings, so this does not happen with them).
type Writer struct {
	w io.Writer
}

// NewWriter returns a Writer that writes escaped text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it to the underlying writer. It reports len(p)
// on success, as io.Writer requires, even though more bytes were written.
func (w *Writer) Write(p []byte) (int, error) {
	s := string(p)
	if clean(s, true) {
		return w.w.Write(p)
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	appendEscaped(&b, s, true)
	if _, err := io.WriteString(w.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// unsafe reports whether r would be interpreted by a terminal rather than
// shown: C0 and C1 controls, DEL, and the bidirectional controls that can
// make text read differently from what it is (Trojan Source).
func unsafe(r rune, keepLayout bool) bool {
	switch {
	case keepLayout && (r == '\n' || r == '\t'):
		return false
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}

func clean(s string, keepLayout bool) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if unsafe(rune(c), keepLayout) {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || unsafe(r, keepLayout) {
			return false
		}
		i += n
	}
	return true
}

func appendEscaped(b *strings.Builder, s string, keepLayout bool) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(b, `\x%02x`, s[i])
		case unsafe(r, keepLayout):
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
}
