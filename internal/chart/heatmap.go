package chart

import (
	"fmt"
	"image/color"
	"math"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// missingColor fills heat-map cells without a metric.
var missingColor = color.Gray{Y: 0xb4}

// grid is the rank×alpha grid of a report's final metrics: plotter.GridXYZ
// with column c at x = c and row r at y = r, so cells are evenly spaced
// whatever the rank and alpha values; the axes' ticks carry the values.
type grid struct {
	ranks  []int
	alphas []float64
	z      [][]float64 // z[row][col], NaN where missing
	trial  [][]*Trial  // trial[row][col], nil where the sweep has none
}

func (g *grid) Dims() (c, r int)        { return len(g.alphas), len(g.ranks) }
func (g *grid) Z(c, r int) float64      { return g.z[r][c] }
func (g *grid) X(c int) float64         { return float64(c) }
func (g *grid) Y(r int) float64         { return float64(r) }
func (g *grid) alphaLabel(c int) string { return strconv.FormatFloat(g.alphas[c], 'g', -1, 64) }

func newGrid(r *Report) *grid {
	rankSet, alphaSet := map[int]bool{}, map[float64]bool{}
	g := &grid{}
	for _, t := range r.Trials {
		if !rankSet[t.Rank] {
			rankSet[t.Rank] = true
			g.ranks = append(g.ranks, t.Rank)
		}
		if !alphaSet[t.Alpha] {
			alphaSet[t.Alpha] = true
			g.alphas = append(g.alphas, t.Alpha)
		}
	}
	sort.Ints(g.ranks)
	sort.Float64s(g.alphas)
	row := make(map[int]int, len(g.ranks))
	for i, rk := range g.ranks {
		row[rk] = i
	}
	col := make(map[float64]int, len(g.alphas))
	for i, a := range g.alphas {
		col[a] = i
	}
	g.z = make([][]float64, len(g.ranks))
	g.trial = make([][]*Trial, len(g.ranks))
	for i := range g.z {
		g.z[i] = make([]float64, len(g.alphas))
		g.trial[i] = make([]*Trial, len(g.alphas))
		for j := range g.z[i] {
			g.z[i][j] = math.NaN()
		}
	}
	for i := range r.Trials {
		t := &r.Trials[i]
		rw, c := row[t.Rank], col[t.Alpha]
		g.trial[rw][c] = t
		if t.Metric != nil {
			g.z[rw][c] = *t.Metric
		}
	}
	return g
}

// Heatmap draws the final validation metric of every trial of report as a
// rank (rows) × alpha (columns) heat map, each cell annotated with its value
// to 3 decimals, with a colour bar, and writes it to path (.png or .svg).
// Cells without a metric are grey, annotated with the trial's state, or "—"
// where the sweep has no trial at that (rank, alpha).
func Heatmap(report *Report, path string) error {
	if err := report.Validate(); err != nil {
		return fmt.Errorf("heatmap %s: %w", path, err)
	}
	g := newGrid(report)
	cols, rows := g.Dims()

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, zr := range g.z {
		for _, v := range zr {
			if !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	haveData := lo <= hi
	switch {
	case !haveData:
		lo, hi = 0, 1
	case lo == hi: // one value: give the colour scale some width
		pad := math.Max(math.Abs(lo)*0.05, 0.005)
		lo, hi = lo-pad, hi+pad
	}
	cm := &subMap{inner: moreland.Kindlmann(), lo: 0.12, hi: 0.92, min: lo, max: hi}
	cm.inner.SetMin(0)
	cm.inner.SetMax(1)

	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: validation %s", report.Sweep, report.Metric)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = "LoRA alpha"
	p.Y.Label.Text = "LoRA rank"
	var xt, yt []plot.Tick
	for c := range cols {
		xt = append(xt, plot.Tick{Value: float64(c), Label: g.alphaLabel(c)})
	}
	for r := range rows {
		yt = append(yt, plot.Tick{Value: float64(r), Label: strconv.Itoa(g.ranks[r])})
	}
	p.X.Tick.Marker = plot.ConstantTicks(xt)
	p.Y.Tick.Marker = plot.ConstantTicks(yt)
	p.X.Padding, p.Y.Padding = 0, 0

	hm := plotter.NewHeatMap(g, cm.Palette(256))
	hm.Min, hm.Max = lo, hi
	hm.NaN = missingColor
	p.Add(hm)

	labels := &plotter.Labels{}
	for r := range rows {
		for c := range cols {
			v := g.z[r][c]
			sty := text.Style{
				Font:    font.From(plot.DefaultFont, vg.Points(10)),
				XAlign:  draw.XCenter,
				YAlign:  draw.YCenter,
				Handler: plot.DefaultTextHandler,
				Color:   color.Black,
			}
			var s string
			switch t := g.trial[r][c]; {
			case !math.IsNaN(v):
				s = fmt.Sprintf("%.3f", v)
				if cell, err := cm.At(v); err == nil && luminance(cell) < 0.5 {
					sty.Color = color.White
				}
			case t != nil && t.State != "":
				s = strings.ToLower(t.State)
			default:
				s = "—"
			}
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(c), Y: float64(r)})
			labels.Labels = append(labels.Labels, s)
			labels.TextStyle = append(labels.TextStyle, sty)
		}
	}
	p.Add(labels)

	cellW, cellH := vg.Inch*0.9, vg.Inch*0.55
	mainW := vg.Length(math.Max(float64(4.5*vg.Inch), float64(cellW)*float64(cols))) + 1.1*vg.Inch
	h := vg.Length(math.Max(float64(3.2*vg.Inch), float64(cellH)*float64(rows))) + 1.1*vg.Inch
	barW := 1.5 * vg.Inch // colour bar, its ticks and label

	return save(path, mainW+barW, h, func(dc draw.Canvas) error {
		mainC := draw.Crop(dc, 0, -barW, 0, 0)
		p.Draw(mainC)
		if !haveData {
			return nil
		}
		data := p.DataCanvas(mainC)
		bar := plot.New()
		bar.HideX()
		bar.Y.Label.Text = report.Metric
		bar.Y.Padding = 0
		bar.Add(&plotter.ColorBar{ColorMap: cm, Vertical: true})
		barC := draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: dc.Max.X - barW + 0.2*vg.Inch, Y: data.Min.Y},
			Max: vg.Point{X: dc.Max.X - 0.35*vg.Inch, Y: data.Max.Y},
		}}
		bar.Draw(barC)
		return nil
	})
}
