// Package sim rolls an image out to a simulated fleet in virtual time. Every simulated node
// runs shoal's own code: the downloader engine and its policy (node/swarm), the store
// (node/store), the chunk server peers are answered from (node/fleet), and with a tracker
// the announcer (node/announce), the tracker client and the real tracker server. What is
// simulated is only what lies between them: links with a rate each way, one-way latency,
// the DHT's provider records (visible once a provide has gone through; a lookup returns a
// random sample of up to 20 of up to 100 records, as p2p.Router does), the origin behind
// its own link, and a tracker that answers one request at a time.
//
// Time is the fake clock of a testing/synctest bubble: Run must be called inside one
// (synctest.Test), and a rollout of minutes takes what the code's work takes. Bytes are
// scaled down: a chunk of Config.ChunkSize virtual bytes holds Config.RealChunk real ones,
// which every node really writes, hashes, verifies and serves; links carry the virtual size.
package sim

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/node/announce"
	"github.com/shoal-dev/shoal/node/fleet"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
	trackerclient "github.com/shoal-dev/shoal/tracker/client"
	"github.com/shoal-dev/shoal/tracker/server"
)

// Config is one scenario. Zero fields take the defaults in the comments.
type Config struct {
	Name  string
	Nodes int
	// Layers blobs of LayerSize virtual bytes each (4 of 256 MiB: a 1 GiB image).
	Layers    int
	LayerSize int64
	// ChunkSize is the virtual chunk size (4 MiB); RealChunk the real bytes in one (64).
	ChunkSize int64
	RealChunk int64
	// NodeRate is each node's link rate each way, OriginRate the origin's uplink, in
	// virtual bytes per second (1 Gbit/s and 250 Mbit/s).
	NodeRate   float64
	OriginRate float64
	// SlowEvery: every SlowEvery-th node has SlowFactor of NodeRate (0: none).
	SlowEvery  int
	SlowFactor float64
	// Latency is one way between any two parties (0.5 ms); OriginLatency the origin's time
	// to a first byte (5 ms).
	Latency       time.Duration
	OriginLatency time.Duration
	// LookupTime is one DHT lookup (100 ms); ProvideTime one provide, after which the record
	// is visible (300 ms).
	LookupTime  time.Duration
	ProvideTime time.Duration
	// Seeds is how many seeds each blob has in a fleet without a tracker (3); -1: none, every
	// member may fetch from the origin.
	Seeds int
	// UploadSlots caps the chunk requests a node serves at once, refusing more as busy, as
	// p2p.Exchange does (p2p.DefaultMaxUploads; -1: no cap).
	UploadSlots int
	// MaxRepeats is how many times a node sends one chunk within p2p.RepeatWindow, as
	// p2p.Exchange does (p2p.DefaultMaxRepeats; -1: no limit).
	MaxRepeats int
	// RepeatWindow is the span MaxRepeats counts over (p2p.RepeatWindow).
	RepeatWindow time.Duration
	// WatchEvery is the least time between two answers of a watch (p2p.WatchEvery).
	WatchEvery time.Duration
	// Tracker adds a tracker; TrackerService is its time per request (200 µs).
	Tracker        bool
	TrackerService time.Duration
	// Batches rolls the image out in that many equal batches, each starting when the one
	// before has finished (1: all at once).
	Batches int
	// LateEvery: every LateEvery-th node starts LateBy after the others (0: none).
	LateEvery int
	LateBy    time.Duration
	// DieFraction of the nodes, chosen at random, die DieAt after the start.
	DieFraction float64
	DieAt       time.Duration
	// Timeout ends a rollout still running after this virtual time (30 min).
	Timeout time.Duration
	Seed    uint64
	// Logger, if set, receives every node's log, each line with its node's index.
	Logger *slog.Logger
	// Dir holds the nodes' stores (a fresh directory under os.TempDir()).
	Dir string
}

