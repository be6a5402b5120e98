package sim

import (
	"fmt"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/shoal-dev/shoal/test/internal/cdfplot"
)

// plotCDF draws, for each fleet size, the fraction of live nodes done against their pull
// time over the bound, one step line per scenario.
func plotCDF(path string, results []*Result) error {
	var sizes []int
	for _, r := range results {
		if !slices.Contains(sizes, r.Nodes) {
			sizes = append(sizes, r.Nodes)
		}
	}
	var panels []*plot.Plot
	for _, n := range sizes {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%d nodes", n)
		p.X.Label.Text = "pull time / bound"
		p.Y.Label.Text = "live nodes done"
		p.Y.Min, p.Y.Max, p.X.Min = 0, 1, 0
		p.Legend.Top = false
		p.Legend.YOffs = vg.Inch / 4
		p.Legend.XOffs = -vg.Inch / 4
		p.Add(plotter.NewGrid())
		i := 0
		for _, r := range results {
			if r.Nodes != n {
				continue
			}
			xs := make([]float64, len(r.Times))
			for j, x := range r.Times {
				xs[j] = x / r.Bound
			}
			if err := cdfplot.Steps(p, xs, i, fmt.Sprintf("%s (origin %.2fx)", r.Name, r.OriginRatio)); err != nil {
				return err
			}
			i++
		}
		if err := cdfplot.Bound(p, 1, "bound"); err != nil {
			return err
		}
		panels = append(panels, p)
	}
	return cdfplot.Save(path, panels)
}
