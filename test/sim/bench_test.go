package sim

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

var (
	benchNodes = flag.String("sim.nodes", "", "run the bench scenarios at these node counts, comma-separated (make bench-sim)")
	benchRun   = flag.String("sim.run", "", "run only the bench scenarios whose name matches this regexp")
	benchJSON  = flag.String("sim.json", "", "write the bench results to this JSON file")
	benchSlots = flag.Int("sim.slots", 0, "upload slots per node")
	benchReps  = flag.Int("sim.repeats", 0, "times a node sends one chunk within p2p.RepeatWindow (0: p2p.DefaultMaxRepeats, -1: no limit)")
	benchWin   = flag.Duration("sim.repeatwindow", 0, "the span -sim.repeats counts over (0: p2p.RepeatWindow)")
	benchWatch = flag.Duration("sim.watchevery", 0, "the least time between two answers of a watch (0: p2p.WatchEvery)")
	benchPlot  = flag.String("sim.plot", "", "draw the bench results' completion-time CDFs into this PNG file")
	benchGC    = flag.Int("sim.gogc", 400, "the bench runs' GC percent (GOGC) unless GOGC is set: a fleet holds little heap but many goroutines, whose stacks every collection scans")
	benchLimit = flag.Int("sim.memlimit", 12, "the bench runs' soft memory limit in GiB unless GOMEMLIMIT is set (0: none), which bounds what -sim.gogc lets the heap grow to")
	benchMem   = flag.String("sim.memprofile", "", "write a heap profile taken at each scenario's peak heap to this file (one per scenario: the name is inserted before the extension)")
)

// scenarios are the rollouts make bench-sim runs at each fleet size: a 1 GiB image in 4
// layers, 1 Gbit/s nodes, a 250 Mbit/s origin, DHT-only and with a tracker.
func scenarios(nodes int) []Config {
	var out []Config
	for _, mode := range []string{"dht", "tracker"} {
		base := Config{Nodes: nodes, Tracker: mode == "tracker", UploadSlots: *benchSlots, MaxRepeats: *benchReps, RepeatWindow: *benchWin, WatchEvery: *benchWatch}
		add := func(name string, c Config) {
			c.Name = fmt.Sprintf("%s-%s-%d", name, mode, nodes)
			out = append(out, c)
		}
		add("cold", base)
		rolling := base
		rolling.Batches = 10
		add("rolling", rolling)
		late := base
		late.LateEvery, late.LateBy = 10, 20*time.Second
		add("late", late)
		dying := base
		dying.DieFraction, dying.DieAt = 0.05, 15*time.Second
		add("dying", dying)
		slow := base
		slow.SlowEvery = 10
		add("slow", slow)
	}
	return out
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// runTimed runs cfg in a bubble of its own, recording the real time and CPU it took.
func runTimed(t *testing.T, cfg Config) *Result {
	t.Helper()
	start, cpu := time.Now(), cpuSeconds()
	var r *Result
	if *benchMem != "" {
		stop := watchHeap(t, profilePath(*benchMem, cfg.Name))
		defer func() {
			m := stop()
			r.PeakHeap, r.PeakStacks, r.PeakGoroutines = m.heap, m.stacks, m.goroutines
		}()
	}
	synctest.Test(t, func(t *testing.T) {
		cfg.Dir = t.TempDir()
		var err error
		if r, err = Run(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	})
	r.Wall, r.CPU = time.Since(start).Seconds(), cpuSeconds()-cpu
	return r
}

// summary is one line of a result.
func summary(r *Result) string {
	return fmt.Sprintf("%-22s origin %.3fx from %d nodes  p50 %.2fx p99 %.2fx max %.2fx of %.1f s  incomplete %d dead %d retries %d  upload max %.1fx mean  per node/s: have %.1f watch %.1f (answers %.1f) chunk %.1f lookup %.2f announce %.2f lease %.2f  tracker peak %d/s  (%.0f s, %.0f CPU-s)",
		r.Name, r.OriginRatio, r.OriginNodes, r.P50Ratio, r.P99Ratio, r.MaxRatio, r.Bound, r.Incomplete, r.Dead, r.Retries, r.UploadMax,
		r.PerNodeSecond.Haves, r.PerNodeSecond.Watches, r.PerNodeSecond.WatchAnswers, r.PerNodeSecond.ChunkRequests, r.PerNodeSecond.Lookups, r.PerNodeSecond.Announces, r.PerNodeSecond.Leases,
		r.TrackerPeak, r.Wall, r.CPU)
}

// TestBench runs the bench scenarios (make bench-sim): go test ./sim -run TestBench
// -sim.nodes 100,1000 -sim.json FILE -sim.plot FILE.
func TestBench(t *testing.T) {
	if *benchNodes == "" {
		t.Skip("no -sim.nodes")
	}
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(*benchGC))
	}
	if os.Getenv("GOMEMLIMIT") == "" && *benchLimit > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(*benchLimit) << 30))
	}
	var filter *regexp.Regexp
	if *benchRun != "" {
		filter = regexp.MustCompile(*benchRun)
	}
	var results []*Result
	for _, s := range strings.Split(*benchNodes, ",") {
		nodes, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || nodes <= 0 {
			t.Fatalf("-sim.nodes: %q is not a node count", s)
		}
		for _, cfg := range scenarios(nodes) {
			if filter != nil && !filter.MatchString(cfg.Name) {
				continue
			}
			r := runTimed(t, cfg)
			t.Log(summary(r))
			if r.PeakHeap > 0 {
				t.Logf("%s: peak live heap %.2f GB, stacks %.2f GB, %d goroutines at most", r.Name, float64(r.PeakHeap)/1e9, float64(r.PeakStacks)/1e9, r.PeakGoroutines)
			}
			results = append(results, r)
		}
	}
	if *benchJSON != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*benchJSON, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if *benchPlot != "" {
		if err := plotCDF(*benchPlot, results); err != nil {
			t.Fatal(err)
		}
	}
}
