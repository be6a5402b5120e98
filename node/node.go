// Package node composes a shoal node: the disk store, the upstream client, the downloader,
// the mirror the /v2 edge serves from, the node's membership in a fleet and its trackers,
// and the admin endpoints. It builds them in dependency order and owns their lifecycle; the
// work itself is done in the packages it wires (mirror, fleet, announce, swarm, store, p2p).
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/internal/serve"
	"github.com/shoal-dev/shoal/node/announce"
	"github.com/shoal-dev/shoal/node/fleet"
	"github.com/shoal-dev/shoal/node/mirror"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
	trackerclient "github.com/shoal-dev/shoal/tracker/client"
)

// membership is what the node needs of its fleet: a fleet.Member, or fleet.None.
type membership interface {
	mirror.Peers
	Status() fleet.Status
	Ready() bool
	Announce(d digest.Digest)
	KeepChunkList(d digest.Digest, chunkSize int64, list []digest.Digest)
	Swarm() swarm.Fleet
	Serve(dl *swarm.Downloader, uploaded prometheus.Counter) error
	Run(ctx context.Context) error
	Close() error
}

var (
	_ membership = (*fleet.Member)(nil)
	_ membership = fleet.None{}
)

// Node is a running shoal node.
type Node struct {
	cfg        Config
	log        *slog.Logger
	metrics    *prometheus.Registry
	store      *store.Store
	origin     *origin.Client
	downloader *swarm.Downloader
	mirror     *mirror.Mirror
	fleet      membership
	tracker    announce.Announcer
	registries []string

	registryLn net.Listener
	adminLn    net.Listener
	registry   *http.Server
	admin      *http.Server
	ready      chan struct{}
}