func (c Config) withDefaults() Config {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defF := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Layers <= 0 {
		c.Layers = 4
	}
	if c.Batches <= 0 {
		c.Batches = 1
	}
	if c.Seeds == 0 {
		c.Seeds = 3
	}
	if c.UploadSlots == 0 {
		c.UploadSlots = p2p.DefaultMaxUploads
	}
	defD(&c.RepeatWindow, p2p.RepeatWindow)
	defD(&c.WatchEvery, p2p.WatchEvery)
	if c.MaxRepeats == 0 {
		c.MaxRepeats = p2p.DefaultMaxRepeats
	}
	def(&c.LayerSize, 256<<20)
	def(&c.ChunkSize, 4<<20)
	def(&c.RealChunk, 64)
	defF(&c.NodeRate, 125e6)
	defF(&c.OriginRate, 31.25e6)
	defF(&c.SlowFactor, 0.25)
	defD(&c.Latency, 500*time.Microsecond)
	defD(&c.OriginLatency, 5*time.Millisecond)
	defD(&c.LookupTime, 100*time.Millisecond)
	defD(&c.ProvideTime, 300*time.Millisecond)
	defD(&c.TrackerService, 200*time.Microsecond)
	defD(&c.Timeout, 30*time.Minute)
	return c
}

// Stats counts one node's requests.
type Stats struct {
	Haves, Watches, WatchAnswers, ChunkRequests, Lookups, Provides, OriginRequests, Announces, Leases, SeedAsks int64
}

type counters struct {
	Haves, Watches, WatchAnswers, ChunkRequests, Lookups, Provides, OriginRequests, Announces, Leases, SeedAsks atomic.Int64
}

// node is one simulated machine.
type node struct {
	id      string
	index   int
	up      *link
	down    *link
	store   *store.Store
	dl      *swarm.Downloader
	serve   p2p.ChunkStore
	tracker *announce.Tracker
	client  *trackerclient.Client
	stats   counters

	uploaded     atomic.Int64     // virtual bytes sent to peers
	fromOrigin   atomic.Int64     // virtual bytes taken from the origin
	originChunks sync.Map         // chunkKey -> true: the chunks it took from the origin
	upOrigin     atomic.Int64     // virtual bytes of those sent to peers
	uploading    atomic.Int64     // chunk requests being served
	repeats      *p2p.RepeatLimit // nil: no limit
	dead         atomic.Bool
	cancel       context.CancelFunc

	hubsMu  sync.Mutex
	hubs    map[digest.Digest]*watchHub // the watches it serves, by blob
	watches atomic.Int64                // how many

	start, done time.Time
	err         error
	retries     int   // pulls of a layer that failed and were tried again
	retryErr    error // the first of their errors
}

// chunkKey names one chunk of one blob.
type chunkKey struct {
	d     digest.Digest
	index int
}

// world is everything one rollout shares.
type world struct {
	cfg     Config
	scale   int64 // virtual bytes per real byte
	start   time.Time
	dht     dht
	origin  *origin
	tracker *trackerHost
	nodes   []*node
	byID    map[string]*node
	layers  []digest.Digest
	handles *store.Handles // every node's store shares the process's open files

	seedMu sync.Mutex
	seeds  map[digest.Digest][]string
}

// seedsOf returns the cfg.Seeds nodes closest to d's key by the DHT's metric, as
// p2p.Router.ClosestPeers finds them.
func (w *world) seedsOf(d digest.Digest) []string {
	w.seedMu.Lock()
	defer w.seedMu.Unlock()
	if s, ok := w.seeds[d]; ok {
		return slices.Clone(s)
	}
	ids := make([]string, len(w.nodes))
	for i, n := range w.nodes {
		ids[i] = n.id
	}
	sorted, err := p2p.ClosestTo(d, ids)
	if err != nil {
		panic(err) // the IDs are this world's own, the digest its layers'
	}
	out := sorted[:min(len(sorted), w.cfg.Seeds)]
	if w.seeds == nil {
		w.seeds = make(map[digest.Digest][]string)
	}
	w.seeds[d] = out
	return slices.Clone(out)
}

