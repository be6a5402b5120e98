package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	kbucket "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Defaults of RouterOptions.
const (
	DefaultProtocolPrefix = "/shoal"
	DefaultFindTimeout    = 2 * time.Second
	DefaultMaxProviders   = 20
	DefaultCacheTTL       = 5 * time.Second
)

const (
	// refreshPeriod is how often the routing table is refreshed: every peer in
	// it pinged, and a walk for each bucket. A fleet's members come and go with
	// deployments, so it is refreshed more often than kad-dht's 10 min, but a
	// refresh costs a node some 250 messages at 100 nodes, and once a minute
	// that was most of an idle node's CPU (0.26% of a core each, against 0.03%
	// at 40 nodes). Between refreshes the table learns of new members from
	// their own lookups and announces, which reach it.
	refreshPeriod = 5 * time.Minute
	// refreshQueryTimeout bounds each refresh lookup.
	refreshQueryTimeout = 10 * time.Second
	// tablePollInterval is how often Bootstrap looks whether the routing
	// table has taken in a freshly connected peer; kad-dht adds peers
	// asynchronously once identify has run.
	tablePollInterval = 10 * time.Millisecond
	// tableWait bounds that wait: a reachable peer that still is not in
	// the table by then does not speak our DHT (another ProtocolPrefix).
	tableWait = 10 * time.Second
	// cacheEntries bounds the provider cache, least recently used out first:
	// far more blobs than a node looks up within CacheTTL. (The expirable LRU
	// of golang-lru is not used: each one runs a goroutine that never ends,
	// and its clock cannot be set by a test.)
	cacheEntries = 4096
	// samplePool: FindProviders gathers up to this many times MaxProviders
	// records and returns a random MaxProviders of them.
	samplePool = 5
)

// RecordLifetime is how long a provider record lasts in the fleet's DHT
// unless renewed: holders must announce again well within it.
const RecordLifetime = 4 * time.Hour

// ErrLookupTimeout reports a FindProviders lookup that ran out of FindTimeout before any
// member answered it, having found nobody: not knowing who holds a blob is not knowing that
// nobody does, and a caller should look again rather than take the blob from its origin.
var ErrLookupTimeout = errors.New("lookup ran out of time before any member answered")

// ErrNoBootstrapPeer reports that bootstrap peers were given but none of them
// could be reached, or none that could speaks the same DHT.
var ErrNoBootstrapPeer = errors.New("no bootstrap peer reachable")

// RouterOptions configure NewRouter. Zero fields take the defaults above.
type RouterOptions struct {
	// Bootstrap are multiaddrs ending in /p2p/<id> of peers to join through,
	// typically another node's Addrs. They are also where the DHT turns
	// again if its routing table ever empties.
	Bootstrap []string
	// ProtocolPrefix separates shoal's DHT from any other on the same
	// network; nodes with different prefixes do not see each other.
	ProtocolPrefix string
	// FindTimeout bounds one FindProviders lookup.
	FindTimeout time.Duration
	// MaxProviders is the most peers FindProviders returns: a random sample
	// when more are found, so the members of a large swarm spread over each
	// other instead of all asking the first few.
	MaxProviders int
	// CacheTTL is how long a non-empty FindProviders result is reused.
	CacheTTL time.Duration
	// Logger receives lifecycle and per-lookup messages; nil discards them.
	Logger *slog.Logger
	// Registerer receives the router's metrics; nil means none are exported.
	Registerer prometheus.Registerer
}

// Peer is a node that holds a blob, and the addresses it can be reached at
// (multiaddrs without the /p2p part).
type Peer struct {
	ID    string
	Addrs []string
}

// Router announces and finds blobs in the fleet's Kademlia DHT.
type Router struct {
	h            host.Host
	dht          *dht.IpfsDHT
	bootstrap    []peer.AddrInfo
	findTimeout  time.Duration
	maxProviders int
	cacheTTL     time.Duration
	log          *slog.Logger
	now          func() time.Time // replaced in tests
	tableWait    time.Duration    // shortened in tests
	findSeconds  *prometheus.HistogramVec
	walks        *prometheus.CounterVec
	cache        *lru.Cache[digest.Digest, cacheEntry]

	// ctx ends with Close, and the walks shared between callers with it.
	ctx  context.Context
	stop context.CancelFunc
	// pm sends single DHT messages: announces and lookups at a key's closest members.
	pm       *pb.ProtocolMessenger
	closest  *lru.Cache[string, closestEntry] // by DHT key
	walking  singleflight.Group               // walks for closest members, by DHT key
	provided *lru.Cache[digest.Digest, time.Time]
}

