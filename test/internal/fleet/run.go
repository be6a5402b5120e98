package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// Timings: how the hosts' pulls are spread over time.
const (
	// Cold: every host starts pulling at the same instant, as when a new image is rolled out
	// to a whole deployment at once.
	Cold = "cold"
	// Rolling: a tenth of the hosts (at least one) at a time, each batch once the last one
	// finished, as a rolling update does.
	Rolling = "rolling"
)

// Timings lists the timings in the order runs use them.
var Timings = []string{Cold, Rolling}

// cpuSaturatedAt is the machine's mean CPU use over a run from which the CPU, not the
// links, is taken to be what limited it.
const cpuSaturatedAt = 0.85

// Result is one run: one scenario, one timing. The JSON field names are the benchmark's
// published format.
type Result struct {
	Scenario            string  `json:"scenario"`
	Timing              string  `json:"timing"`
	Nodes               int     `json:"nodes"`
	ImageBytes          int64   `json:"image_bytes"`
	OriginBytes         int64   `json:"origin_bytes"`
	OriginAmplification float64 `json:"origin_amplification"`
	P50Seconds          float64 `json:"p50_seconds"`
	P90Seconds          float64 `json:"p90_seconds"`
	MaxSeconds          float64 `json:"max_seconds"`
	// BoundSeconds is the physical lower bound on MaxSeconds for any design: the image must
	// cross the origin's link once and each host's link once, at the links' raw tc rates
	// (payload moves about 5% slower than that, under TCP/IP and Ethernet headers).
	BoundSeconds float64 `json:"bound_seconds"`
	CPUSaturated bool    `json:"cpu_saturated"`
	// CPUBusy is the machine's mean CPU use over the run, 0 to 1 (all cores).
	CPUBusy float64 `json:"cpu_busy"`
	// CPUSecondsPerGB is the machine's CPU time over the run (every process and the kernel's
	// network path) per 1e9 image bytes delivered to hosts: what one host's pull costs here.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb"`
	// TotalSeconds is from the first pull's start to the last one's end.
	TotalSeconds float64 `json:"total_seconds"`
	// HostSeconds is each host's pull time, from its own start, sorted.
	HostSeconds []float64 `json:"host_seconds"`
	// PeerBytes is what hosts got from each other (shoal's own count), when known.
	PeerBytes  int64  `json:"peer_bytes,omitempty"`
	HostLink   string `json:"host_link"`
	OriginLink string `json:"origin_link"`
	CacheLink  string `json:"cache_link,omitempty"`
	Layers     int    `json:"layers"`
	Date       string `json:"date"`
	Machine    string `json:"machine"`
}

// Run rolls the image out to every host with scenario s and the given timing, from a cold
// start: the scenario's services are fresh, nothing but the origin holds the image. Every
// host pulls the whole image with containerd's resolver and fetcher and checks every digest;
// any failed pull fails the run.
func Run(ctx context.Context, e *Env, s Scenario, timing string) (_ Result, err error) {
	if !slices.Contains(Timings, timing) {
		return Result{}, fmt.Errorf("no timing %q (have %v)", timing, Timings)
	}
	dir, err := e.runDir(s.Name + "-" + timing)
	if err != nil {
		return Result{}, err
	}
	d, err := s.Deploy(ctx, e, dir)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", s.Name, err)
	}
	defer func() {
		if d.Stop != nil {
			if serr := d.Stop(); serr != nil && err == nil {
				err = fmt.Errorf("%s: stop: %w", s.Name, serr)
			}
		}
	}()
	// Whatever the scenario's start-up asked of the origin is not part of the rollout.
	if err := e.Counter.WaitIdle(ctx, 10*time.Second); err != nil {
		return Result{}, err
	}
	e.Counter.Reset()

	hosts := e.Net.Hosts
	batch := len(hosts)
	if timing == Rolling {
		batch = max(1, len(hosts)/10)
	}
	took := make([]time.Duration, len(hosts))
	errs := make([]error, len(hosts))
	cpu := harness.StartMachineCPU()
	begin := time.Now()
	for first := 0; first < len(hosts); first += batch {
		var wg sync.WaitGroup
		start := time.Now()
		for i := first; i < min(first+batch, len(hosts)); i++ {
			wg.Go(func() {
				_, err := harness.PullImage(ctx, e.Ref(), harness.PullOptions{
					HostsDir: d.HostsDir,
					Dial:     harness.DialerIn(hosts[i].Netns),
				})
				took[i] = time.Since(start)
				if err != nil {
					errs[i] = fmt.Errorf("host %s: %w", hosts[i].Name, err)
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return Result{}, fmt.Errorf("%s %s: %w", s.Name, timing, err)
		}
	}
	total := time.Since(begin)
	busy, cpuSeconds := cpu.Used()
	// Origin fetches a scenario still had running when the last client finished (none, if
	// it is well behaved) count too.
	if err := e.Counter.WaitIdle(ctx, 30*time.Second); err != nil {
		return Result{}, err
	}
	r := Result{
		Scenario:        s.Name,
		Timing:          timing,
		Nodes:           len(hosts),
		ImageBytes:      e.ImageBytes,
		OriginBytes:     originBytes(e.Counter),
		TotalSeconds:    total.Seconds(),
		CPUBusy:         busy,
		CPUSecondsPerGB: cpuSeconds / (float64(len(hosts)) * float64(e.ImageBytes) / 1e9),
		CPUSaturated:    busy >= cpuSaturatedAt,
		HostLink:        e.HostLink,
		OriginLink:      e.OriginLink,
		Layers:          e.Layers,
		Date:            time.Now().UTC().Format(time.RFC3339),
		Machine:         harness.ThisMachine().String(),
	}
	if s.Name == "central-cache" {
		r.CacheLink = e.CacheLink
	}
	for _, t := range took {
		r.HostSeconds = append(r.HostSeconds, t.Seconds())
	}
	slices.Sort(r.HostSeconds)
	r.P50Seconds = percentile(r.HostSeconds, 0.5)
	r.P90Seconds = percentile(r.HostSeconds, 0.9)
	r.MaxSeconds = r.HostSeconds[len(r.HostSeconds)-1]
	r.OriginAmplification = float64(r.OriginBytes) / float64(r.ImageBytes)
	if r.BoundSeconds, err = e.bound(); err != nil {
		return Result{}, err
	}
	if d.PeerBytes != nil {
		if r.PeerBytes, err = d.PeerBytes(ctx); err != nil {
			return Result{}, err
		}
	}
	return r, nil
}

// bound is the least time any design needs to get the image to a host: across the origin's
// link once, and across the host's own link once.
func (e *Env) bound() (float64, error) {
	origin, err := harness.ParseRate(e.OriginLink)
	if err != nil {
		return 0, err
	}
	host, err := harness.ParseRate(e.HostLink)
	if err != nil {
		return 0, err
	}
	bits := float64(e.ImageBytes) * 8
	return max(bits/origin, bits/host), nil
}

// originBytes is every response body byte the origin sent: manifests, blobs, anything.
func originBytes(c *harness.CountingProxy) int64 {
	var n int64
	for _, r := range c.Requests() {
		n += r.Bytes
	}
	return n
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
