// Command bench-nodes starts a crowd of real `shoal node` processes on this machine's
// loopback (100 by default, 256 KiB chunks) and rolls cold single-layer images out to all of
// them at the same instant through one shared, rate-limited origin (the real registry behind
// a counting proxy): once with the DHT alone, every node bootstrapping through the first,
// and once with a real `shoal tracker`. Each rollout reports the origin's bytes against the
// image, every node's pull time against the bound (the image across the origin's link once),
// the nodes' CPU and what of it the control plane took (beyond the data path, which two-node
// transfers in the same fleet measure), and the requests each node sent per second. In the
// DHT fleet every node then provides a blob of its own and asks for others': every ask must
// find a holder. Every pull is hashed and checked against its digest.
//
// A hundred nodes on two cores is a fleet under load: the figures say how the design fails
// when its nodes are slow, not how fast a fleet of idle machines is.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/crowd"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

func main() { harness.Main("bench-nodes", run) }

// Targets from the fleet-scale issue, for 100 nodes on this machine.
const (
	targetDHTOrigin     = 1.25
	targetTrackerOrigin = 1.05
	targetSlowest       = 3.0   // times the bound, at the slow-origin setting
	targetControl       = 0.005 // of a core per node
)

type report struct {
	*crowd.Result
	Checks  []check `json:"checks"`
	Seconds float64 `json:"seconds"`
}