// Run rolls cfg's image out and reports how it went. It must be called inside a synctest
// bubble: outside one it would take the rollout's real time.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Nodes <= 0 {
		return nil, fmt.Errorf("sim: %d nodes", cfg.Nodes)
	}
	if cfg.ChunkSize%cfg.RealChunk != 0 || cfg.LayerSize%cfg.ChunkSize != 0 {
		return nil, fmt.Errorf("sim: chunk %d not a multiple of %d real bytes, or layer %d of chunks", cfg.ChunkSize, cfg.RealChunk, cfg.LayerSize)
	}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "shoal-sim-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	handles, err := storeHandles(cfg)
	if err != nil {
		return nil, err
	}
	w := &world{cfg: cfg, scale: cfg.ChunkSize / cfg.RealChunk, start: time.Now(), byID: make(map[string]*node), handles: handles}
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	w.origin = &origin{w: w, up: link{rate: cfg.OriginRate}, blobs: make(map[digest.Digest][]byte)}
	realLayer := cfg.LayerSize / w.scale
	for range cfg.Layers {
		b := make([]byte, realLayer)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		d := digest.FromBytes(b)
		w.origin.blobs[d] = b
		w.layers = append(w.layers, d)
	}
	if cfg.Tracker {
		srv, err := server.New(server.Options{})
		if err != nil {
			return nil, err
		}
		w.tracker = &trackerHost{w: w, srv: srv, seconds: make(map[int64]int)}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range cfg.Nodes {
		n, err := w.newNode(ctx, i, filepath.Join(dir, fmt.Sprint(i)), rng)
		if err != nil {
			cancel()
			return nil, err
		}
		w.nodes = append(w.nodes, n)
		w.byID[n.id] = n
	}
	for _, n := range w.nodes {
		nctx, ncancel := context.WithCancel(ctx)
		n.cancel = ncancel
		wg.Go(func() { w.runNode(nctx, n) })
	}
	defer func() {
		cancel()
		for _, n := range w.nodes {
			n.cancel()
		}
	}()
	w.rollout(ctx, rng)
	cancel()
	wg.Wait()
	for _, n := range w.nodes {
		if n.client != nil {
			n.client.Close()
		}
		if err := n.store.Close(); err != nil {
			return nil, err
		}
	}
	return w.result(), nil
}

func (w *world) newNode(ctx context.Context, i int, dir string, rng *rand.Rand) (*node, error) {
	signer, err := p2p.GenerateSigner(rngReader{rng})
	if err != nil {
		return nil, err
	}
	rate := w.cfg.NodeRate
	if w.cfg.SlowEvery > 0 && i%w.cfg.SlowEvery == w.cfg.SlowEvery-1 {
		rate *= w.cfg.SlowFactor
	}
	n := &node{id: signer.ID(), index: i, up: &link{rate: rate}, down: &link{rate: rate}}
	if n.store, err = store.Open(store.Options{Dir: dir, Handles: w.handles}); err != nil {
		return nil, err
	}
	m := &member{w: w, n: n, rng: rand.New(rand.NewPCG(rng.Uint64(), 1)), cache: make(map[digest.Digest]cached)}
	var f swarm.Fleet = m
	if w.tracker != nil {
		n.client, err = trackerclient.New(trackerclient.Options{
			URLs:       []string{"http://tracker.sim:5090"},
			Signer:     signer,
			PeerAddrs:  p2p.PeerAddrs,
			Addrs:      func() []string { return []string{"/ip4/127.0.0.1/tcp/5091/p2p/" + n.id} },
			HTTPClient: &http.Client{Transport: nodeTransport{t: w.tracker, n: n}},
		})
		if err != nil {
			return nil, err
		}
		n.tracker = announce.New(announce.Options{Client: n.client, Peers: noAddrs{}, ChunkSize: w.cfg.RealChunk})
		f = leasingMember{m}
	} else if w.cfg.Seeds > 0 {
		f = seedingMember{m}
	}
	n.dl = swarm.New(swarm.Options{
		Store:       n.store,
		Origin:      originClient{o: w.origin, n: n},
		ChunkSize:   w.cfg.RealChunk,
		Fleet:       f,
		Logger:      w.logger(i),
		MaxBuffered: max(1, (32<<20)/w.scale),
		OnChunkList: func(d digest.Digest, cs int64, list []digest.Digest) {
			_ = n.store.PutChunkList(d, cs, list) // as fleet.Member.KeepChunkList: a peer recomputes it otherwise
		},
		OnCommit: func(d digest.Digest) {
			if n.tracker != nil {
				n.tracker.Committed(d)
			}
		},
	})
	n.serve = fleet.NewChunkServer(n.store, n.dl, w.cfg.RealChunk, prometheus.NewCounter(prometheus.CounterOpts{Name: "uploaded"}), nil)
	if w.cfg.MaxRepeats > 0 {
		n.repeats = p2p.NewRepeatLimit(w.cfg.MaxRepeats, w.cfg.RepeatWindow)
	}
	return n, nil
}

