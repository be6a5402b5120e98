package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/p2p"
)

// reprovideInterval is how often a node re-announces every blob it holds: well within the
// lifetime of a DHT record, so records of what it holds never lapse, while those of blobs it
// evicted do.
const reprovideInterval = p2p.RecordLifetime / 4

// fleet is the node's membership in the fleet: the libp2p host and DHT, and the queue of
// blobs to announce.
type fleet struct {
	net      *p2p.Network
	announce chan digest.Digest
	joined   atomic.Bool
	needPeer bool // bootstrap peers were given: not ready until one is reached
	// bootstrapDNS names the fleet's nodes in DNS; "" for none.
	bootstrapDNS string
}

// startFleet builds the p2p side from cfg, serving chunks through cs and telling onHave of
// every peer asking about a blob, or returns nil when the node is not to join a fleet.
func startFleet(cfg Config, cs p2p.ChunkStore, onHave func(peer string, d digest.Digest), reg prometheus.Registerer) (*fleet, error) {
	if len(cfg.P2PListen) == 0 {
		if len(cfg.Bootstrap) > 0 || cfg.BootstrapDNS != "" {
			return nil, errors.New("bootstrap peers given but no p2p listen address")
		}
		if len(cfg.Trackers) > 0 {
			return nil, errors.New("tracker given but no p2p listen address")
		}
		return nil, nil
	}
	if cfg.BootstrapDNS != "" {
		if _, _, err := splitBootstrapTarget(cfg.BootstrapDNS); err != nil {
			return nil, fmt.Errorf("bootstrap dns: %w", err)
		}
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
	net, err := p2p.Start(p2p.NetworkOptions{
		Host:     p2p.HostOptions{ListenAddrs: cfg.P2PListen, IdentityPath: identity, PSK: psk},
		Router:   p2p.RouterOptions{Bootstrap: cfg.Bootstrap, Registerer: reg},
		Exchange: p2p.ExchangeOptions{Store: cs, UploadLimit: float64(cfg.UploadLimit), OnHave: onHave},
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_p2p_peers", Help: "Peers connected now.",
	}, func() float64 { return float64(net.Peers()) }))
	return &fleet{
		net: net, announce: make(chan digest.Digest, 1024), bootstrapDNS: cfg.BootstrapDNS,
		needPeer: len(cfg.Bootstrap) > 0 || cfg.BootstrapDNS != "" || len(cfg.Trackers) > 0,
	}, nil
}

// ready reports whether the node can serve as a fleet member: joined, or alone by design.
func (f *fleet) ready() bool { return f == nil || !f.needPeer || f.joined.Load() }

// queueAnnounce asks for d to be announced; it never blocks a download.
func (n *Node) queueAnnounce(d digest.Digest) {
	if n.fleet == nil {
		return
	}
	n.tracker.event(d, blobCommitted)
	select {
	case n.fleet.announce <- d:
	default:
		n.log.Debug("announce queue full, the next reprovide will cover it", "digest", d)
	}
}

// runFleet joins the fleet (retrying until it succeeds), announces what the node holds, and
// then announces new blobs as they come and everything held periodically.
func (n *Node) runFleet(ctx context.Context) error {
	f := n.fleet
	for attempt := 0; ; attempt++ {
		err := n.join(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := min(time.Second<<min(attempt, 5), 30*time.Second)
		n.log.Warn("cannot join the fleet yet", "err", err, "retry", wait)
		select {
		case <-time.After(wait + rand.N(wait/4+1)):
		case <-ctx.Done():
			return nil
		}
	}
	f.joined.Store(true)
	n.log.Info("joined the fleet", "peer", f.net.ID(), "peers", f.net.RoutingPeers())

	reprovide := time.NewTicker(reprovideInterval)
	defer reprovide.Stop()
	// A node alone cannot announce anything: when its first peer arrives (it started first,
	// or the fleet around it restarted), everything it holds is announced again.
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	alone := f.net.RoutingPeers() == 0
	lastJoin := time.Now()
	n.reprovide(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-f.announce:
			n.provide(ctx, d)
		case <-watch.C:
			now := f.net.RoutingPeers() == 0
			if alone && !now {
				n.log.Info("fleet peers found, announcing held blobs", "peers", f.net.RoutingPeers())
				n.reprovide(ctx)
			}
			alone = now
			if alone && time.Since(lastJoin) > rejoinEvery {
				// Started first, or the fleet went away: look for it again.
				lastJoin = time.Now()
				if err := n.join(ctx); err != nil && ctx.Err() == nil {
					n.log.Debug("still alone in the fleet", "err", err)
				}
			}
		case <-reprovide.C:
			n.reprovide(ctx)
		}
	}
}

// rejoinEvery is how often a node without fleet peers tries its bootstrap peers again.
const rejoinEvery = 10 * time.Second

// join connects to the bootstrap peers, those given and those DNS names. A name whose records
// are only this node (the first node of a fleet) means it is alone by design: that is no
// error, and the node looks again later.
func (n *Node) join(ctx context.Context) error {
	f := n.fleet
	if f.bootstrapDNS == "" && len(n.cfg.Bootstrap) == 0 && n.tracker != nil {
		return n.joinThroughTracker(ctx)
	}
	var extra []string
	if f.bootstrapDNS != "" {
		addrs, err := resolveBootstrapDNS(ctx, f.bootstrapDNS, net.DefaultResolver.LookupHost, nil, f.net.ID())
		switch {
		case err == nil:
			extra = addrs
		case errors.Is(err, errAlone) && len(n.cfg.Bootstrap) == 0:
			n.log.Info("no other fleet node in DNS yet, starting alone", "name", f.bootstrapDNS)
			return nil
		case len(n.cfg.Bootstrap) == 0:
			return err
		default:
			n.log.Warn("bootstrap dns", "err", err)
		}
	}
	return f.net.Router.Bootstrap(ctx, extra...)
}

// reprovide announces every blob in the store.
func (n *Node) reprovide(ctx context.Context) {
	var held []digest.Digest
	n.store.Walk(func(info store.Info) bool {
		held = append(held, info.Digest)
		return ctx.Err() == nil
	})
	for _, d := range held {
		n.provide(ctx, d)
	}
	n.log.Debug("announced held blobs", "blobs", len(held))
	// Blobs committed outside a fleet have no chunk list yet; working it out now (which also
	// checks each against its digest) spares the first peer asking for one the wait.
	cs := n.chunkSize()
	for _, d := range held {
		if ctx.Err() != nil {
			return
		}
		if _, err := n.store.ChunkList(d, cs); !errors.Is(err, store.ErrNoChunkList) {
			continue
		}
		if _, err := n.store.ComputeChunkList(ctx, d, cs); err != nil && ctx.Err() == nil {
			n.log.Warn("chunk list", "digest", d, "err", err)
		}
	}
}

func (n *Node) provide(ctx context.Context, d digest.Digest) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.fleet.net.Router.Provide(ctx, d); err != nil && ctx.Err() == nil {
		n.log.Debug("announce failed", "digest", d, "err", err)
	}
}
