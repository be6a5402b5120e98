// Package crowd runs a crowd of real `shoal node` processes on this machine's loopback, all
// pulling one cold image at the same instant through a shared, rate-limited origin (the real
// registry behind a counting proxy), DHT-only and with a real `shoal tracker`: what the origin
// sent, how long each node took, what the nodes' control plane cost; and a DHT check in which
// every node provides a blob of its own and looks up others'.
package crowd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// Modes: how the nodes find each other.
const (
	// DHT: every node joins through the first one and finds holders in the DHT alone.
	DHT = "dht"
	// Tracker: every node is given a real `shoal tracker` and nothing else.
	Tracker = "tracker"
)

// Setting is one rollout: a single-layer image of ImageBytes through an origin sending
// OriginRate bytes a second over all its connections.
type Setting struct {
	ImageBytes int64 `json:"image_bytes"`
	OriginRate int64 `json:"origin_rate"`
}

func (s Setting) String() string {
	return fmt.Sprintf("%s at %s/s", mib(s.ImageBytes), mib(s.OriginRate))
}

// Config is what Run measures.
type Config struct {
	Nodes     int       // default 100
	ChunkSize string    // --chunk-size; default 256KiB
	Modes     []string  // default DHT and Tracker
	Settings  []Setting // default: 16 MiB at 40 MiB/s, then 4 MiB at 2 MiB/s
	// Lookups is how many other nodes' blobs each node asks for in the DHT check (DHT mode;
	// 0: no check).
	Lookups int
	// Pairs is how many two-node transfers measure the data path's CPU per byte.
	Pairs int
	// IdleFor is how long the fleet's idle CPU is measured, after as long again to settle
	// (0: not measured).
	IdleFor time.Duration
	// StartAtOnce is how many nodes start at the same time.
	StartAtOnce int
	// LogLevel is every node's --log-level; default info.
	LogLevel string
	// Profile, when set, is a directory for CPU profiles of eight of the nodes over the
	// first seconds of each rollout.
	Profile string
	Dir     string    // where data dirs and logs go; default a temp dir, removed after
	Log     io.Writer // progress lines; default none
}

