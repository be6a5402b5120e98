// Command bench-tracker loads real `shoal tracker` processes on loopback with the requests of
// a rollout and reports what one tracker, and two or three side by side, sustain.
//
// Thousands of Ed25519 identities (--identities) each make their requests through the node's
// own tracker client (tracker/client), so the wire format, the signatures and the spreading
// of leases over several trackers (rendezvous hashing of the digest) are a node's. First every
// identity announces that it holds the previous image, so the trackers know the whole fleet.
// Then each step rolls out a fresh 1 GiB image of 4 layers (256 chunks of 4 MiB): identities
// join the pull as the load calls for them; each announces its 4 blobs every second with its
// progress, asks leases on 4 chunks at a time, fetches a granted chunk "from the origin" and
// releases it done, takes a chunk a peer has from that peer, and asks again for one leased to
// a node still fetching it. That gives a pulling node about the request rates the simulator
// shows (test/sim: about 1.3 announces and 20-25 lease requests per node-second).
//
// The steps offer fixed rates of node operations (announces, lease asks, releases) in open
// loop (--rates), then a closed loop of --workers back to back for the most the trackers
// answer. Each reports the sustained rate against the offered one, the latency of the
// answers, errors by kind, the trackers' CPU time (per 1,000 requests) and resident memory,
// and the load generator's own CPU: the trackers and the generator share this machine's
// cores, so the table says which of them used them. The sets of --trackers then repeat the
// steps with several trackers side by side.
//
// The trackers run with their defaults but --log-level info: the test harness starts them
// at debug, which writes a log line per request and would measure the logging.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
	"github.com/shoal-dev/shoal/tracker/server"
)

func main() { harness.Main("bench-tracker", run) }

// trackerArgs are the flags the trackers get beyond the harness's.
var trackerArgs = []string{"--log-level", "info"}

type params struct {
	Identities  int       `json:"identities"`
	Rates       []float64 `json:"rates_ops_per_second"`
	Workers     int       `json:"closed_loop_workers"`
	StepSeconds float64   `json:"step_seconds"`
	TrackerSets []int     `json:"tracker_sets"`
	Image       string    `json:"image"`
	Node        string    `json:"node"`
	TrackerArgs []string  `json:"tracker_args"`
	// CheckMembers: the clients checked the members the trackers answered as a node does.
	CheckMembers bool `json:"check_members"`
}

type report struct {
	Date    string          `json:"date"`
	Machine harness.Machine `json:"machine"`
	Params  params          `json:"parameters"`
	Steps   []stepResult    `json:"steps"`
	Sets    []setSummary    `json:"sets"`
	Checks  []check         `json:"checks"`
	Seconds float64         `json:"seconds"`
}

type check struct {
	Scenario string `json:"scenario"`
	Name     string `json:"name"`
	Result   string `json:"result"`
	Target   string `json:"target"`
	OK       bool   `json:"ok"`
}

