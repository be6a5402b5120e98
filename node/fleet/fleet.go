// Package fleet is a node's membership in its fleet: joining it (through bootstrap peers,
// a DNS name or the trackers, again while alone), announcing the blobs the node holds to the
// DHT, finding the holders of a blob, and serving this node's chunks to the others. It runs
// over a p2p.Network; a node outside any fleet uses None.
package fleet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/backoff"
	"github.com/shoal-dev/shoal/node/announce"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/p2p"
)

// reprovideInterval is how often a node re-announces every blob it holds: well within the
// lifetime of a DHT record, so records of what it holds never lapse, while those of blobs it
// evicted do.
const reprovideInterval = p2p.RecordLifetime / 4

// announcers is how many announces of one node run at once: a node committing an image's
// layers together announces them together, each as slow as its walk to the blob's closest
// members, and a re-announce of everything held does not hold up what just arrived.
const announcers = 4

// rejoinEvery is how often a node without fleet peers tries its bootstrap peers again.
const rejoinEvery = 10 * time.Second

// trackerJoinTimeout bounds joining the DHT through the peers a tracker gave.
const trackerJoinTimeout = 15 * time.Second

// joinRetry spaces the attempts to join a fleet that cannot be reached yet: 1 s doubling up
// to 30 s, plus up to a quarter more so that nodes restarted together spread out.
var joinRetry = backoff.Exponential{Base: 1250 * time.Millisecond, Max: 37500 * time.Millisecond, Jitter: 0.2}

// Options configure New. Network, Store and Tracker are required.
type Options struct {
	Network *p2p.Network
	Store   *store.Store
	// ChunkSize is the chunk size the node uses with peers.
	ChunkSize int64
	// Bootstrap are multiaddrs ending in /p2p/<id> to join through; BootstrapDNS a
	// NAME[:PORT] whose records are fleet nodes (see CheckBootstrapDNS).
	Bootstrap    []string
	BootstrapDNS string
	// Tracker is told of the blobs the fleet announces and asked for members and, without
	// other bootstrap sources, for peers to join through; announce.Disabled without trackers.
	Tracker announce.Announcer
	// Trackers says that Tracker talks to real trackers: the node is not ready before its
	// first attempt to join through them, and its downloads ask them for origin leases.
	Trackers   bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Member is a node's membership in its fleet.
type Member struct {
	net          *p2p.Network
	store        *store.Store
	tracker      announce.Announcer
	chunkSize    int64
	bootstrap    []string
	bootstrapDNS string
	log          *slog.Logger
	announce     chan digest.Digest
	joined       atomic.Bool
	needPeer     bool // bootstrap sources were given: not ready until the first join attempt
	leases       bool // downloads ask the trackers for origin leases
	seedCache    *lru.Cache[digest.Digest, seedEntry]
	// sent counts the requests the node's downloads send to the fleet, by kind: the
	// control plane's cost per node, next to the chunks themselves.
	sent *prometheus.CounterVec
	// answers counts what the node's watches of peers brought.
	answers prometheus.Counter
}

// Request kinds counted in shoal_p2p_requests_total.
const (
	sentHave    = "have"    // HAVE: what a peer holds of a blob
	sentWatch   = "watch"   // WATCH: the same, told again at each change on one stream
	sentChunk   = "chunk"   // GET of one chunk
	sentProvide = "provide" // DHT announce of a blob
	sentFind    = "find"    // lookup of a blob's holders (tracker and DHT)
	sentSeeds   = "seeds"   // lookup of a blob's seeds (DHT closest peers, not cached)
	sentFetch   = "fetch"   // FETCH asking a seed to fetch a blob
)

// New returns the membership of o.Network's node; Run joins the fleet.
func New(o Options) *Member {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Member{
		net: o.Network, store: o.Store, tracker: o.Tracker, chunkSize: o.ChunkSize,
		bootstrap: o.Bootstrap, bootstrapDNS: o.BootstrapDNS, log: log,
		announce:  make(chan digest.Digest, 1024),
		leases:    o.Trackers,
		seedCache: newSeedCache(),
		needPeer:  len(o.Bootstrap) > 0 || o.BootstrapDNS != "" || o.Trackers,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_requests_total",
			Help: "Requests the node's downloads sent to the fleet, by kind: have, watch, chunk, provide, find, seeds, fetch.",
		}, []string{"kind"}),
		answers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_watch_answers_total",
			Help: "Answers the node's watches of peers brought: each says what a peer holds of a blob, unasked.",
		}),
	}
	for _, k := range []string{sentHave, sentWatch, sentChunk, sentProvide, sentFind, sentSeeds, sentFetch} {
		m.sent.WithLabelValues(k)
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(m.sent, m.answers, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_p2p_peers", Help: "Peers connected now.",
		}, func() float64 { return float64(m.net.Peers()) }))
	}
	return m
}

// Status is what the node reports of its membership.
type Status struct {
	PeerID string
	Addrs  []string
	Peers  int
	Joined bool
}

// Status reports the node's peer ID and addrs, its connected peers and whether it joined.
func (m *Member) Status() Status {
	return Status{PeerID: m.net.ID(), Addrs: m.net.Addrs(), Peers: m.net.Peers(), Joined: m.joined.Load()}
}

// Ready reports whether the node can serve as a fleet member: joined, or alone by design.
func (m *Member) Ready() bool { return !m.needPeer || m.joined.Load() }

// Close closes the network.
func (m *Member) Close() error { return m.net.Close() }