// New checks cfg, opens the store, joins nothing yet and binds the listeners; Run serves.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.TagTTL == 0 {
		cfg.TagTTL = DefaultTagTTL
	}
	if cfg.TagMaxStale == 0 {
		cfg.TagMaxStale = DefaultTagMaxStale
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = chunk.DefaultSize
	}
	upstreams, def, err := upstreamTable(cfg.Origin, cfg.Upstreams)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, metrics: prometheus.NewRegistry(), ready: make(chan struct{})}
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var undo closers
	defer undo.run() // on failure; emptied on success

	network, err := startNetwork(cfg, n.metrics)
	if err != nil {
		return nil, err
	}
	if network != nil {
		undo.add(network.Close)
	}
	n.tracker = announce.Disabled{}
	if len(cfg.Trackers) > 0 {
		if n.tracker, err = startTracker(cfg, network, n.metrics, log); err != nil {
			return nil, err
		}
		undo.add(func() error { n.tracker.Close(); return nil })
	}
	n.store, err = store.Open(store.Options{Dir: cfg.DataDir, Capacity: cfg.CacheSize, Logger: log, OnEvict: n.tracker.Gone})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	undo.add(n.store.Close)
	n.registerStoreMetrics()
	n.origin, err = origin.New(origin.Options{Upstreams: upstreams, DockerConfig: cfg.DockerConfig, Logger: log, UserAgent: "shoal/" + cfg.Version})
	if err != nil {
		return nil, fmt.Errorf("upstream client: %w", err)
	}
	n.fleet = fleet.None{}
	if network != nil {
		n.fleet = fleet.New(fleet.Options{
			Network: network, Store: n.store, ChunkSize: cfg.ChunkSize, Bootstrap: cfg.Bootstrap,
			BootstrapDNS: cfg.BootstrapDNS, Tracker: n.tracker, Trackers: len(cfg.Trackers) > 0,
			Logger: log, Registerer: n.metrics,
		})
	}
	n.downloader = swarm.New(swarm.Options{
		Store:       n.store,
		Origin:      n.origin,
		ChunkSize:   cfg.ChunkSize,
		Logger:      log,
		Registerer:  n.metrics,
		Fleet:       n.fleet.Swarm(),
		OnChunkList: n.fleet.KeepChunkList,
		OnCommit:    n.fleet.Announce,
	})
	uploaded := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_chunk_uploaded_bytes_total", Help: "Chunk bytes sent to peers.",
	})
	n.metrics.MustRegister(uploaded)
	if err := n.fleet.Serve(n.downloader, uploaded); err != nil {
		return nil, err
	}
	if n.mirror, err = mirror.New(mirror.Options{
		Store: n.store, Downloads: n.downloader, Origin: n.origin, Peers: n.fleet,
		TagTTL: cfg.TagTTL, TagMaxStale: cfg.TagMaxStale, OnStored: n.fleet.Announce, Logger: log,
	}); err != nil {
		return nil, err
	}
	for key := range upstreams {
		n.registries = append(n.registries, key)
	}
	api, err := registryapi.NewServer(registryapi.Options{
		Blobs: n.mirror, Manifests: n.mirror, Registries: n.registries, Default: def, Logger: log, Registerer: n.metrics,
	})
	if err != nil {
		return nil, err
	}
	// What the origin did not have to send: cache hits served to clients, and bytes taken
	// from peers instead of the origin. Summed over a fleet, each byte counts once.
	n.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "shoal_origin_bytes_saved_total",
		Help: "Bytes the origin did not send for this node: blob bytes served from the cache plus bytes fetched from peers.",
	}, func() float64 { return float64(api.CacheBytesServed() + n.downloader.PeerBytes()) }))
	prefetch, err := n.prefetchHandler()
	if err != nil {
		return nil, err
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	n.registry = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	n.admin = &http.Server{Handler: n.adminHandler(prefetch), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	if n.registryLn, err = net.Listen("tcp", cfg.RegistryAddr); err != nil {
		return nil, fmt.Errorf("registry listener: %w", err)
	}
	undo.add(n.registryLn.Close)
	if cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	undo = nil
	return n, nil
}

// startNetwork starts the libp2p side when cfg has listen addresses, or returns nil. It does
// not serve chunks yet: that waits for the store and the downloader.
func startNetwork(cfg Config, reg prometheus.Registerer) (*p2p.Network, error) {
	if len(cfg.P2PListen) == 0 {
		return nil, nil
	}
	var psk []byte
	if cfg.PSK != "" {
		var err error
		if psk, err = p2p.LoadPSK(cfg.PSK); err != nil {
			return nil, fmt.Errorf("private network key: %w", err)
		}
	}
	identity := cfg.Identity
	if identity == "" {
		identity = filepath.Join(cfg.DataDir, "identity")
	}
	network, err := p2p.Start(p2p.NetworkOptions{
		Host:     p2p.HostOptions{ListenAddrs: cfg.P2PListen, IdentityPath: identity, PSK: psk},
		Router:   p2p.RouterOptions{Bootstrap: cfg.Bootstrap, Registerer: reg},
		Exchange: p2p.ExchangeOptions{UploadLimit: float64(cfg.UploadLimit)},
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	return network, nil
}

// startTracker builds the announcer of cfg's trackers over network (Validate made sure
// there is one).
func startTracker(cfg Config, network *p2p.Network, reg prometheus.Registerer, log *slog.Logger) (*announce.Tracker, error) {
	signer, err := network.Signer()
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	client, err := trackerclient.New(trackerclient.Options{
		URLs: cfg.Trackers, Signer: signer, Addrs: network.Addrs, PeerAddrs: p2p.PeerAddrs, Registerer: reg, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return announce.New(announce.Options{Client: client, Peers: network, ChunkSize: cfg.ChunkSize, Logger: log}), nil
}

// closers undoes, last first, what New acquired before it failed.
type closers []func() error

func (c *closers) add(f func() error) { *c = append(*c, f) }

func (c closers) run() {
	for _, f := range slices.Backward(c) {
		_ = f() // New returns the error that made it undo; a second one would hide it
	}
}

// closeAll releases what New acquired, for a node that will not Run.
func (n *Node) closeAll() {
	n.registryLn.Close()
	if n.adminLn != nil {
		n.adminLn.Close()
	}
	n.tracker.Close()
	n.fleet.Close()
	n.store.Close()
}

// RegistryAddr is the address the /v2 mirror listens on.
func (n *Node) RegistryAddr() string { return n.registryLn.Addr().String() }

// AdminAddr is the address of the admin endpoints, or "" when they are off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// Run serves until ctx ends, then shuts down gracefully and closes the store.
func (n *Node) Run(ctx context.Context) error {
	defer n.store.Close()
	defer n.origin.CloseIdleConnections()
	defer n.fleet.Close()
	defer n.tracker.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.downloader.Run(ctx) })
	g.Go(func() error { return n.fleet.Run(ctx) })
	g.Go(func() error { return n.tracker.Run(ctx, n.store, n.downloader) })
	g.Go(func() error { return serve.HTTP(ctx, n.registry, n.registryLn) })
	if n.adminLn != nil {
		g.Go(func() error { return serve.HTTP(ctx, n.admin, n.adminLn) })
	}
	n.log.Info("node started", "registry", n.RegistryAddr(), "admin", n.AdminAddr(), "upstreams", strings.Join(n.registries, ","))
	close(n.ready)
	err := g.Wait()
	n.log.Info("node stopped")
	return err
}