// storeHandles is the pool of open files the nodes' stores share: what the process's limit
// leaves after each store's directory lock and a margin, and no more than the fleet's partial
// downloads could hold (a data file and a bitmap per layer per node). With fewer, the stores
// close files between uses and open them again, as a real node does past its own bound.
func storeHandles(cfg Config) (*store.Handles, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("sim: open-file limit: %w", err)
	}
	const margin, least = 512, 64
	spare := int64(lim.Cur) - int64(cfg.Nodes) - margin
	if spare < least {
		return nil, fmt.Errorf("sim: %d nodes hold %d store locks open, and the open-file limit is %d: raise ulimit -n", cfg.Nodes, cfg.Nodes, lim.Cur)
	}
	return store.NewHandles(int(min(spare, int64(2*cfg.Layers*cfg.Nodes)))), nil
}

// logger is node i's logger: the config's, or one that drops everything.
func (w *world) logger(i int) *slog.Logger {
	if w.cfg.Logger == nil {
		return nil
	}
	return w.cfg.Logger.With("node", i)
}

// runNode runs a node's daemons until ctx ends.
func (w *world) runNode(ctx context.Context, n *node) {
	var wg sync.WaitGroup
	wg.Go(func() { _ = n.dl.Run(ctx) })
	if n.tracker != nil {
		wg.Go(func() { _ = n.tracker.Run(ctx, n.store, n.dl) })
	}
	wg.Wait()
}

// rollout starts the pulls, batch by batch, kills the nodes due to die, and returns once
// every live node has finished or the timeout has passed.
func (w *world) rollout(ctx context.Context, rng *rand.Rand) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	order := rng.Perm(len(w.nodes))
	var dying []*node
	if w.cfg.DieFraction > 0 {
		for _, i := range rng.Perm(len(w.nodes))[:int(float64(len(w.nodes))*w.cfg.DieFraction)] {
			dying = append(dying, w.nodes[i])
		}
	}
	var kills sync.WaitGroup
	kills.Go(func() {
		if sleep(ctx, w.cfg.DieAt) != nil {
			return
		}
		for _, n := range dying {
			n.dead.Store(true)
			n.cancel()
		}
	})
	defer kills.Wait()
	per := (len(order) + w.cfg.Batches - 1) / w.cfg.Batches
	for b := 0; b*per < len(order); b++ {
		var pulls sync.WaitGroup
		for _, i := range order[b*per : min(len(order), (b+1)*per)] {
			n := w.nodes[i]
			pulls.Go(func() {
				if w.cfg.LateEvery > 0 && n.index%w.cfg.LateEvery == w.cfg.LateEvery-1 {
					if sleep(ctx, w.cfg.LateBy) != nil {
						return
					}
				}
				w.pull(ctx, n)
			})
		}
		pulls.Wait()
	}
}

// pull is a client pulling the image through node n: every layer at once, read to the end,
// each tried again a second after a failure, as a runtime's pull is retried.
func (w *world) pull(ctx context.Context, n *node) {
	n.start = time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, d := range w.layers {
		wg.Go(func() {
			for {
				err := w.read(ctx, n, d)
				if err == nil || ctx.Err() != nil || n.dead.Load() {
					if err != nil {
						mu.Lock()
						n.err = err
						mu.Unlock()
					}
					return
				}
				mu.Lock()
				n.retries++
				if n.retryErr == nil {
					n.retryErr = err
				}
				mu.Unlock()
				if sleep(ctx, time.Second) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if n.err == nil && !n.dead.Load() {
		n.done = time.Now()
	}
}

// read reads layer d through n's downloader and checks what came.
func (w *world) read(ctx context.Context, n *node, d digest.Digest) error {
	r, err := n.dl.Open(ctx, "origin.sim", "app", d)
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	// The hash takes no reader: a buffer of the copy's own, no longer than the real layer.
	buf := make([]byte, min(32<<10, max(r.Size(), 1)))
	if _, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, r.Size()), buf); err != nil {
		return err
	}
	if got := digest.NewDigest(digest.SHA256, h); got != d {
		return fmt.Errorf("layer %s read back as %s", d, got)
	}
	return nil
}

// nodeTransport is one node's way to the tracker, counting its requests.
type nodeTransport struct {
	t *trackerHost
	n *node
}

func (nt nodeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch kind(req.URL.Path) {
	case "announce":
		nt.n.stats.Announces.Add(1)
	case "lease":
		nt.n.stats.Leases.Add(1)
	}
	return nt.t.RoundTrip(req)
}

// noAddrs drops the addresses the tracker answers: simulated peers are reached by ID.
type noAddrs struct{}

func (noAddrs) AddAddrs(string, []string) {}

// rngReader reads from a seeded generator, so node identities are the same in every run.
type rngReader struct{ r *rand.Rand }

func (r rngReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}