// Announce asks for d to be announced; it never blocks a download.
func (m *Member) Announce(d digest.Digest) {
	m.tracker.Committed(d)
	select {
	case m.announce <- d:
	default:
		m.log.Debug("announce queue full, the next reprovide will cover it", "digest", d)
	}
}

// Run joins the fleet (retrying until it succeeds), announces what the node holds, and
// then announces new blobs as they come and everything held periodically.
func (m *Member) Run(ctx context.Context) error {
	for failures := 1; ; failures++ {
		err := m.join(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := joinRetry.Delay(failures)
		m.log.Warn("cannot join the fleet yet", "err", err, "retry", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
	}
	m.joined.Store(true)
	m.log.Info("joined the fleet", "peer", m.net.ID(), "peers", m.net.RoutingPeers())

	// Announces run in the background, announcers at a time; Run returns once they ended.
	var running sync.WaitGroup
	defer running.Wait()
	slots := make(chan struct{}, announcers)
	provide := func(d digest.Digest) {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		running.Go(func() {
			defer func() { <-slots }()
			m.provide(ctx, d)
		})
	}
	// One re-announce of everything held at a time, beside the announces of new blobs.
	var reproviding atomic.Bool
	reprovideAll := func() {
		if !reproviding.CompareAndSwap(false, true) {
			return
		}
		running.Go(func() {
			defer reproviding.Store(false)
			m.reprovide(ctx, provide)
		})
	}

	reprovide := time.NewTicker(reprovideInterval)
	defer reprovide.Stop()
	// A node alone cannot announce anything: when its first peer arrives (it started first,
	// or the fleet around it restarted), everything it holds is announced again.
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	alone := m.net.RoutingPeers() == 0
	lastJoin := time.Now()
	reprovideAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-m.announce:
			provide(d)
		case <-watch.C:
			now := m.net.RoutingPeers() == 0
			if alone && !now {
				m.log.Info("fleet peers found, announcing held blobs", "peers", m.net.RoutingPeers())
				reprovideAll()
			}
			alone = now
			if alone && time.Since(lastJoin) > rejoinEvery {
				// Started first, or the fleet went away: look for it again.
				lastJoin = time.Now()
				if err := m.join(ctx); err != nil && ctx.Err() == nil {
					m.log.Debug("still alone in the fleet", "err", err)
				}
			}
		case <-reprovide.C:
			reprovideAll()
		}
	}
}

// join connects to the bootstrap peers, those given and those DNS names. A name whose records
// are only this node (the first node of a fleet) means it is alone by design: that is no
// error, and the node looks again later. Without either, the trackers give the peers.
func (m *Member) join(ctx context.Context) error {
	if m.bootstrapDNS == "" && len(m.bootstrap) == 0 {
		return m.joinThroughTracker(ctx)
	}
	var extra []string
	if m.bootstrapDNS != "" {
		addrs, err := resolveBootstrapDNS(ctx, m.bootstrapDNS, net.DefaultResolver.LookupHost, nil, m.net.ID())
		switch {
		case err == nil:
			extra = addrs
		case errors.Is(err, errAlone) && len(m.bootstrap) == 0:
			m.log.Info("no other fleet node in DNS yet, starting alone", "name", m.bootstrapDNS)
			return nil
		case len(m.bootstrap) == 0:
			return err
		default:
			m.log.Warn("bootstrap dns", "err", err)
		}
	}
	return m.net.Router.Bootstrap(ctx, extra...)
}

// joinThroughTracker joins the DHT through the peers the trackers give, for a node with no
// other bootstrap source. A node no tracker answers for, or whose peers cannot be reached,
// starts alone (ready: it serves from the origin) and Run tries again every rejoinEvery
// while it has no fleet peer. Without trackers the node is alone by design.
func (m *Member) joinThroughTracker(ctx context.Context) error {
	peers, err := m.tracker.Bootstrap(ctx)
	switch {
	case errors.Is(err, announce.ErrDisabled):
		return nil
	case err != nil:
		m.log.Warn("no tracker answered, starting alone and trying again", "err", err, "retry", rejoinEvery)
		return nil
	case len(peers) == 0:
		m.log.Info("the trackers know no fleet peer yet, starting alone")
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, trackerJoinTimeout)
	defer cancel()
	if err := m.net.Router.Bootstrap(jctx, peers...); err != nil && ctx.Err() == nil {
		m.log.Warn("no peer the trackers gave could be reached, starting alone and trying again", "err", err, "retry", rejoinEvery)
	}
	return nil
}

// reprovide announces every blob in the store through provide.
func (m *Member) reprovide(ctx context.Context, provide func(digest.Digest)) {
	var held []digest.Digest
	m.store.Walk(func(info store.Info) bool {
		held = append(held, info.Digest)
		return ctx.Err() == nil
	})
	for _, d := range held {
		provide(d)
	}
	m.log.Debug("announced held blobs", "blobs", len(held))
	// Blobs committed outside a fleet have no chunk list yet; working it out now (which also
	// checks each against its digest) spares the first peer asking for one the wait.
	for _, d := range held {
		if ctx.Err() != nil {
			return
		}
		if _, err := m.store.ChunkList(d, m.chunkSize); !errors.Is(err, store.ErrNoChunkList) {
			continue
		}
		if _, err := m.store.ComputeChunkList(ctx, d, m.chunkSize); err != nil && ctx.Err() == nil {
			m.log.Warn("chunk list", "digest", d, "err", err)
		}
	}
}

func (m *Member) provide(ctx context.Context, d digest.Digest) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.net.Router.Provide(ctx, d); err != nil && ctx.Err() == nil {
		m.log.Debug("announce failed", "digest", d, "err", err)
	}
}
