package chart

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"strings"

	"github.com/loraft/loraft/internal/atomicfile"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Formats are the output formats, by file extension, that Heatmap and Curves
// write.
var Formats = []string{"png", "svg"}

// dpi is the resolution of PNG output.
const dpi = 144

// format returns the output format of path from its extension.
func format(path string) (string, error) {
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	for _, f := range Formats {
		if ext == f {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s: unsupported output format %q: the extension must be one of .%s",
		path, ext, strings.Join(Formats, ", ."))
}

// save draws a w×h figure with drawFn and writes it to path (atomically) in
// the format of path's extension. A panic in the plot library while drawing
// is returned as an error.
func save(path string, w, h vg.Length, drawFn func(draw.Canvas) error) (err error) {
	f, err := format(path)
	if err != nil {
		return err
	}
	var c vg.CanvasWriterTo
	switch f {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(dpi),
			vgimg.UseBackgroundColor(color.White))}
	case "svg":
		c = vgsvg.New(w, h)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: drawing failed: %v", path, p)
		}
	}()
	if err := drawFn(draw.New(c)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := atomicfile.Write(path, 0o644, func(out io.Writer) error {
		_, err := c.WriteTo(out)
		return err
	}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// subMap is a palette.ColorMap that spreads its [min, max] range over the
// part [lo, hi] of inner's range. It trims the near-black and near-white ends
// of a luminance colour map, so grey "missing" cells and black or white cell
// annotations stay distinguishable from data.
type subMap struct {
	inner    palette.ColorMap // range [0, 1]
	lo, hi   float64
	min, max float64
}

func (m *subMap) At(v float64) (color.Color, error) {
	switch {
	case v < m.min:
		return nil, palette.ErrUnderflow
	case v > m.max:
		return nil, palette.ErrOverflow
	case v != v:
		return nil, palette.ErrNaN
	}
	f := 0.0
	if m.max > m.min {
		f = (v - m.min) / (m.max - m.min)
	}
	return m.inner.At(m.lo + f*(m.hi-m.lo))
}

func (m *subMap) Max() float64       { return m.max }
func (m *subMap) SetMax(v float64)   { m.max = v }
func (m *subMap) Min() float64       { return m.min }
func (m *subMap) SetMin(v float64)   { m.min = v }
func (m *subMap) Alpha() float64     { return m.inner.Alpha() }
func (m *subMap) SetAlpha(a float64) { m.inner.SetAlpha(a) }
func (m *subMap) Palette(n int) palette.Palette {
	cols := make(paletteColors, n)
	for i := range cols {
		v := m.min
		if n > 1 {
			v += (m.max - m.min) * float64(i) / float64(n-1)
		}
		c, err := m.At(v)
		if err != nil {
			panic(err) // v is in range by construction
		}
		cols[i] = c
	}
	return cols
}

type paletteColors []color.Color

func (p paletteColors) Colors() []color.Color { return p }

// luminance is the relative luminance of c, 0 (black) to 1 (white).
func luminance(c color.Color) float64 {
	r, g, b, _ := c.RGBA()
	return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 0xffff
}
