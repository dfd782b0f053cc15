package coordinator

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrSpec reports an invalid sweep spec; every *SpecError wraps it.
var ErrSpec = errors.New("invalid sweep spec")

// SpecError locates one problem in a sweep spec, like encoding/csv.ParseError:
// the file, the 1-based line (0 when unknown), the field's dotted path
// ("train.split"; empty when the problem is not one field's) and what is
// wrong with it.
type SpecError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *SpecError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: field %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// Unwrap makes errors.Is(err, ErrSpec) true.
func (e *SpecError) Unwrap() error { return ErrSpec }

// SpecErrors are every problem found in one sweep spec, in file order: what
// ParseSweepSpec returns on failure. errors.As finds the slice, or its first
// *SpecError; errors.Is(err, ErrSpec) holds.
type SpecErrors []*SpecError

// Error lists the problems, one per line.
func (es SpecErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns each *SpecError, for errors.Is and errors.As.
func (es SpecErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

var (
	yamlLine         = regexp.MustCompile(`^line (\d+): `)
	yamlUnknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	yamlInType       = regexp.MustCompile(` in type \S+$`)
)

// yamlErrors turns a YAML decoding error into SpecErrors: one per problem
// yaml.v3 reports (a *yaml.TypeError lists every field it could not decode),
// each with its line and, where the document parsed, the field at that line.
func yamlErrors(file string, root *yaml.Node, err error) SpecErrors {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs = te.Errors
	}
	var out SpecErrors
	for _, msg := range msgs {
		msg = strings.TrimPrefix(msg, "yaml: ")
		e := &SpecError{File: file}
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		e.Field = fieldAt(root, e.Line)
		if m := yamlUnknownField.FindStringSubmatch(msg); m != nil {
			msg = "unknown field (a typo?)"
			if e.Field == "" {
				e.Field = m[1]
			}
		}
		e.Msg = yamlInType.ReplaceAllString(msg, "")
		out = append(out, e)
	}
	return out
}

// specLines finds the lines of fields in a parsed spec document.
type specLines struct {
	root *yaml.Node
}

// line is the line of the field at the dotted path; for a path the file
// does not spell out (a default), the line of its closest ancestor that it
// does, or 0.
func (l specLines) line(path string) int {
	_, line := l.find(path)
	return line
}

// item is the line of a list field's index-th entry (the field's own line
// when the entry is not found, e.g. for a default).
func (l specLines) item(path string, index int) int {
	n, line := l.find(path)
	if n != nil && n.Kind == yaml.SequenceNode && index < len(n.Content) {
		return n.Content[index].Line
	}
	return line
}

// find returns the value node at path (nil when absent) and the line of
// the deepest key on the path that exists.
func (l specLines) find(path string) (*yaml.Node, int) {
	n := l.root
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, key := range strings.Split(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil, line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil, line
		}
		n = next
	}
	return n, line
}

// fieldAt is the dotted path of the deepest mapping key whose key or value
// spans line, or "" when none does.
func fieldAt(n *yaml.Node, line int) string {
	if n == nil || line <= 0 {
		return ""
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var walk func(n *yaml.Node, prefix string) (string, bool)
	walk = func(n *yaml.Node, prefix string) (string, bool) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path := k.Value
				if prefix != "" {
					path = prefix + "." + k.Value
				}
				if deeper, ok := walk(v, path); ok {
					return deeper, true
				}
				if k.Line == line {
					return path, true
				}
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				if p, ok := walk(c, prefix); ok {
					return p, true
				}
			}
		}
		if n.Kind != yaml.MappingNode && n.Line == line && prefix != "" {
			return prefix, true
		}
		return "", false
	}
	p, _ := walk(n, "")
	return p
}
