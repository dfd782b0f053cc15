package chart

import (
	"fmt"
	"image/color"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// TrialLabel is a trial's name in plot legends, such as "r=4 α=8".
func TrialLabel(t *Trial) string {
	return fmt.Sprintf("r=%d α=%s", t.Rank, strconv.FormatFloat(t.Alpha, 'g', -1, 64))
}

// Curves draws the training curves of every trial of report in one figure
// and writes it to path (.png or .svg): training loss by step in the top
// panel, the validation metric by step in the bottom one, one line per trial
// (coloured by rank, dashed by alpha) and one legend beside both, with
// entries such as "r=4 α=8" in rank-then-alpha order. Trials without points
// have no line and no legend entry.
func Curves(report *Report, path string) error {
	if err := report.Validate(); err != nil {
		return fmt.Errorf("curves %s: %w", path, err)
	}
	g := newGrid(report) // for the sorted ranks and alphas that pick styles
	rankIdx := make(map[int]int, len(g.ranks))
	for i, r := range g.ranks {
		rankIdx[r] = i
	}
	alphaIdx := make(map[float64]int, len(g.alphas))
	for i, a := range g.alphas {
		alphaIdx[a] = i
	}
	trials := make([]*Trial, len(report.Trials))
	for i := range report.Trials {
		trials[i] = &report.Trials[i]
	}
	sort.SliceStable(trials, func(i, j int) bool {
		if trials[i].Rank != trials[j].Rank {
			return trials[i].Rank < trials[j].Rank
		}
		return trials[i].Alpha < trials[j].Alpha
	})

	loss := newPanel(fmt.Sprintf("%s: training loss", report.Sweep), "training loss")
	eval := newPanel(fmt.Sprintf("%s: validation %s", report.Sweep, report.Metric), "validation "+report.Metric)
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.ThumbnailWidth = vg.Points(32)
	legend.Padding = vg.Points(3)

	lines := map[*plot.Plot]int{} // lines per panel
	for _, t := range trials {
		style := draw.LineStyle{
			Color:  plotutil.Color(rankIdx[t.Rank]),
			Dashes: plotutil.Dashes(alphaIdx[t.Alpha]),
			Width:  vg.Points(1.5),
		}
		var thumb plot.Thumbnailer
		for _, c := range []struct {
			p      *plot.Plot
			pts    []Point
			points bool // mark each point (sparse evaluation curves)
		}{{loss, t.Loss, false}, {eval, t.Eval, true}} {
			if len(c.pts) == 0 {
				continue
			}
			xys := stepOrder(c.pts)
			line, err := plotter.NewLine(xys)
			if err != nil {
				return fmt.Errorf("%s: trial %s: %w", path, t.Name, err)
			}
			line.LineStyle = style
			c.p.Add(line)
			lines[c.p]++
			if thumb == nil {
				thumb = line
			}
			if c.points || len(xys) == 1 {
				sc, err := plotter.NewScatter(xys)
				if err != nil {
					return fmt.Errorf("%s: trial %s: %w", path, t.Name, err)
				}
				sc.GlyphStyle = draw.GlyphStyle{Color: style.Color, Radius: vg.Points(2), Shape: draw.CircleGlyph{}}
				c.p.Add(sc)
			}
		}
		if thumb != nil {
			legend.Add(TrialLabel(t), thumb)
		}
	}

	// Panels no trial has points for get a unit range and a note.
	empty := map[*plot.Plot]bool{}
	for _, p := range []*plot.Plot{loss, eval} {
		if lines[p] == 0 {
			empty[p] = true
			p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
		}
	}

	legRect := legend.Rectangle(draw.Canvas{})
	legW := legRect.Max.X - legRect.Min.X + 0.4*vg.Inch
	w, h := 7.5*vg.Inch+legW, 8*vg.Inch
	return save(path, w, h, func(dc draw.Canvas) error {
		plotsC := draw.Crop(dc, 0, -legW, 0, 0)
		tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: 0.25 * vg.Inch,
			PadTop: 0.1 * vg.Inch, PadBottom: 0.1 * vg.Inch, PadLeft: 0.1 * vg.Inch}
		panels := [][]*plot.Plot{{loss}, {eval}}
		cs := plot.Align(panels, tiles, plotsC)
		for i, row := range panels {
			row[0].Draw(cs[i][0])
			if empty[row[0]] {
				dataC := row[0].DataCanvas(cs[i][0])
				sty := row[0].Title.TextStyle
				sty.Color = color.Gray{Y: 0x80}
				sty.XAlign, sty.YAlign = draw.XCenter, draw.YCenter
				dataC.FillText(sty, dataC.Center(), "no points yet")
			}
		}
		top := loss.DataCanvas(cs[0][0])
		legC := draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: dc.Max.X - legW + 0.2*vg.Inch, Y: dc.Min.Y},
			Max: vg.Point{X: dc.Max.X, Y: top.Max.Y},
		}}
		legend.Draw(legC)
		return nil
	})
}

// newPanel is an empty curve panel with a title, a step axis and a grid.
func newPanel(title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "step"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	return p
}

// stepOrder returns pts as plotter points sorted by step.
func stepOrder(pts []Point) plotter.XYs {
	xys := make(plotter.XYs, len(pts))
	for i, p := range pts {
		xys[i] = plotter.XY{X: float64(p.Step), Y: p.Value}
	}
	sort.SliceStable(xys, func(i, j int) bool { return xys[i].X < xys[j].X })
	return xys
}
