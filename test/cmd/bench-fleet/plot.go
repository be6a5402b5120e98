package main

import (
	"fmt"
	"image/color"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/shoal-dev/shoal/test/internal/fleet"
)

// palette gives each scenario the same color in every panel.
var palette = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // direct
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // central-cache
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // shoal
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // shoal+tracker
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// plotCDF draws, for each timing, the fraction of hosts done against time, one step line per
// scenario, with the bound as a dashed line, side by side in one PNG.
func plotCDF(path string, results []fleet.Result) error {
	var panels []*plot.Plot
	for _, t := range fleet.Timings {
		p := plot.New()
		p.Title.Text = t
		p.X.Label.Text = "seconds from the host's start"
		p.Y.Label.Text = "hosts done"
		p.Y.Min, p.Y.Max = 0, 1
		p.X.Min = 0
		// Low, where the steps are not: in from the left when the rollout is cold (the slow
		// scenarios finish late), in from the right when rolling (batches after the first
		// finish early).
		p.Legend.Top = false
		p.Legend.YOffs = vg.Inch * 3 / 4
		if t == fleet.Cold {
			p.Legend.Left = true
			p.Legend.XOffs = vg.Inch
		} else {
			p.Legend.XOffs = -vg.Inch / 3
		}
		p.Add(plotter.NewGrid())
		bound, lines := 0.0, 0
		for i, s := range fleet.Scenarios {
			k := slices.IndexFunc(results, func(r fleet.Result) bool { return r.Scenario == s.Name && r.Timing == t })
			if k < 0 {
				continue
			}
			r := results[k]
			bound = r.BoundSeconds
			pts := make(plotter.XYs, 0, 2*len(r.HostSeconds)+1)
			pts = append(pts, plotter.XY{X: 0, Y: 0})
			for j, x := range r.HostSeconds {
				pts = append(pts, plotter.XY{X: x, Y: float64(j) / float64(len(r.HostSeconds))})
				pts = append(pts, plotter.XY{X: x, Y: float64(j+1) / float64(len(r.HostSeconds))})
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = palette[i%len(palette)]
			l.Width = vg.Points(2)
			p.Add(l)
			lines++
			p.Legend.Add(fmt.Sprintf("%s (origin %.2fx)", s.Name, r.OriginAmplification), l)
		}
		if lines == 0 {
			continue
		}
		if bound > 0 {
			l, err := plotter.NewLine(plotter.XYs{{X: bound, Y: 0}, {X: bound, Y: 1}})
			if err != nil {
				return err
			}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			l.Color = color.Gray{Y: 0x60}
			p.Add(l)
			p.Legend.Add("bound", l)
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return nil
	}
	width := vg.Length(len(panels)) * 6 * vg.Inch
	img := vgimg.New(width, 4*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