type check struct {
	Name   string `json:"name"`
	Result string `json:"result"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench-nodes", flag.ContinueOnError)
	nodes := fs.Int("nodes", 100, "`count` of shoal node processes")
	modes := fs.String("modes", "dht,tracker", "comma-separated fleets to run: dht, tracker")
	chunk := fs.String("chunk-size", "256KiB", "--chunk-size of every node")
	settings := fs.String("settings", "16MiB@40MiB,4MiB@2MiB", "comma-separated rollouts, each IMAGE@ORIGIN-RATE-PER-SECOND")
	lookups := fs.Int("lookups", 10, "other nodes' blobs each node asks for in the DHT check (0: none)")
	out := fs.String("json", "", "also write the results as JSON to this file")
	logLevel := fs.String("log-level", "info", "--log-level of every node")
	dir := fs.String("dir", "", "keep the nodes' data and logs in this directory (default: a temp dir, removed)")
	profile := fs.String("profile", "", "write CPU profiles of two nodes over each rollout's first seconds into this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 2 || *nodes > 400 {
		return errors.New("--nodes must be between 2 and 400")
	}
	if *lookups < 0 || *lookups > 100 {
		return errors.New("--lookups must be between 0 and 100")
	}
	cfg := crowd.Config{Nodes: *nodes, ChunkSize: *chunk, Lookups: *lookups, IdleFor: 10 * time.Second, Profile: *profile, Dir: *dir, LogLevel: *logLevel, Log: stdout}
	for _, m := range strings.Split(*modes, ",") {
		m = strings.TrimSpace(m)
		if m != crowd.DHT && m != crowd.Tracker {
			return fmt.Errorf("--modes: unknown fleet %q (want dht, tracker)", m)
		}
		cfg.Modes = append(cfg.Modes, m)
	}
	for _, s := range strings.Split(*settings, ",") {
		img, rate, ok := strings.Cut(strings.TrimSpace(s), "@")
		if !ok {
			return fmt.Errorf("--settings: %q is not IMAGE@RATE", s)
		}
		ib, err1 := units.Parse(img)
		rb, err2 := units.Parse(rate)
		if err1 != nil || err2 != nil || ib <= 0 || rb <= 0 || ib > 1<<30 {
			return fmt.Errorf("--settings: %q: want a size up to 1GiB and a positive rate, e.g. 16MiB@40MiB", s)
		}
		cfg.Settings = append(cfg.Settings, crowd.Setting{ImageBytes: ib, OriginRate: rb})
	}
	begin := time.Now()
	res, err := crowd.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep := report{Result: res, Checks: checks(res), Seconds: time.Since(begin).Seconds()}
	print(stdout, rep)
	if *out != "" {
		if err := harness.WriteJSON(*out, rep); err != nil {
			return err
		}
	}
	for _, c := range rep.Checks {
		if !c.OK {
			return fmt.Errorf("%d nodes: %s: %s, want %s", res.Nodes, c.Name, c.Result, c.Target)
		}
	}
	return nil
}

// checks are the targets, each against what this run measured.
func checks(r *crowd.Result) []check {
	var cs []check
	slowRate := r.Settings[0].OriginRate
	for _, s := range r.Settings {
		slowRate = min(slowRate, s.OriginRate)
	}
	for _, f := range r.Fleets {
		limit := targetDHTOrigin
		if f.Mode == crowd.Tracker {
			limit = targetTrackerOrigin
		}
		for _, ro := range f.Rollouts {
			what := fmt.Sprintf("%s, %s", f.Mode, ro.Setting)
			cs = append(cs, check{what + ": origin bytes / image", fmt.Sprintf("%.3fx", ro.OriginAmplification),
				fmt.Sprintf("<= %.2fx", limit), ro.OriginAmplification <= limit})
			cs = append(cs, check{what + ": control plane per node", fmt.Sprintf("%.2f%% of a core", 100*ro.ControlCorePerNode),
				fmt.Sprintf("<= %.1f%%", 100*targetControl), ro.ControlCorePerNode <= targetControl})
			if ro.OriginRate == slowRate {
				cs = append(cs, check{what + ": slowest node", fmt.Sprintf("%.2f s, %.2fx the bound of %.2f s", ro.MaxSeconds, ro.MaxSeconds/ro.BoundSeconds, ro.BoundSeconds),
					fmt.Sprintf("<= %.0fx", targetSlowest), ro.MaxSeconds <= targetSlowest*ro.BoundSeconds})
			}
		}
	}
	if l := r.Lookup; l != nil {
		cs = append(cs, check{"DHT check: asks for another node's blob that found a holder",
			fmt.Sprintf("%d of %d (%d reached the origin, %d failed; of %d lookups %d found none, %d ran out of time)", l.Asked-l.OriginGets-l.Failed, l.Asked, l.OriginGets, l.Failed, l.Lookups, l.FoundNone, l.TimedOut),
			"all", l.OriginGets == 0 && l.Failed == 0})
	}
	return cs
}

func print(w io.Writer, r report) {
	fmt.Fprintf(w, "\n%d shoal nodes on %s, chunks of %s, %s\n", r.Nodes, r.Machine, r.ChunkSize, r.Date)
	for _, f := range r.Fleets {
		fmt.Fprintf(w, "\n%s fleet: started in %.0f s; idle %.3f%% of a core per node, RSS %.0f MiB per node; data path %.1f CPU-s per GB (one node serving, one pulling)\n",
			f.Mode, f.StartSeconds, 100*f.IdleCorePerNode, float64(f.RSSMeanBytes)/(1<<20), f.DataPathCPUPerGB)
		fmt.Fprintf(w, "  %-22s %8s %8s %8s %8s %8s %9s %9s %8s\n", "rollout", "origin", "p50 s", "p90 s", "max s", "bound s", "CPU-s/GB", "control", "busy")
		for _, ro := range f.Rollouts {
			fmt.Fprintf(w, "  %-22s %7.3fx %8.2f %8.2f %8.2f %8.2f %9.1f %8.2f%% %7.0f%%\n", ro.Setting, ro.OriginAmplification,
				ro.P50Seconds, ro.P90Seconds, ro.MaxSeconds, ro.BoundSeconds, ro.CPUSecondsPerGB, 100*ro.ControlCorePerNode, 100*ro.MachineBusy)
			var parts []string
			for _, k := range []string{"have", "watch", "watch_answer", "chunk", "find", "provide", "seeds", "fetch", "announce", "lease"} {
				if v, ok := ro.PerNodeSecond[k]; ok {
					parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
				}
			}
			fmt.Fprintf(w, "    requests per node per second: %s\n", strings.Join(parts, ", "))
		}
	}
	fmt.Fprintln(w)
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s %s: %s (target %s)\n", mark, c.Name, c.Result, c.Target)
	}
}
