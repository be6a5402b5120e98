// Command bench-fleet rolls one image out to a fleet of hosts built on this machine and
// compares shoal with what users run today, in the same run (see package fleet for the
// network: every host a network namespace behind a tc-shaped link, the origin a real
// distribution registry behind a slower one).
//
// Scenarios: direct (every host pulls from the origin), central-cache (every host pulls
// through one distribution registry in pull-through cache mode), shoal (every host pulls
// through its own `shoal node`, DHT only), shoal+tracker (the same, the nodes given only a
// `shoal tracker` on a host of its own). Timings: cold (every host at the same instant)
// and rolling (a tenth of the hosts at a time). Every host's client is containerd's resolver
// and fetcher, which checks every digest. The origin's bytes are counted at the origin.
//
// It prints a table, the ratios between scenarios and the verdicts against the bars, writes
// every run as a JSON object (--json) and the completion-time CDFs as a PNG (--plot), and
// exits non-zero when a bar is missed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/fleet"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

func main() { harness.Main("bench-fleet", run) }

// bar is what a scenario must reach on a cold rollout.
type bar struct {
	amplification float64 // origin_bytes / image_bytes at most
	boundFactor   float64 // max_seconds within this many times bound_seconds
}

var bars = map[string]bar{
	"shoal":         {amplification: 1.25, boundFactor: 2},
	"shoal+tracker": {amplification: 1.05, boundFactor: 1.5},
}

// Defaults for `make bench` and `make bench-quick`; see docs/BENCHMARKS.md for why these
// fit two cores.
var (
	full  = fleet.Config{Hosts: 10, HostLink: "500mbit", OriginLink: "125mbit", Layers: 4, LayerSize: 48 << 20}
	quick = fleet.Config{Hosts: 6, HostLink: "500mbit", OriginLink: "125mbit", Layers: 2, LayerSize: 16 << 20}
)

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench-fleet", flag.ContinueOnError)
	isQuick := fs.Bool("quick", false, "the small fleet and image of `make bench-quick` (flags given also apply)")
	hosts := fs.Int("hosts", 0, fmt.Sprintf("hosts in the fleet (default %d, quick %d)", full.Hosts, quick.Hosts))
	hostLink := fs.String("host-link", "", fmt.Sprintf("tc rate of each host's link (default %s)", full.HostLink))
	originLink := fs.String("origin-link", "", fmt.Sprintf("tc rate of the origin's link (default %s)", full.OriginLink))
	cacheLink := fs.String("cache-link", "", "tc rate of the central cache's link (default: the hosts')")
	layers := fs.Int("layers", 0, fmt.Sprintf("layers in the image (default %d, quick %d)", full.Layers, quick.Layers))
	var layerSize units.Size
	fs.Var(&layerSize, "layer-size", fmt.Sprintf("bytes per layer (default %s, quick %s)", units.Human(full.LayerSize), units.Human(quick.LayerSize)))
	scenarioList := fs.String("scenarios", strings.Join(fleet.ScenarioNames(), ","), "comma-separated scenarios to run")
	timingList := fs.String("timings", strings.Join(fleet.Timings, ","), "comma-separated timings: cold, rolling")
	out := fs.String("json", "", "write every run as a JSON array to this file")
	plotPath := fs.String("plot", "", "draw the completion-time CDFs into this PNG file")
	keep := fs.Bool("keep", false, "keep the work directory (logs, data) and print its path")
	saved := fs.String("report", "", "run nothing: print the report of a JSON `file` an earlier run wrote (and --plot it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *saved != "" {
		return reportSaved(*saved, *plotPath, stdout)
	}
	cfg := full
	if *isQuick {
		cfg = quick
	}
	if *hosts != 0 {
		cfg.Hosts = *hosts
	}
	if *hostLink != "" {
		cfg.HostLink = *hostLink
	}
	if *originLink != "" {
		cfg.OriginLink = *originLink
	}
	cfg.CacheLink = *cacheLink
	if *layers != 0 {
		cfg.Layers = *layers
	}
	if layerSize > 0 {
		cfg.LayerSize = int64(layerSize)
	}
	cfg.Keep = *keep
	cfg.Log = stdout
	var scenarios []fleet.Scenario
	for _, name := range strings.Split(*scenarioList, ",") {
		s, err := fleet.ScenarioNamed(strings.TrimSpace(name))
		if err != nil {
			return fmt.Errorf("--scenarios: %w", err)
		}
		scenarios = append(scenarios, s)
	}
	var timings []string
	for _, t := range strings.Split(*timingList, ",") {
		t = strings.TrimSpace(t)
		if t != fleet.Cold && t != fleet.Rolling {
			return fmt.Errorf("--timings: no timing %q (want cold, rolling)", t)
		}
		timings = append(timings, t)
	}

	began := time.Now()
	defer harness.RemoveBuilds()
	fmt.Fprintf(stdout, "fleet: %d hosts behind %s links, origin behind %s; %d layers of %s\n",
		cfg.Hosts, cfg.HostLink, cfg.OriginLink, cfg.Layers, units.Human(cfg.LayerSize))
	e, err := fleet.Setup(ctx, cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	if *keep {
		defer fmt.Fprintln(stdout, "work directory kept:", e.WorkDir())
	}

	var results []fleet.Result
	for _, t := range timings {
		for _, s := range scenarios {
			r, err := fleet.Run(ctx, e, s, t)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "  %-14s %-8s origin %.2fx, p50 %.1fs, max %.1fs (bound %.1fs), CPU %.0f%% (%.1f CPU-s/GB)\n",
				r.Scenario, r.Timing, r.OriginAmplification, r.P50Seconds, r.MaxSeconds, r.BoundSeconds, 100*r.CPUBusy, r.CPUSecondsPerGB)
			results = append(results, r)
		}
	}

	pass := report(stdout, results, time.Since(began))
	if *out != "" {
		if err := harness.WriteJSON(*out, results); err != nil {
			return err
		}
	}
	if *plotPath != "" {
		if err := plotCDF(*plotPath, results); err != nil {
			return err
		}
	}
	if !pass {
		return errors.New("a bar was missed (see above)")
	}
	return nil
}

