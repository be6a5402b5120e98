// Command bench measures a single shoal node against the real distribution registry on this
// machine and reports each figure as a ratio against a baseline measured in the same run:
//
//   - cold throughput: a blob pulled through a node with an empty cache, against the same
//     blob pulled straight from the origin registry (target >= 0.85x);
//   - first byte: the node's time to first byte on a cold pull minus the origin's (target
//     <= 50 ms);
//   - cache hit: the blob served from the node's cache, against the origin registry serving it
//     from its own disk (target >= 1.0x); here the client does not hash, so the figure is the
//     servers' speed rather than the client's;
//   - memory: the node's peak RSS while four clients stream one cold blob at once (target
//     < 100 MiB).
//
// Each figure is measured with the origin on loopback and with the origin in its own network
// namespace behind a shaped link (--origin-links). Runs alternate between the baseline and the
// node so machine noise hits both alike; the report gives medians. Clients hash what they
// receive, as containerd does, except where noted.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

func main() { harness.Main("bench", run) }

// Targets from the single-node mirror issue.
const (
	targetColdRatio  = 0.85
	targetFirstByte  = 50 * time.Millisecond
	targetCacheRatio = 1.0
	targetRSS        = 100 << 20
)

type result struct {
	Date              string  `json:"date"`
	Machine           string  `json:"machine"`
	OriginLink        string  `json:"origin_link"`
	BlobBytes         int64   `json:"blob_bytes"`
	Runs              int     `json:"runs"`
	ClientHash        bool    `json:"client_hash"`
	DirectMBps        float64 `json:"direct_mbps"`
	ColdMBps          float64 `json:"cold_mbps"`
	ColdRatio         float64 `json:"cold_ratio"`
	DirectFirstByteMs float64 `json:"direct_first_byte_ms"`
	ColdFirstByteMs   float64 `json:"cold_first_byte_ms"`
	FirstByteDeltaMs  float64 `json:"first_byte_delta_ms"`
	RawDirectMBps     float64 `json:"raw_direct_mbps,omitempty"`
	CacheMBps         float64 `json:"cache_mbps,omitempty"`
	CacheRatio        float64 `json:"cache_ratio,omitempty"`
	PeakRSSBytes      int64   `json:"peak_rss_bytes"`
	RSSClients        int     `json:"rss_clients"`
	Checks            []check `json:"checks"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	size := fs.Int64("size", 1<<30, "blob size in bytes")
	runs := fs.Int("runs", 3, "measured runs per scenario")
	clientHash := fs.Bool("client-hash", true, "clients hash what they receive, as containerd does")
	links := fs.String("origin-links", "loopback,1gbit", "comma-separated origin links to measure: loopback (unshaped), or a tc rate such as 1gbit for an origin in its own network namespace behind a link of that speed (needs root)")
	out := fs.String("json", "", "also write the results as JSON to this file")
	profile := fs.String("profile", "", "write a CPU profile of the node during the first cold pull to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *size <= 0 || *runs <= 0 || *runs > 20 {
		return errors.New("--size must be positive and --runs between 1 and 20")
	}
	work, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := harness.ShoalBinary()
	if err != nil {
		return err
	}
	defer harness.RemoveBuilds()

	var results []result
	for i, link := range strings.Split(*links, ",") {
		s := setup{link: strings.TrimSpace(link), size: *size, runs: *runs, clientHash: *clientHash, bin: bin, work: filepath.Join(work, fmt.Sprint(i))}
		if i == 0 {
			s.profile = *profile
		}
		r, err := s.measure(ctx, stdout)
		if err != nil {
			return fmt.Errorf("origin link %s: %w", s.link, err)
		}
		results = append(results, r)
	}

	pass := true
	fmt.Fprintf(stdout, "\n%s; %s blob; medians of %d runs; clients hash what they receive: %v\n\n", harness.ThisMachine().String(), units.Human(*size), *runs, *clientHash)
	fmt.Fprintln(stdout, "| origin link | measure | result | target | |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|")
	for _, r := range results {
		for _, c := range r.Checks {
			verdict := "pass"
			if !c.OK {
				verdict = "**miss**"
				pass = false
			}
			fmt.Fprintf(stdout, "| %s | %s | %s | %s | %s |\n", r.OriginLink, c.Name, c.Result, c.Target, verdict)
		}
	}
	if *out != "" {
		if err := harness.WriteJSON(*out, results); err != nil {
			return err
		}
	}
	if !pass {
		return errors.New("a target was missed (see the table)")
	}
	return nil
}

// setup is one origin placement to measure.
type setup struct {
	link       string // "loopback" or a tc rate
	size       int64
	runs       int
	clientHash bool
	bin        string
	work       string
	profile    string
}

type check struct {
	Name   string `json:"name"`
	Result string `json:"result"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
}