type cacheEntry struct {
	peers   []Peer
	expires time.Time
}

// NewRouter starts a DHT node in server mode on h. It does not connect to
// anyone; call Bootstrap for that. The caller keeps ownership of h and closes
// it after Router.Close.
func NewRouter(h host.Host, o RouterOptions) (*Router, error) {
	r := &Router{
		h:            h,
		findTimeout:  o.FindTimeout,
		maxProviders: o.MaxProviders,
		cacheTTL:     o.CacheTTL,
		log:          o.Logger,
		now:          time.Now,
		tableWait:    tableWait,
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	cache, err := lru.New[digest.Digest, cacheEntry](cacheEntries)
	if err != nil {
		return nil, err
	}
	r.cache = cache
	if r.closest, err = lru.New[string, closestEntry](closestEntries); err != nil {
		return nil, err
	}
	if r.provided, err = lru.New[digest.Digest, time.Time](cacheEntries); err != nil {
		return nil, err
	}
	if r.findTimeout <= 0 {
		r.findTimeout = DefaultFindTimeout
	}
	if r.maxProviders <= 0 {
		r.maxProviders = DefaultMaxProviders
	}
	if r.cacheTTL <= 0 {
		r.cacheTTL = DefaultCacheTTL
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.findSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "shoal_dht_find_duration_seconds",
		Help:    "Time of DHT provider lookups that reached the network, by result: found (a holder), none (the network answered: nobody), timeout (no answer in time).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"result"})
	r.walks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_dht_walks_total",
		Help: "Iterative DHT lookups started, by what they looked for: a key's closest members (announces, seeds) or a blob's holders when its closest members were not known.",
	}, []string{"kind"})
	for _, k := range []string{walkClosest, walkProviders} {
		r.walks.WithLabelValues(k)
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{r.findSeconds, r.walks} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register dht metrics: %w", err)
			}
		}
	}
	prefix := o.ProtocolPrefix
	if prefix == "" {
		prefix = DefaultProtocolPrefix
	}
	bootstrap, err := parseBootstrap(o.Bootstrap)
	if err != nil {
		return nil, err
	}
	r.bootstrap = slices.DeleteFunc(bootstrap, func(ai peer.AddrInfo) bool { return ai.ID == h.ID() })

	// No BootstrapPeers option means kad-dht knows no peers of its own: the
	// public IPFS bootstrappers are never contacted.
	d, err := dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(protocol.ID(prefix)),
		dht.BootstrapPeers(r.bootstrap...),
		dht.RoutingTableRefreshPeriod(refreshPeriod),
		dht.RoutingTableRefreshQueryTimeout(refreshQueryTimeout),
		// A fleet's nodes store each other's records: a node that evicted a blob stops
		// renewing its record, which then lapses within this time.
		dht.ProviderManagerOpts(records.ProvideValidity(RecordLifetime)),
	)
	if err != nil {
		return nil, fmt.Errorf("start dht: %w", err)
	}
	r.dht = d
	if r.pm, err = pb.NewProtocolMessenger(d.MessageSender()); err != nil {
		d.Close()
		return nil, fmt.Errorf("start dht: %w", err)
	}
	r.log.Info("dht started", "peer", h.ID().String(), "protocol", prefix, "bootstrap", len(r.bootstrap))
	return r, nil
}

func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	mas := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w", s, err)
		}
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w", s, err)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("bootstrap addresses: %w", err)
	}
	return infos, nil
}

