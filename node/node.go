// Package node composes a shoal node: the disk store, the downloader, the upstream client,
// the /v2 mirror and the admin endpoints. It owns their lifecycle.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/internal/serve"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
)

// Config is everything a node needs; cmd/shoal fills it from flags and the config file.
type Config struct {
	// RegistryAddr is where the /v2 mirror listens (host:port; port 0 picks one).
	RegistryAddr string
	// AdminAddr is where /metrics, /healthz, /readyz and /status listen; "" disables them.
	AdminAddr string
	// DataDir holds the blob cache.
	DataDir string
	// CacheSize caps the cache in bytes; 0 means unlimited.
	CacheSize int64
	// ChunkSize is the unit of resumable transfer; 0 means the default (4 MiB).
	ChunkSize int64
	// Origin is the registry URL used for requests that carry no ns.
	Origin string
	// Upstreams maps registry hosts (as containerd sends them in ns) to their URLs.
	Upstreams map[string]string
	// DockerConfig is a docker config.json with credentials for upstreams; "" is anonymous.
	DockerConfig string
	// TagTTL is how long a tag's resolution is reused before asking the origin again.
	TagTTL time.Duration
	// TagMaxStale is how long a resolved tag may still be served while the origin is down.
	TagMaxStale time.Duration
	// P2PListen are libp2p multiaddrs to listen on (e.g. /ip4/0.0.0.0/tcp/5082); empty
	// keeps the node out of any fleet.
	P2PListen []string
	// Bootstrap are multiaddrs ending in /p2p/<id> of nodes to join the fleet through.
	Bootstrap []string
	// BootstrapDNS is NAME[:PORT], a name whose A/AAAA records are fleet nodes (a Kubernetes
	// headless Service); the node learns each one's addrs from its /status on PORT (default
	// 5081, the admin port). It adds to Bootstrap.
	BootstrapDNS string
	// Trackers are base URLs of optional trackers (shoal tracker): the node announces its
	// downloads and blobs to them, learns the members of each swarm from them, takes origin
	// leases from them and, without Bootstrap or BootstrapDNS, joins the fleet through the
	// peers their /bootstrap lists: /readyz waits for that first attempt, and a node no
	// tracker answered (or whose peers it could not reach) starts alone, ready, and tries
	// again every 10 s while it has no fleet peer. When none answers the node goes on with
	// the DHT alone. Needs P2PListen.
	Trackers []string
	// Pprof serves Go profiles at /debug/pprof/ on the admin address.
	Pprof bool
	// Identity is the file holding the node's libp2p key, created if absent; "" means
	// DataDir/identity.
	Identity string
	// UploadLimit caps the bytes per second the node sends to peers; 0 is unlimited.
	UploadLimit int64
	// PSK is a private network key file (/key/swarm/psk/1.0.0/ format): only nodes with the
	// same key connect. "" means none.
	PSK string
	// Version is reported by /status.
	Version string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// Defaults for Config fields left zero.
const (
	DefaultTagTTL      = 5 * time.Second
	DefaultTagMaxStale = 24 * time.Hour
)

// Node is a running shoal node.
type Node struct {
	cfg        Config
	log        *slog.Logger
	metrics    *prometheus.Registry
	store      *store.Store
	origin     *origin.Client
	downloader *swarm.Downloader
	link       *fleetLink // nil when the node is not in a fleet
	tags       *tagCache
	flight     singleflight.Group
	fleet      *fleet       // nil when the node is not in a fleet
	tracker    *trackerLink // nil without trackers
	registries []string

	registryLn net.Listener
	adminLn    net.Listener
	registry   *http.Server
	admin      *http.Server
	ready      chan struct{}
}

// New checks cfg, opens the store and binds the listeners; Run serves.
func New(cfg Config) (*Node, error) {
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
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory configured")
	}
	upstreams, def, err := upstreamTable(cfg.Origin, cfg.Upstreams)
	if err != nil {
		return nil, err
	}

	n := &Node{cfg: cfg, log: log, metrics: prometheus.NewRegistry(), ready: make(chan struct{})}
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	n.store, err = store.Open(store.Options{Dir: cfg.DataDir, Capacity: cfg.CacheSize, Logger: log, OnEvict: n.evicted})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	n.registerStoreMetrics()
	n.origin, err = origin.New(origin.Options{
		Upstreams:    upstreams,
		DockerConfig: cfg.DockerConfig,
		Logger:       log,
		UserAgent:    "shoal/" + cfg.Version,
	})
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("upstream client: %w", err)
	}
	var fleetOpt swarm.Fleet
	if len(cfg.P2PListen) > 0 {
		n.link = &fleetLink{}
		fleetOpt = n.link
		if len(cfg.Trackers) > 0 {
			fleetOpt = leasingLink{n.link}
		}
	}
	n.downloader = swarm.New(swarm.Options{
		Store:       n.store,
		Origin:      n.origin,
		ChunkSize:   cfg.ChunkSize,
		Logger:      log,
		Registerer:  n.metrics,
		Fleet:       fleetOpt,
		OnChunkList: n.keepChunkList,
		OnCommit:    n.queueAnnounce,
	})
	n.tags = newTagCache(4096)
	for key := range upstreams {
		n.registries = append(n.registries, key)
	}
	api, err := registryapi.NewServer(registryapi.Options{
		Blobs:      n,
		Manifests:  n,
		Registries: n.registries,
		Default:    def,
		Logger:     log,
		Registerer: n.metrics,
	})
	if err != nil {
		n.store.Close()
		return nil, err
	}
	// What the origin did not have to send: cache hits served to clients, and bytes taken
	// from peers instead of the origin. Summed over a fleet, each byte counts once.
	n.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "shoal_origin_bytes_saved_total",
		Help: "Bytes the origin did not send for this node: blob bytes served from the cache plus bytes fetched from peers.",
	}, func() float64 { return float64(api.CacheBytesServed() + n.downloader.PeerBytes()) }))
	chunkSize := n.chunkSize()
	uploaded := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_chunk_uploaded_bytes_total", Help: "Chunk bytes sent to peers.",
	})
	n.metrics.MustRegister(uploaded)
	cs := chunkServer{store: n.store, downloader: n.downloader, chunkSize: chunkSize, uploaded: uploaded, log: log}
	if n.fleet, err = startFleet(cfg, cs, n.downloader.Hint, n.metrics); err != nil {
		n.store.Close()
		return nil, err
	}
	if n.link != nil {
		n.link.f = n.fleet
	}
	if err := n.startTracker(); err != nil {
		n.closeAll()
		return nil, err
	}
	prefetch, err := n.prefetchHandler()
	if err != nil {
		n.closeAll()
		return nil, err
	}
	n.registry = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	n.admin = &http.Server{Handler: n.adminHandler(prefetch), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}

	if n.registryLn, err = net.Listen("tcp", cfg.RegistryAddr); err != nil {
		n.closeAll()
		return nil, fmt.Errorf("registry listener: %w", err)
	}
	if cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			n.closeAll()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	return n, nil
}