func (s setup) measure(ctx context.Context, stdout io.Writer) (result, error) {
	regDir := filepath.Join(s.work, "registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return result{}, err
	}
	var opts harness.RegistryOptions
	if s.link != "loopback" {
		l, err := harness.NewLink(fmt.Sprintf("shoal-bench-%d", os.Getpid()), 200, s.link)
		if err != nil {
			return result{}, err
		}
		defer l.Close()
		opts = harness.RegistryOptions{Netns: l.Netns, Addr: l.PeerAddr + ":5000"}
	}
	reg, err := harness.RunRegistryWith(ctx, regDir, opts)
	if err != nil {
		return result{}, err
	}
	defer reg.Close()
	fmt.Fprintf(stdout, "origin link %s: registry at %s; uploading a %s random blob\n", s.link, reg.URL, units.Human(s.size))
	const repo = "bench/blob"
	d, err := harness.UploadRandomBlob(ctx, reg.URL, repo, s.size, filepath.Join(s.work, "blob"))
	if err != nil {
		return result{}, err
	}

	direct := reg.URL + "/v2/" + repo + "/blobs/" + d.String()
	// Warm the origin's page cache so the baseline is the registry at its best.
	if _, err := pull(ctx, direct, d, s.clientHash); err != nil {
		return result{}, fmt.Errorf("warm-up pull: %w", err)
	}

	var directRuns, coldRuns, rawDirectRuns, cacheRuns []transfer
	for i := range s.runs {
		t, err := pull(ctx, direct, d, s.clientHash)
		if err != nil {
			return result{}, fmt.Errorf("direct pull: %w", err)
		}
		directRuns = append(directRuns, t)
		fmt.Fprintf(stdout, "  run %d: direct from origin %s\n", i+1, t)

		nodeDir := filepath.Join(s.work, fmt.Sprintf("node-%d", i))
		node, err := startNode(ctx, s.bin, reg.URL, nodeDir)
		if err != nil {
			return result{}, err
		}
		via := node.URL + "/v2/" + repo + "/blobs/" + d.String()
		var profiled chan error
		if s.profile != "" && i == 0 {
			profiled = make(chan error, 1)
			go func() { profiled <- saveProfile(ctx, node.AdminURL, s.profile) }()
		}
		cold, err := pull(ctx, via, d, s.clientHash)
		if profiled != nil {
			if err := <-profiled; err != nil {
				fmt.Fprintln(stdout, "profile:", err)
			}
		}
		if err != nil {
			node.Close()
			return result{}, fmt.Errorf("cold pull through the node: %w", err)
		}
		coldRuns = append(coldRuns, cold)
		fmt.Fprintf(stdout, "  run %d: node, cold         %s\n", i+1, cold)
		if i < s.runs-1 || s.link != "loopback" {
			// Cache hits are compared with the origin serving from its own disk, which
			// only the loopback origin measures; across a shaped link it would only
			// measure the link.
			node.Close()
			os.RemoveAll(nodeDir)
			continue
		}
		// The last node keeps its cache for the cache-hit pairs. Those measure serving speed
		// itself, so the client does not hash; pairs alternate to share the machine's noise.
		err = waitCommitted(ctx, node, s.size)
		for j := 0; err == nil && j < 3*s.runs; j++ {
			var raw, warm transfer
			if raw, err = pull(ctx, direct, d, false); err != nil {
				break
			}
			if warm, err = pull(ctx, via, d, false); err != nil {
				break
			}
			rawDirectRuns = append(rawDirectRuns, raw)
			cacheRuns = append(cacheRuns, warm)
			fmt.Fprintf(stdout, "  pair %d: origin from disk %s; node cache hit %s\n", j+1, raw, warm)
		}
		node.Close()
		if err != nil {
			return result{}, fmt.Errorf("cache-hit pairs: %w", err)
		}
	}

	const clients = 4
	rss, err := peakRSS(ctx, s.bin, reg.URL, filepath.Join(s.work, "node-rss"), repo, d, clients, s.clientHash)
	if err != nil {
		return result{}, err
	}

	r := result{
		Date:              time.Now().UTC().Format("2006-01-02"),
		Machine:           harness.ThisMachine().String(),
		OriginLink:        s.link,
		BlobBytes:         s.size,
		Runs:              s.runs,
		ClientHash:        s.clientHash,
		DirectMBps:        medianRate(directRuns),
		ColdMBps:          medianRate(coldRuns),
		DirectFirstByteMs: medianFirstByte(directRuns),
		ColdFirstByteMs:   medianFirstByte(coldRuns),
		PeakRSSBytes:      rss,
		RSSClients:        clients,
	}
	r.ColdRatio = r.ColdMBps / r.DirectMBps
	r.FirstByteDeltaMs = r.ColdFirstByteMs - r.DirectFirstByteMs
	r.Checks = []check{
		{"cold pull through the node / direct from origin", fmt.Sprintf("%.2fx (%.0f vs %.0f MB/s)", r.ColdRatio, r.ColdMBps, r.DirectMBps), fmt.Sprintf(">= %.2fx", targetColdRatio), r.ColdRatio >= targetColdRatio},
		{"first byte, node cold minus origin", fmt.Sprintf("%+.1f ms (%.1f vs %.1f ms)", r.FirstByteDeltaMs, r.ColdFirstByteMs, r.DirectFirstByteMs), fmt.Sprintf("<= %d ms", targetFirstByte.Milliseconds()), r.FirstByteDeltaMs <= float64(targetFirstByte.Milliseconds())},
	}
	if len(cacheRuns) > 0 {
		r.RawDirectMBps = medianRate(rawDirectRuns)
		r.CacheMBps = medianRate(cacheRuns)
		r.CacheRatio = r.CacheMBps / r.RawDirectMBps
		r.Checks = append(r.Checks, check{"cache hit / origin from its disk (clients not hashing)", fmt.Sprintf("%.2fx (%.0f vs %.0f MB/s)", r.CacheRatio, r.CacheMBps, r.RawDirectMBps), fmt.Sprintf(">= %.2fx", targetCacheRatio), r.CacheRatio >= targetCacheRatio})
	}
	r.Checks = append(r.Checks, check{fmt.Sprintf("node peak RSS, %d clients on one cold blob", clients), units.Human(rss), "< " + units.Human(targetRSS), rss < targetRSS})
	return r, nil
}

