// Package cdfplot draws completion-time CDFs, one step line per run, for the benchmarks' PNGs.
package cdfplot

import (
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Palette gives runs the same color in every panel, by index.
var Palette = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	color.RGBA{R: 0xbc, G: 0xbd, B: 0x22, A: 0xff},
	color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
}

// Steps adds to p the CDF of sorted xs (the fraction of them at or below each x) as a step
// line in color i of the palette, named in the legend.
func Steps(p *plot.Plot, xs []float64, i int, name string) error {
	pts := make(plotter.XYs, 0, 2*len(xs)+1)
	pts = append(pts, plotter.XY{X: 0, Y: 0})
	for j, x := range xs {
		pts = append(pts, plotter.XY{X: x, Y: float64(j) / float64(len(xs))})
		pts = append(pts, plotter.XY{X: x, Y: float64(j+1) / float64(len(xs))})
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = Palette[i%len(Palette)]
	l.Width = vg.Points(2)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// Bound adds a dashed vertical line at x, named in the legend.
func Bound(p *plot.Plot, x float64, name string) error {
	l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: 1}})
	if err != nil {
		return err
	}
	l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	l.Color = color.Gray{Y: 0x60}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// Save draws panels side by side into a PNG at path; nothing when there are none.
func Save(path string, panels []*plot.Plot) error {
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