// chunkSize is the chunk size the node uses with peers.
func (n *Node) chunkSize() int64 {
	if n.cfg.ChunkSize > 0 {
		return n.cfg.ChunkSize
	}
	return chunk.DefaultSize
}

// closeAll releases what New acquired, for a node that will not Run.
func (n *Node) closeAll() {
	if n.registryLn != nil {
		n.registryLn.Close()
	}
	if n.tracker != nil {
		n.tracker.client.Close()
	}
	if n.fleet != nil {
		n.fleet.net.Close()
	}
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
	if n.fleet != nil {
		defer n.fleet.net.Close()
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.downloader.Run(ctx) })
	if n.fleet != nil {
		g.Go(func() error { return n.runFleet(ctx) })
	}
	if n.tracker != nil {
		defer n.tracker.client.Close()
		g.Go(func() error { return n.runTracker(ctx) })
	}
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

// dockerHub is the registry key containerd sends for Docker Hub, and dockerHubURL its
// real endpoint.
const (
	dockerHub    = registryapi.DockerHub
	dockerHubURL = "https://registry-1.docker.io"
)

// upstreamTable turns --origin and --upstream into registry key -> URL, and picks the key
// used for requests without ns.
func upstreamTable(originURL string, upstreams map[string]string) (map[string]string, string, error) {
	table := make(map[string]string)
	for host, raw := range upstreams {
		key, err := registryapi.NormalizeNamespace(host)
		if err != nil {
			return nil, "", fmt.Errorf("upstream %q: not a registry host", host)
		}
		if raw == "" {
			raw = "https://" + host
			if key == dockerHub {
				raw = dockerHubURL
			}
		}
		u, err := parseUpstreamURL(raw)
		if err != nil {
			return nil, "", fmt.Errorf("upstream %s: %w", host, err)
		}
		table[key] = u
	}
	def := ""
	if originURL != "" {
		u, err := parseUpstreamURL(originURL)
		if err != nil {
			return nil, "", fmt.Errorf("origin: %w", err)
		}
		parsed, _ := url.Parse(u)
		if def, err = registryapi.NormalizeNamespace(parsed.Host); err != nil {
			return nil, "", fmt.Errorf("origin %q: not a registry host", originURL)
		}
		table[def] = u
	} else if _, ok := table[dockerHub]; ok {
		def = dockerHub
	}
	if len(table) == 0 {
		return nil, "", errors.New("no upstream configured: set --origin or --upstream")
	}
	return table, def, nil
}

func parseUpstreamURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return "", fmt.Errorf("%q is not a registry URL (want http[s]://host[:port])", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}