func startNode(ctx context.Context, bin, origin, dir string) (*harness.Node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return harness.RunNode(ctx, harness.NodeOptions{
		Binary:  bin,
		DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "node.log"),
		Origin:  origin,
		Args:    []string{"--log-level", "info", "--pprof"},
	})
}

// transfer is a timed pull, printed the way this benchmark reports it.
type transfer struct{ harness.Transfer }

func (t transfer) rate() float64 { return t.BytesPerSecond() / 1e6 } // MB/s

func (t transfer) String() string {
	return fmt.Sprintf("%.0f MB/s, first byte %.1f ms", t.rate(), float64(t.FirstByte.Microseconds())/1000)
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}

// pull GETs url, timing the first byte and the whole body, and checks the digest.
func pull(ctx context.Context, url string, d digest.Digest, verify bool) (transfer, error) {
	t, err := harness.TimedPull(ctx, client, url, d, verify)
	return transfer{t}, err
}

// waitCommitted polls the node until its download finished and the blob is in its cache, so
// a cache hit is measured as one.
func waitCommitted(ctx context.Context, node *harness.Node, size int64) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := node.Status(ctx)
		if err == nil && st.Downloads == 0 && st.Cache.Bytes >= size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("blob not committed to the node's cache within 2m (last status %+v, %v)", st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// saveProfile records the node's CPU for two seconds.
func saveProfile(ctx context.Context, adminURL, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/debug/pprof/profile?seconds=2", nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// peakRSS starts a fresh node, has n clients pull the cold blob through it at once, and
// returns the node's peak resident set size (VmHWM).
func peakRSS(ctx context.Context, bin, origin, dir, repo string, d digest.Digest, n int, verify bool) (int64, error) {
	node, err := startNode(ctx, bin, origin, dir)
	if err != nil {
		return 0, err
	}
	defer node.Close()
	via := node.URL + "/v2/" + repo + "/blobs/" + d.String()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = pull(ctx, via, d, verify)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("concurrent pulls: %w", err)
	}
	return vmHWM(node.Pid())
}

func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func medianRate(ts []transfer) float64 {
	rates := make([]float64, len(ts))
	for i, t := range ts {
		rates[i] = t.rate()
	}
	return median(rates)
}

func medianFirstByte(ts []transfer) float64 {
	ms := make([]float64, len(ts))
	for i, t := range ts {
		ms[i] = float64(t.FirstByte.Microseconds()) / 1000
	}
	return median(ms)
}

func median(v []float64) float64 {
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
