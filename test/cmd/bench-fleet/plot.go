package main

import (
	"fmt"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/shoal-dev/shoal/test/internal/cdfplot"
	"github.com/shoal-dev/shoal/test/internal/fleet"
)

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
			if err := cdfplot.Steps(p, r.HostSeconds, i, fmt.Sprintf("%s (origin %.2fx)", s.Name, r.OriginAmplification)); err != nil {
				return err
			}
			lines++
		}
		if lines == 0 {
			continue
		}
		if bound > 0 {
			if err := cdfplot.Bound(p, bound, "bound"); err != nil {
				return err
			}
		}
		panels = append(panels, p)
	}
	return cdfplot.Save(path, panels)
}