func (c *Config) defaults() {
	if c.Nodes <= 0 {
		c.Nodes = 100
	}
	if c.ChunkSize == "" {
		c.ChunkSize = "256KiB"
	}
	if len(c.Modes) == 0 {
		c.Modes = []string{DHT, Tracker}
	}
	if len(c.Settings) == 0 {
		c.Settings = []Setting{{16 << 20, 40 << 20}, {4 << 20, 2 << 20}}
	}
	if c.Pairs <= 0 {
		c.Pairs = 3
	}
	if c.StartAtOnce <= 0 {
		c.StartAtOnce = 8
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Result is everything Run measured. The JSON field names are the benchmark's format.
type Result struct {
	Date      string          `json:"date"`
	Machine   harness.Machine `json:"machine"`
	Nodes     int             `json:"nodes"`
	ChunkSize string          `json:"chunk_size"`
	Fleets    []Fleet         `json:"fleets"`
	Lookup    *LookupResult   `json:"dht_check,omitempty"`
	Settings  []Setting       `json:"settings"`
}

// Fleet is what one mode's fleet measured.
type Fleet struct {
	Mode string `json:"mode"`
	// StartSeconds is how long all nodes took to start and see a peer.
	StartSeconds float64 `json:"start_seconds"`
	// IdleCorePerNode is the mean CPU use of one node while the fleet idles, in cores.
	IdleCorePerNode float64 `json:"idle_core_per_node"`
	// DataPathCPUPerGB is the CPU seconds of a node serving a blob plus the node pulling it
	// from that peer alone, per 1e9 blob bytes: what each node's share of a rollout's bytes
	// costs without a crowd, the comparison that leaves the control plane.
	DataPathCPUPerGB float64   `json:"data_path_cpu_s_per_gb"`
	RSSMeanBytes     int64     `json:"rss_mean_bytes"`
	Rollouts         []Rollout `json:"rollouts"`
}

// Rollout is one cold rollout: every node pulls the image at once.
type Rollout struct {
	Setting
	Repo                string  `json:"repo"`
	OriginBytes         int64   `json:"origin_bytes"`
	OriginAmplification float64 `json:"origin_amplification"`
	ManifestsFromOrigin int     `json:"manifests_from_origin"`
	// BoundSeconds is the least time any design needs: the image across the origin's link
	// once (the nodes' loopback links are not limited).
	BoundSeconds float64   `json:"bound_seconds"`
	P50Seconds   float64   `json:"p50_seconds"`
	P90Seconds   float64   `json:"p90_seconds"`
	MaxSeconds   float64   `json:"max_seconds"`
	NodeSeconds  []float64 `json:"node_seconds"`
	// CPUSeconds is the nodes' CPU over the rollout (the tracker's apart); ControlCorePerNode
	// what of it is beyond the data path (DataPathCPUPerGB times the bytes delivered), per
	// node, in cores over the rollout's time.
	CPUSeconds         float64 `json:"cpu_seconds"`
	TrackerCPUSeconds  float64 `json:"tracker_cpu_seconds,omitempty"`
	CPUSecondsPerGB    float64 `json:"cpu_seconds_per_gb"`
	ControlCorePerNode float64 `json:"control_core_per_node"`
	MachineBusy        float64 `json:"machine_busy"`
	PeerBytes          int64   `json:"peer_bytes"`
	// PerNodeSecond are the requests each node sent, per second of the rollout, by kind
	// (shoal_p2p_requests_total's kinds, and the tracker client's announce and lease).
	PerNodeSecond map[string]float64 `json:"per_node_second"`
}

// LookupResult is the DHT check.
type LookupResult struct {
	Blobs int `json:"blobs"` // one per node, pulled by it alone first
	// Asked is how many times a node asked for another node's blob; OriginGets how many of
	// those reached the origin (0 when every lookup found a holder); FoundNone the DHT
	// lookups in that phase the network answered with no holder, TimedOut those that ran
	// out of time before any member answered.
	Asked      int     `json:"asked"`
	OriginGets int     `json:"origin_gets"`
	FoundNone  uint64  `json:"lookups_found_none"`
	TimedOut   uint64  `json:"lookups_timed_out"`
	Lookups    uint64  `json:"lookups"`
	Seconds    float64 `json:"seconds"`
	Failed     int     `json:"failed"`
}

// env is the origin every fleet shares.
type env struct {
	cfg   Config
	dir   string
	reg   *harness.Registry
	proxy *harness.CountingProxy
	bin   string
	log   func(format string, args ...any)
	seq   int
}

// Run measures every mode of cfg, one fleet after the other.
func Run(ctx context.Context, cfg Config) (_ *Result, err error) {
	cfg.defaults()
	e := &env{cfg: cfg}
	e.log = func(format string, args ...any) { fmt.Fprintf(cfg.Log, format+"\n", args...) }
	e.dir = cfg.Dir
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "shoal-crowd-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(e.dir)
	}
	if e.bin, err = harness.ShoalBinary(); err != nil {
		return nil, err
	}
	regDir := filepath.Join(e.dir, "registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return nil, err
	}
	if e.reg, err = harness.RunRegistry(ctx, regDir); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.reg.Close()) }()
	if e.proxy, err = harness.NewCountingProxy(e.reg.URL); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.proxy.Close()) }()

	r := &Result{
		Date: time.Now().UTC().Format(time.DateOnly), Machine: harness.ThisMachine(),
		Nodes: cfg.Nodes, ChunkSize: cfg.ChunkSize, Settings: cfg.Settings,
	}
	for _, mode := range cfg.Modes {
		f, lookup, err := e.runFleet(ctx, mode)
		if err != nil {
			return r, fmt.Errorf("%s fleet: %w", mode, err)
		}
		r.Fleets = append(r.Fleets, *f)
		if lookup != nil {
			r.Lookup = lookup
		}
	}
	return r, nil
}

// repo names a new repository on the origin, so that every image is cold.
func (e *env) repo(what string) string {
	e.seq++
	return fmt.Sprintf("crowd/%s-%d", what, e.seq)
}

// fleet is one mode's running nodes.
type fleet struct {
	mode    string
	nodes   []*harness.Node
	tracker *harness.Tracker
}

func (f *fleet) pids() []int {
	pids := make([]int, len(f.nodes))
	for i, n := range f.nodes {
		pids[i] = n.Pid()
	}
	return pids
}

func (f *fleet) close() error {
	err := harness.CloseNodes(f.nodes)
	if f.tracker != nil {
		err = errors.Join(err, f.tracker.Close())
	}
	return err
}

