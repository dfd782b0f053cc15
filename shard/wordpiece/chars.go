package wordpiece

import "unicode"

// Character classes, as bits. Each mirrors one HF helper.
const (
	// classDrop: removed by clean_text (U+0000, U+FFFD, _is_control: every
	// category C*, unassigned Cn included, except tab, newline and CR).
	classDrop uint8 = 1 << iota
	// classSpace: separates words. _is_whitespace (space, tab, newline, CR,
	// Zs) plus Zl and Zp (U+2028, U+2029), which clean_text keeps but
	// Python's str.split() splits on.
	classSpace
	// classCJK: _is_chinese_char, a word of its own.
	classCJK
	// classPunct: _is_punctuation (ASCII 33-47, 58-64, 91-96, 123-126, P*).
	classPunct
	// classMn: a nonspacing mark, removed by accent stripping.
	classMn
)

// bmpClass holds the class bits of every code point below U+10000.
var bmpClass = buildBMPClass()

func buildBMPClass() *[0x10000]uint8 {
	var c [0x10000]uint8
	var assigned [0x10000]bool
	forEach16 := func(tab *unicode.RangeTable, f func(r rune)) {
		for _, rg := range tab.R16 {
			for r := rune(rg.Lo); r <= rune(rg.Hi); r += rune(rg.Stride) {
				f(r)
			}
		}
	}
	for _, tab := range []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z} {
		forEach16(tab, func(r rune) { assigned[r] = true })
	}
	for r := range c {
		if !assigned[r] {
			c[r] |= classDrop
		}
	}
	forEach16(unicode.Z, func(r rune) { c[r] |= classSpace })
	forEach16(unicode.P, func(r rune) { c[r] |= classPunct })
	forEach16(unicode.Mn, func(r rune) { c[r] |= classMn })
	for _, rg := range [][2]int{{0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xF900, 0xFAFF}} {
		for r := rg[0]; r <= rg[1]; r++ {
			if c[r]&classDrop == 0 { // unassigned ones (U+FA6E) are dropped first
				c[r] |= classCJK
			}
		}
	}
	for _, r := range "\t\n\r" {
		c[r] = classSpace
	}
	c[0xFFFD] = classDrop
	for r := 33; r <= 126; r++ {
		if isASCIIPunct(rune(r)) {
			c[r] |= classPunct
		}
	}
	return &c
}

// isASCIIPunct: HF treats every non-letter, non-digit printable ASCII
// character as punctuation ($, +, <, =, >, ^, `, |, ~ are not P* in Unicode).
func isASCIIPunct(r rune) bool {
	return (r >= 33 && r <= 47) || (r >= 58 && r <= 64) || (r >= 91 && r <= 96) || (r >= 123 && r <= 126)
}

// classOf returns the class bits of r.
func classOf(r rune) uint8 {
	if r >= 0 && r < 0x10000 {
		return bmpClass[r]
	}
	return astralClass(r)
}

// astralClass computes the class bits of a code point above U+FFFF.
func astralClass(r rune) uint8 {
	if !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z) {
		return classDrop // Co (planes 15, 16) and unassigned Cn
	}
	var c uint8
	switch {
	case unicode.Is(unicode.Z, r):
		c |= classSpace
	case unicode.Is(unicode.P, r):
		c |= classPunct
	case unicode.Is(unicode.Mn, r):
		c |= classMn
	}
	if (r >= 0x20000 && r <= 0x2A6DF) || (r >= 0x2A700 && r <= 0x2CEAF) || (r >= 0x2F800 && r <= 0x2FA1F) {
		c |= classCJK
	}
	return c
}