// setSummary is the most a set of trackers sustained.
type setSummary struct {
	Trackers     int     `json:"trackers"`
	Step         string  `json:"best_step"`
	SustainedOps float64 `json:"sustained_ops_per_second"`
	Answered     float64 `json:"requests_answered_per_second"`
	VsOne        float64 `json:"vs_one_tracker,omitempty"`
	CPUPer1k     float64 `json:"tracker_cpu_seconds_per_1k_requests"`
	// PerCore is the requests one tracker answers per second of its CPU: what it would
	// sustain with a core to itself, had it no other limit.
	PerCore float64 `json:"requests_per_tracker_cpu_second"`
	// Nodes is how many nodes pulling at once the set answers, at the operations a pulling
	// node made per second in the least loaded step.
	Nodes float64 `json:"pulling_nodes"`
	// Spread is the requests of the set's rollout steps over those of its busiest tracker:
	// announces go to every tracker and leases to the one each layer's digest hashes to,
	// so with a core each the set answers about Spread times what its busiest tracker can.
	Spread float64 `json:"spread"`
	// Shares is each tracker's part of those requests.
	Shares []float64 `json:"shares"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench-tracker", flag.ContinueOnError)
	identities := fs.Int("identities", 5000, "node identities (Ed25519 keys), each with its own tracker client and connections")
	rateList := fs.String("rates", "1000,2000,5000,10000,20000", "comma-separated open-loop rates, node operations per second")
	workers := fs.Int("workers", 64, "workers of the closed-loop step, each sending as soon as it is answered (0: no closed-loop step)")
	stepLen := fs.Duration("step", 15*time.Second, "duration of each step (a pull takes about 13 s)")
	checkMembers := fs.Bool("check-members", false, "check the members' peer IDs and addresses the trackers answer, as a node does (costs the load generator more CPU than it costs the trackers; the requests are the same)")
	setList := fs.String("trackers", "1,2,3", "comma-separated numbers of trackers side by side, one set of steps each")
	out := fs.String("json", "", "also write the results as JSON to this file")
	keep := fs.Bool("keep", false, "keep the work directory (tracker logs) instead of removing it, and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rates, err := parseList(*rateList, strconv.ParseFloat)
	if err != nil {
		return fmt.Errorf("--rates: %w", err)
	}
	sets, err := parseList(*setList, func(s string, _ int) (int, error) { return strconv.Atoi(s) })
	if err != nil {
		return fmt.Errorf("--trackers: %w", err)
	}
	switch {
	case *identities < 10 || *identities > 10_000:
		// Beyond 10,000, several trackers' connections pass the usual limit of open files.
		return errors.New("--identities must be between 10 and 10000")
	case *workers < 0 || *workers > maxInflight:
		return fmt.Errorf("--workers must be between 0 and %d", maxInflight)
	case *stepLen < time.Second || *stepLen > 2*time.Minute:
		return errors.New("--step must be between 1s and 2m")
	case len(rates) == 0 && *workers == 0:
		return errors.New("no step: give --rates or --workers")
	}
	for _, r := range rates {
		if r <= 0 || r > 100_000 {
			return fmt.Errorf("--rates: %v is not between 0 and 100000", r)
		}
	}
	for _, n := range sets {
		if n < 1 || n > 5 {
			return fmt.Errorf("--trackers: %d is not between 1 and 5", n)
		}
	}
	targs := slices.Clone(trackerArgs)
	if *identities > server.DefaultMaxPeers {
		targs = append(targs, "--max-peers", strconv.Itoa(*identities))
	}

	// The load generator has memory to spare and CPU to save.
	debug.SetGCPercent(400)
	began := time.Now()
	rep := report{
		Date:    time.Now().UTC().Format("2006-01-02"),
		Machine: harness.ThisMachine(),
		Params: params{
			Identities: *identities, Rates: rates, Workers: *workers, StepSeconds: stepLen.Seconds(), TrackerSets: sets,
			Image:       fmt.Sprintf("%d layers of %d MiB, %d chunks of %d MiB", layers, layerBytes>>20, imageChunks, chunkSize>>20),
			Node:        fmt.Sprintf("%d chunks at a time, %v a chunk, leased elsewhere asked again after %v, announce every %v", fetchSlots, fetchTime, leaseRecheck, time.Second),
			TrackerArgs: targs, CheckMembers: *checkMembers,
		},
	}
	work, err := os.MkdirTemp("", "shoal-bench-tracker-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintln(stdout, "work directory kept:", work)
	} else {
		defer os.RemoveAll(work)
	}
	defer harness.RemoveBuilds()
	if _, err := harness.ShoalBinary(); err != nil {
		return err
	}

	m := newMeter()
	fmt.Fprintf(stdout, "%d identities; %d cores shared by the trackers and this load generator\n", *identities, ncpu())
	ids, err := newIdentities(*identities, m)
	if err != nil {
		return err
	}
	for _, n := range sets {
		steps, err := runSet(ctx, stdout, work, n, ids, m, *checkMembers, targs, rates, *workers, *stepLen)
		rep.Steps = append(rep.Steps, steps...)
		if err != nil {
			return fmt.Errorf("%d tracker(s): %w", n, err)
		}
	}
	rep.Sets = summarizeSets(rep.Steps)
	rep.Checks = checks(rep.Steps)
	rep.Seconds = time.Since(began).Seconds()

	pass := printReport(stdout, rep)
	if *out != "" {
		if err := harness.WriteJSON(*out, rep); err != nil {
			return err
		}
	}
	if !pass {
		return errors.New("a check failed (see the table)")
	}
	return nil
}

// runSet starts n trackers and runs every step against them.
func runSet(ctx context.Context, stdout io.Writer, work string, n int, ids []*identity, m *meter, checkMembers bool, targs []string, rates []float64, workers int, d time.Duration) ([]stepResult, error) {
	e := &env{ids: ids, meter: m, checks: checkMembers, name: fmt.Sprintf("%d trackers %d", n, time.Now().UnixNano())}
	defer func() {
		for _, t := range e.trackers {
			_ = t.Close() // the figures are taken; its log is in the work directory
		}
	}()
	var addrs []string
	for i := range n {
		dir := filepath.Join(work, fmt.Sprintf("set%d-tracker%d", n, i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		t, err := harness.RunTracker(ctx, harness.TrackerOptions{DataDir: dir, LogPath: dir + ".log", Args: targs})
		if err != nil {
			return nil, err
		}
		e.trackers = append(e.trackers, t)
		e.urls = append(e.urls, t.URL)
		addrs = append(addrs, t.Addr)
	}
	m.setTrackers(addrs)
	fmt.Fprintf(stdout, "\n%d tracker(s): %s\n", n, strings.Join(e.urls, ", "))

	var out []stepResult
	res, err := e.holdersStep(ctx, max(workers, 16))
	if err != nil {
		return out, err
	}
	out = append(out, res)
	printStep(stdout, res)
	for _, rate := range rates {
		res, err := e.rolloutStep(ctx, rate, 0, d)
		if err != nil {
			return out, err
		}
		out = append(out, res)
		printStep(stdout, res)
	}
	if workers > 0 {
		res, err := e.rolloutStep(ctx, 0, workers, d)
		if err != nil {
			return out, err
		}
		out = append(out, res)
		printStep(stdout, res)
	}
	for _, t := range e.trackers {
		if exited, err := t.Exited(); exited {
			return out, fmt.Errorf("%s exited: %v\n%s", t.Name, err, t.LogTail(20))
		}
	}
	return out, nil
}

// summarizeSets takes each set's best rollout step, against the best of one tracker.
func summarizeSets(steps []stepResult) []setSummary {
	var out []setSummary
	var perNode float64 // operations per pulling node-second, in the least loaded step
	for _, s := range steps {
		if s.Mode == "holders" {
			continue
		}
		if perNode == 0 && s.Ops.OpsPerNodeSecond > 0 {
			perNode = s.Ops.OpsPerNodeSecond
		}
		i := slices.IndexFunc(out, func(x setSummary) bool { return x.Trackers == s.Trackers })
		if i < 0 {
			out = append(out, setSummary{Trackers: s.Trackers})
			i = len(out) - 1
		}
		if s.SustainedOps > out[i].SustainedOps {
			out[i].Step, out[i].SustainedOps, out[i].Answered, out[i].CPUPer1k = s.Step, s.SustainedOps, s.Answered, s.TrackerCPUPer1k
			if s.TrackerCPUPer1k > 0 {
				out[i].PerCore = 1000 / s.TrackerCPUPer1k
			}
		}
	}
	for i := range out {
		by := make([]float64, out[i].Trackers)
		for _, s := range steps {
			if s.Trackers == out[i].Trackers && s.Mode != "holders" {
				for t, n := range s.PerTracker {
					by[t] += float64(n)
				}
			}
		}
		var total, most float64
		for _, n := range by {
			total, most = total+n, max(most, n)
		}
		if most > 0 {
			out[i].Spread = total / most
			for _, n := range by {
				out[i].Shares = append(out[i].Shares, n/total)
			}
		}
		if perNode > 0 {
			out[i].Nodes = out[i].SustainedOps / perNode
		}
		if out[0].Trackers == 1 && out[0].SustainedOps > 0 {
			out[i].VsOne = out[i].SustainedOps / out[0].SustainedOps
		}
	}
	return out
}

// checks gathers the steps' checks and asks that the least loaded rollout step of the first
// set went through without an error. Several trackers on a machine this size share its
// cores with the load generator, so their low rates may see timeouts: they are reported,
// not checked.
func checks(steps []stepResult) []check {
	var out []check
	checked := false
	for _, s := range steps {
		out = append(out, s.Checks...)
		if s.Mode != "open" || checked {
			continue
		}
		checked = true
		out = append(out, check{
			Scenario: s.name(), Name: "errors at the lowest rate",
			Result: fmt.Sprintf("%d errors, %.2fx the offered rate", s.Errors, s.Ratio),
			Target: "0 errors, >= 0.95x", OK: s.Errors == 0 && s.Ratio >= 0.95,
		})
	}
	return out
}

func printStep(w io.Writer, s stepResult) {
	fmt.Fprintf(w, "  %-18s %8.0f ops/s sustained", s.Step, s.SustainedOps)
	if s.OfferedOps > 0 {
		fmt.Fprintf(w, " (%.2fx offered)", s.Ratio)
	}
	fmt.Fprintf(w, ", %8.0f req/s answered, p50 %.2f ms p99 %.2f ms, %d errors, tracker CPU %.3f s/1k req, generator CPU %.1f s, others %.1f s\n",
		s.Answered, s.Latency.P50Ms, s.Latency.P99Ms, s.Errors, s.TrackerCPUPer1k, s.GeneratorCPU, s.OtherCPU)
}

// printReport prints the table and the details behind it; it reports whether every check
// passed.
func printReport(w io.Writer, rep report) bool {
	fmt.Fprintf(w, "\n%s; %s; %d identities; %.0f s steps; took %.0f s\n",
		rep.Date, rep.Machine, rep.Params.Identities, rep.Params.StepSeconds, rep.Seconds)
	fmt.Fprintf(w, "The trackers and this load generator share the machine's %d cores: \"cores busy\" is both together;\n"+
		"\"machine cores busy\" counts every process, and in brackets the cores other processes took meanwhile.\n\n", rep.Machine.Cores)
	fmt.Fprintln(w, "| trackers | step | offered ops/s | sustained ops/s | sustained/offered | answered req/s | p50 ms | p99 ms | max ms | errors | tracker CPU s | tracker CPU s/1k req | tracker RSS MiB (peak) | generator CPU s | cores busy | machine cores busy (others) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range rep.Steps {
		offered, ratio := "-", "-"
		if s.OfferedOps > 0 {
			offered, ratio = fmt.Sprintf("%.0f", s.OfferedOps), fmt.Sprintf("%.2f", s.Ratio)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.0f | %s | %.0f | %.2f | %.2f | %.1f | %d | %.2f | %.3f | %.0f (%.0f) | %.2f | %.2f | %.2f (%.2f) |\n",
			s.Trackers, s.Step, offered, s.SustainedOps, ratio, s.Answered, s.Latency.P50Ms, s.Latency.P99Ms, s.Latency.MaxMs,
			s.Errors, s.TrackerCPU, s.TrackerCPUPer1k, float64(s.TrackerRSS)/(1<<20), float64(s.TrackerPeak)/(1<<20), s.GeneratorCPU, s.CoresBusy, s.MachineBusy, s.OtherCPU/s.Seconds)
	}
	var errs []string
	for _, s := range rep.Steps {
		if s.Errors == 0 && s.Dropped == 0 {
			continue
		}
		var kinds []string
		for k, v := range s.HTTPErrors {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
		}
		for k, v := range s.Ops.Failed {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
		}
		if s.Dropped > 0 {
			kinds = append(kinds, fmt.Sprintf("slots dropped (%d requests in flight) %d", maxInflight, s.Dropped))
		}
		slices.Sort(kinds)
		errs = append(errs, fmt.Sprintf("  %s: %s", s.name(), strings.Join(kinds, ", ")))
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nErrors by kind:\n%s\n", strings.Join(errs, "\n"))
	}

	fmt.Fprintln(w, "\nMost sustained by each set of trackers:")
	fmt.Fprintln(w, "| trackers | best step | sustained ops/s | vs one tracker | answered req/s | tracker CPU s/1k req | req per tracker CPU-second | nodes pulling at once | requests by tracker | spread |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range rep.Sets {
		shares := make([]string, len(s.Shares))
		for i, v := range s.Shares {
			shares[i] = fmt.Sprintf("%.0f%%", 100*v)
		}
		fmt.Fprintf(w, "| %d | %s | %.0f | %.2fx | %.0f | %.3f | %.0f | %.0f | %s | %.2f |\n",
			s.Trackers, s.Step, s.SustainedOps, s.VsOne, s.Answered, s.CPUPer1k, s.PerCore, s.Nodes, strings.Join(shares, " / "), s.Spread)
	}
	fmt.Fprintln(w, "\nSpread: the rollout steps' requests over those of the busiest tracker. Announces go to every tracker,\n"+
		"leases to the one each layer's digest hashes to: with a core each, a set answers about spread times\n"+
		"what its busiest tracker can. Nodes pulling at once: sustained ops/s over the ops a pulling node made per\n"+
		"second in the least loaded step. Req per tracker CPU-second: what one tracker would answer with a core\n"+
		"to itself, were CPU its only limit.")

	fmt.Fprintln(w, "\n| scenario | check | result | target | |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	pass := true
	for _, c := range rep.Checks {
		verdict := "pass"
		if !c.OK {
			verdict, pass = "**miss**", false
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", c.Scenario, c.Name, c.Result, c.Target, verdict)
	}
	return pass
}

// parseList parses a comma-separated list.
func parseList[T any](s string, parse func(string, int) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := parse(f, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func ncpu() int { return runtime.NumCPU() }