// runFleet starts mode's fleet, measures it idle, rolls each setting out to it, measures the
// data path, and in DHT mode runs the DHT check.
func (e *env) runFleet(ctx context.Context, mode string) (_ *Fleet, _ *LookupResult, err error) {
	dir := filepath.Join(e.dir, mode)
	begin := time.Now()
	f, err := e.start(ctx, mode, dir)
	if err != nil {
		return nil, nil, err
	}
	defer func() { err = errors.Join(err, f.close()) }()
	out := &Fleet{Mode: mode, StartSeconds: time.Since(begin).Seconds()}
	e.log("%s: %d nodes up and joined in %.1f s", mode, len(f.nodes), out.StartSeconds)

	if idle := e.cfg.IdleFor; idle > 0 {
		// The fleet idles a while first: the joins' routing-table work is not what idling
		// costs.
		if err := sleep(ctx, idle); err != nil {
			return nil, nil, err
		}
		cpu0 := harness.ProcessesCPU(f.pids())
		if err := sleep(ctx, idle); err != nil {
			return nil, nil, err
		}
		out.IdleCorePerNode = (harness.ProcessesCPU(f.pids()) - cpu0) / idle.Seconds() / float64(len(f.nodes))
		e.log("%s: idle, %.3f%% of a core per node", mode, 100*out.IdleCorePerNode)
	}

	if out.DataPathCPUPerGB, err = e.dataPath(ctx, f); err != nil {
		return nil, nil, err
	}
	e.log("%s: data path (one node serving, one pulling) %.2f CPU-s per GB", mode, out.DataPathCPUPerGB)

	for _, s := range e.cfg.Settings {
		r, err := e.rollout(ctx, f, s, out.DataPathCPUPerGB)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", s, err)
		}
		out.Rollouts = append(out.Rollouts, *r)
		e.log("%s %s: origin %.3fx, p50 %.2f s, max %.2f s (bound %.2f s, %.2fx), control plane %.3f%% of a core per node, %.1f CPU-s per GB",
			mode, s, r.OriginAmplification, r.P50Seconds, r.MaxSeconds, r.BoundSeconds, r.MaxSeconds/r.BoundSeconds,
			100*r.ControlCorePerNode, r.CPUSecondsPerGB)
	}
	var rss int64
	for _, n := range f.nodes {
		if m, err := harness.ProcessMemory(n.Pid()); err == nil {
			rss += m.RSS
		}
	}
	out.RSSMeanBytes = rss / int64(len(f.nodes))

	var lookup *LookupResult
	if mode == DHT && e.cfg.Lookups > 0 {
		if lookup, err = e.lookups(ctx, f); err != nil {
			return nil, nil, err
		}
		e.log("%s: DHT check, %d blobs, %d asks: %d reached the origin, of %d lookups %d found no holder and %d ran out of time, %d failed",
			mode, lookup.Blobs, lookup.Asked, lookup.OriginGets, lookup.Lookups, lookup.FoundNone, lookup.TimedOut, lookup.Failed)
	}
	return out, lookup, nil
}

// start runs the mode's nodes: DHT, the first node alone and every other one bootstrapping
// through it; Tracker, a tracker and every node given only its URL. It returns once every
// node has a peer.
func (e *env) start(ctx context.Context, mode, dir string) (_ *fleet, err error) {
	f := &fleet{mode: mode, nodes: make([]*harness.Node, e.cfg.Nodes)}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.close())
		}
	}()
	var extra []string
	first := 0
	switch mode {
	case DHT:
		if err := e.startNode(ctx, f, dir, 0, nil); err != nil {
			return f, err
		}
		st, err := f.nodes[0].Status(ctx)
		if err != nil {
			return f, err
		}
		if len(st.Addrs) == 0 {
			return f, errors.New("node 0: /status has no addrs to bootstrap from")
		}
		extra, first = []string{"--bootstrap", st.Addrs[0]}, 1
	case Tracker:
		if err := os.MkdirAll(filepath.Join(dir, "tracker"), 0o755); err != nil {
			return f, err
		}
		tr, err := harness.RunTracker(ctx, harness.TrackerOptions{
			DataDir: filepath.Join(dir, "tracker"), LogPath: filepath.Join(dir, "tracker.log"),
			Args: []string{"--log-level", "info"},
		})
		if err != nil {
			return f, err
		}
		f.tracker = tr
		extra = []string{"--tracker", tr.URL}
	default:
		return f, fmt.Errorf("no mode %q (have %s, %s)", mode, DHT, Tracker)
	}
	errs := make([]error, len(f.nodes))
	sem := make(chan struct{}, e.cfg.StartAtOnce)
	var wg sync.WaitGroup
	for i := first; i < len(f.nodes); i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = e.startNode(ctx, f, dir, i, extra)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return f, err
	}
	for i, n := range f.nodes {
		err := harness.Poll(ctx, "a peer", time.Minute, func() error {
			st, err := n.Status(ctx)
			if err != nil {
				return err
			}
			if st.Peers < 1 {
				return errors.New("no peer")
			}
			return nil
		})
		if err != nil {
			return f, fmt.Errorf("node %d: %w", i, err)
		}
	}
	return f, nil
}

func (e *env) startNode(ctx context.Context, f *fleet, dir string, i int, extra []string) error {
	name := "node-" + strconv.Itoa(i)
	data := filepath.Join(dir, name)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	args := []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--chunk-size", e.cfg.ChunkSize, "--log-level", e.cfg.LogLevel}
	if e.cfg.Profile != "" {
		args = append(args, "--pprof")
	}
	n, err := harness.RunNode(ctx, harness.NodeOptions{
		Binary:       e.bin,
		DataDir:      data,
		LogPath:      filepath.Join(dir, name+".log"),
		Origin:       e.proxy.URL,
		Args:         append(args, extra...),
		ReadyTimeout: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	f.nodes[i] = n
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}