// reportSaved prints the report of the runs in file and draws their plot.
func reportSaved(file, plotPath string, stdout io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var results []fleet.Result
	if err := json.Unmarshal(b, &results); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if len(results) == 0 {
		return fmt.Errorf("%s: no runs", file)
	}
	if plotPath != "" {
		if err := plotCDF(plotPath, results); err != nil {
			return err
		}
	}
	var took float64
	for _, r := range results {
		took += r.TotalSeconds
	}
	if !report(stdout, results, time.Duration(took*float64(time.Second))) {
		return errors.New("a bar was missed (see above)")
	}
	return nil
}

// report prints the table, the ratios against the baselines and the verdicts; it reports
// whether every bar was met.
func report(w io.Writer, results []fleet.Result, took time.Duration) bool {
	if len(results) == 0 {
		return true
	}
	r0 := results[0]
	fmt.Fprintf(w, "\n%s; %s\n%d hosts behind %s links, origin behind %s, image %s in %d layers; took %.0f s\n\n",
		r0.Date[:10], r0.Machine, r0.Nodes, r0.HostLink, r0.OriginLink, units.Human(r0.ImageBytes), r0.Layers, took.Seconds())
	fmt.Fprintln(w, "| scenario | timing | origin bytes | p50 | p90 | max | bound | max / bound | rollout | CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		cpu := fmt.Sprintf("%.0f%%", 100*r.CPUBusy)
		if r.CPUSaturated {
			cpu += " (saturated)"
		}
		fmt.Fprintf(w, "| %s | %s | %.2fx | %.1f s | %.1f s | %.1f s | %.1f s | %.2f | %.1f s | %s |\n",
			r.Scenario, r.Timing, r.OriginAmplification, r.P50Seconds, r.P90Seconds, r.MaxSeconds, r.BoundSeconds, r.MaxSeconds/r.BoundSeconds, r.TotalSeconds, cpu)
	}
	find := func(scenario, timing string) *fleet.Result {
		for i := range results {
			if results[i].Scenario == scenario && results[i].Timing == timing {
				return &results[i]
			}
		}
		return nil
	}
	fmt.Fprintln(w)
	for _, t := range fleet.Timings {
		for _, s := range fleet.Scenarios {
			r := find(s.Name, t)
			if r == nil || !strings.HasPrefix(s.Name, "shoal") {
				continue
			}
			for _, base := range []string{"direct", "central-cache"} {
				if b := find(base, t); b != nil {
					fmt.Fprintf(w, "%s %s vs %s: slowest host %.2fx the time (%.1f s vs %.1f s), p50 %.2fx, whole rollout %.2fx, origin bytes %.2fx (%.2fx vs %.2fx)\n",
						r.Scenario, t, base, r.MaxSeconds/b.MaxSeconds, r.MaxSeconds, b.MaxSeconds, r.P50Seconds/b.P50Seconds,
						r.TotalSeconds/b.TotalSeconds, r.OriginAmplification/b.OriginAmplification, r.OriginAmplification, b.OriginAmplification)
				}
			}
		}
	}
	pass := true
	for _, r := range results {
		b, ok := bars[r.Scenario]
		if !ok || r.Timing != fleet.Cold {
			continue
		}
		check := func(what string, ok bool) {
			verdict := "pass"
			if !ok {
				verdict = "MISS"
				pass = false
			}
			fmt.Fprintf(w, "%s cold: %s: %s\n", r.Scenario, what, verdict)
		}
		check(fmt.Sprintf("origin sent %.2fx the image (bar <= %.2fx)", r.OriginAmplification, b.amplification), r.OriginAmplification <= b.amplification)
		check(fmt.Sprintf("last host done in %.2fx the bound (bar <= %.1fx)", r.MaxSeconds/r.BoundSeconds, b.boundFactor), r.MaxSeconds <= b.boundFactor*r.BoundSeconds)
		for _, base := range []string{"direct", "central-cache"} {
			if o := find(base, fleet.Cold); o != nil {
				check(fmt.Sprintf("last host done before %s's (%.1f s vs %.1f s)", base, r.MaxSeconds, o.MaxSeconds), r.MaxSeconds < o.MaxSeconds)
			}
		}
		if r.CPUSaturated {
			fmt.Fprintf(w, "%s cold: the CPU was busy %.0f%% of the run: it, not the links, limited it; use fewer hosts or slower links\n", r.Scenario, 100*r.CPUBusy)
		}
	}
	return pass
}