// Bootstrap connects to the bootstrap peers, and to extra (multiaddrs ending
// in /p2p/<id>, such as those learned through DNS; malformed ones are
// skipped), and fills the routing table from them. A peer that cannot be
// reached is logged and skipped; the call fails only when peers were given
// and none could be reached. When it returns nil with peers given, the
// routing table holds at least one of them.
func (r *Router) Bootstrap(ctx context.Context, extra ...string) error {
	peers := slices.Clone(r.bootstrap)
	for _, s := range extra {
		infos, err := parseBootstrap([]string{s})
		if err != nil {
			r.log.Warn("bootstrap address skipped", "err", err)
			continue
		}
		if infos[0].ID != r.h.ID() {
			peers = append(peers, infos[0])
		}
	}
	if len(peers) == 0 {
		return nil
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		reached int
		errs    []error
	)
	for _, ai := range peers {
		wg.Go(func() {
			err := r.h.Connect(ctx, ai)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("connect %s: %w", ai.ID, err))
				r.log.Warn("bootstrap peer unreachable", "peer", ai.ID.String(), "err", err)
				return
			}
			reached++
		})
	}
	wg.Wait()
	if reached == 0 {
		return fmt.Errorf("bootstrap: %w: %w", ErrNoBootstrapPeer, errors.Join(errs...))
	}
	if err := r.waitForTable(ctx); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	// The refresh looks up our own neighbourhood through the bootstrap peers,
	// so the table also learns of nodes we did not connect to directly.
	select {
	case err := <-r.dht.RefreshRoutingTable():
		if err != nil {
			r.log.Warn("routing table refresh", "err", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("bootstrap: %w", ctx.Err())
	}
	r.log.Info("dht bootstrapped", "peers", r.dht.RoutingTable().Size(), "reached", reached)
	return nil
}

// waitForTable waits until the routing table holds a peer. kad-dht adds a
// peer only after identify has confirmed it speaks the DHT protocol, which
// happens asynchronously after Connect returns.
func (r *Router) waitForTable(ctx context.Context) error {
	t := time.NewTicker(tablePollInterval)
	defer t.Stop()
	limit := time.NewTimer(r.tableWait)
	defer limit.Stop()
	for r.dht.RoutingTable().Size() == 0 {
		select {
		case <-t.C:
		case <-limit.C:
			return fmt.Errorf("%w: reached peers are not in the routing table after %v", ErrNoBootstrapPeer, r.tableWait)
		case <-ctx.Done():
			return fmt.Errorf("wait for routing table: %w", ctx.Err())
		}
	}
	return nil
}

// Provide announces that this node holds d, or is downloading it, to the members closest to
// d's key. Records expire in the DHT after RecordLifetime, so a node re-announces what it
// keeps; a Provide within provideFresh of a successful one does nothing.
func (r *Router) Provide(ctx context.Context, d digest.Digest) error {
	key, err := Key(d)
	if err != nil {
		return fmt.Errorf("provide: %w", err)
	}
	if at, ok := r.provided.Get(d); ok && r.now().Sub(at) < provideFresh {
		return nil
	}
	start := time.Now()
	if err := r.provide(ctx, d, key.Hash()); err != nil {
		return fmt.Errorf("provide %s: %w", d, err)
	}
	r.log.Debug("provided", "digest", d, "duration", time.Since(start))
	return nil
}

// ClosestPeers returns the k fleet members, this node among them if it is one, whose IDs are
// closest to d's key in the DHT's XOR metric, closest first: the peers that hold d's provider
// records, and the same set for every node that asks (a blob's seeds).
func (r *Router) ClosestPeers(ctx context.Context, d digest.Digest, k int) ([]string, error) {
	key, err := Key(d)
	if err != nil {
		return nil, fmt.Errorf("closest peers: %w", err)
	}
	target := string(key.Hash())
	ids, err := r.closestPeers(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("closest peers of %s: %w", d, err)
	}
	// The lookup leaves this node out; a node among the closest must count itself in, as
	// the others count it.
	ids = append(slices.Clone(ids), r.h.ID())
	out := closest(ids, target)
	return out[:min(k, len(out))], nil
}

// closest orders ids by their distance to the DHT key target, closest first.
func closest(ids []peer.ID, target string) []string {
	ids = kbucket.SortClosestPeers(ids, kbucket.ConvertKey(target))
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// ClosestTo orders peer IDs by their distance to d's key in the DHT's XOR metric, closest
// first, as ClosestPeers does: for a test, or a simulation, that knows every member.
func ClosestTo(d digest.Digest, ids []string) ([]string, error) {
	key, err := Key(d)
	if err != nil {
		return nil, err
	}
	pids := make([]peer.ID, len(ids))
	for i, s := range ids {
		if pids[i], err = peer.Decode(s); err != nil {
			return nil, fmt.Errorf("peer ID %q: %w", s, err)
		}
	}
	return closest(pids, string(key.Hash())), nil
}

// FindProviders returns up to MaxProviders other peers that announced d. It
// returns as soon as the DHT lookup completes, so a blob nobody holds is a
// quick empty answer in a small fleet, and never waits longer than
// FindTimeout; what was found by then is returned without an error, and
// nothing found by then with ErrLookupTimeout.
// Non-empty results are cached for CacheTTL. Empty ones are not: during a
// rollout a provider typically appears moments after the first miss.
func (r *Router) FindProviders(ctx context.Context, d digest.Digest) ([]Peer, error) {
	return r.find(ctx, d, true)
}

// FindProvidersFresh is FindProviders without the cache: it always looks d
// up in the DHT, for a caller that must not miss a provider that appeared
// within CacheTTL. Its result replaces the cached one, which an empty result
// drops.
func (r *Router) FindProvidersFresh(ctx context.Context, d digest.Digest) ([]Peer, error) {
	return r.find(ctx, d, false)
}

// find looks d up, first in the cache when useCache is set, and caches what
// the DHT lookup returns.
func (r *Router) find(ctx context.Context, d digest.Digest, useCache bool) ([]Peer, error) {
	key, err := Key(d)
	if err != nil {
		return nil, fmt.Errorf("find providers: %w", err)
	}
	if useCache {
		if peers, ok := r.cached(d); ok {
			r.log.Debug("providers cached", "digest", d, "peers", len(peers))
			return peers, nil
		}
	}

	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, r.findTimeout)
	defer cancel()
	// The closest members of the key, when known, are asked directly: they hold the
	// records, and their answer stands, "nobody" included. The walk is for when they are
	// not known or do not answer.
	peers, answered := r.askHolders(qctx, key.Hash())
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("find providers of %s: %w", d, err)
	}
	if answered {
		return r.found(d, start, peers), nil
	}
	// Every node walking gets the records in about the same order: were each
	// to keep the first MaxProviders, a large swarm would all fetch from its
	// first few members. So a wider set is gathered and a random sample kept.
	// One more than that, since our own record may be among them.
	pool := r.maxProviders * samplePool
	r.walks.WithLabelValues(walkProviders).Inc()
	ch := r.dht.FindProvidersAsync(qctx, key, pool+1)
	for ai := range ch {
		if ai.ID == r.h.ID() || len(peers) == pool {
			continue
		}
		peers = append(peers, peerOf(ai))
		if len(peers) == pool {
			// Stop the lookup and keep draining: the channel closes
			// once its goroutine has returned.
			cancel()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("find providers of %s: %w", d, err)
	}
	if len(peers) == 0 && errors.Is(qctx.Err(), context.DeadlineExceeded) {
		r.findSeconds.WithLabelValues(findTimedOut).Observe(time.Since(start).Seconds())
		r.log.Debug("providers lookup ran out of time", "digest", d, "duration", time.Since(start))
		return nil, fmt.Errorf("find providers of %s: %w", d, ErrLookupTimeout)
	}
	return r.found(d, start, peers), nil
}

// found samples MaxProviders of the peers a lookup of d found, records the lookup and caches
// its result.
func (r *Router) found(d digest.Digest, start time.Time, peers []Peer) []Peer {
	if len(peers) > r.maxProviders {
		rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		peers = peers[:r.maxProviders]
	}
	result := findFound
	if len(peers) == 0 {
		result = findNone
	}
	r.findSeconds.WithLabelValues(result).Observe(time.Since(start).Seconds())
	r.log.Debug("providers found", "digest", d, "peers", len(peers), "duration", time.Since(start))
	r.store(d, peers)
	return clonePeers(peers)
}

func (r *Router) cached(d digest.Digest) ([]Peer, bool) {
	e, ok := r.cache.Get(d)
	if !ok {
		return nil, false
	}
	if !r.now().Before(e.expires) {
		// Left for the next store or the LRU to replace: removing it here could remove a
		// fresh entry stored meanwhile.
		return nil, false
	}
	return clonePeers(e.peers), true
}

// clonePeers copies deeply so callers cannot alter the cache.
func clonePeers(peers []Peer) []Peer {
	out := make([]Peer, len(peers))
	for i, p := range peers {
		out[i] = Peer{ID: p.ID, Addrs: slices.Clone(p.Addrs)}
	}
	return out
}

// store caches the result of a lookup of d. An empty one is not cached, and
// drops whatever was: the cache never answers with peers the DHT no longer
// gave.
func (r *Router) store(d digest.Digest, peers []Peer) {
	if len(peers) == 0 {
		r.cache.Remove(d)
		return
	}
	r.cache.Add(d, cacheEntry{peers: peers, expires: r.now().Add(r.cacheTTL)})
}

// Close stops the DHT. It does not close the host.
func (r *Router) Close() error {
	r.stop()
	if err := r.dht.Close(); err != nil {
		return fmt.Errorf("close dht: %w", err)
	}
	return nil
}
