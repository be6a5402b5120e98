package p2p

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

// A blob's provider records live at the fleet members closest to its key. A download needs
// that set three times over (to announce itself there, to name the blob's seeds, and to ask
// who holds the blob), and kad-dht would walk the DHT afresh for each, a lookup of tens of
// messages each time: on a fleet where every node starts the same download at once, those
// walks were most of the control plane's work. So the set is looked up once and kept for
// closestTTL; announces go straight to its members, and lookups of holders ask a few of them
// directly, walking the DHT only when they know nobody.
const (
	// closestTTL is how long a key's closest members, once looked up, are taken as they were:
	// as long as a blob's seeds are (fleet.seedsTTL).
	closestTTL = time.Minute
	// closestTimeout bounds one walk for a key's closest members, shared by whoever waits;
	// one that runs out of time answers with the closest it found. It is below the 10 s a
	// download gives its seeds lookup (swarm's seedsLookupTimeout), so that a loaded fleet's
	// walks answer late rather than not at all.
	closestTimeout = 8 * time.Second
	// closestEntries bounds the cache, least recently used out first.
	closestEntries = 4096
	// provideFresh: a Provide of a blob within this long of a successful one does nothing;
	// the records stand for RecordLifetime, and a download announces its blob when it
	// starts and again when it commits.
	provideFresh = 10 * time.Minute
	// putTimeout bounds one ADD_PROVIDER, as kad-dht's own Provide does.
	putTimeout = 30 * time.Second
	// askClosest is how many of a key's closest members a lookup asks for holders, picked
	// at random among the first askAmong so that not every node asks the same ones (the
	// closest three are also the blob's seeds, the busiest uploaders).
	askClosest = 3
	askAmong   = 10
)

// Results of shoal_dht_find_duration_seconds.
const (
	findFound    = "found"
	findNone     = "none"
	findTimedOut = "timeout"
)

// Kinds of shoal_dht_walks_total.
const (
	walkClosest   = "closest"
	walkProviders = "providers"
)

type closestEntry struct {
	ids     []peer.ID // closest first, without this node
	expires time.Time
}

// closestPeers returns the members closest to key (a DHT key: the multihash's bytes), this
// node left out, from the cache or one walk shared by every caller. A walk that ran out of
// time still returns what it found, uncached.
func (r *Router) closestPeers(ctx context.Context, key string) ([]peer.ID, error) {
	if ids, ok := r.closestCached(key); ok {
		return ids, nil
	}
	ch := r.walking.DoChan(key, func() (any, error) {
		r.walks.WithLabelValues(walkClosest).Inc()
		// Not the first caller's context: a caller giving up must not end the walk the
		// others wait for.
		wctx, cancel := context.WithTimeout(r.ctx, closestTimeout)
		defer cancel()
		ids, err := r.dht.GetClosestPeers(wctx, key)
		switch {
		case err == nil:
			r.closest.Add(key, closestEntry{ids: ids, expires: r.now().Add(closestTTL)})
			return ids, nil
		case errors.Is(err, context.DeadlineExceeded) && len(ids) > 0 && r.ctx.Err() == nil:
			r.log.Debug("closest peers lookup ran out of time, taking what it found", "peers", len(ids))
			return ids, nil
		}
		return nil, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]peer.ID), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// closestCached returns key's closest members if they are cached and fresh.
func (r *Router) closestCached(key string) ([]peer.ID, bool) {
	e, ok := r.closest.Get(key)
	if !ok || !r.now().Before(e.expires) {
		return nil, false
	}
	return e.ids, true
}

// provide stores this node's provider record for d locally and at key's closest members.
// It succeeds when one of them took it.
func (r *Router) provide(ctx context.Context, d digest.Digest, mh multihash.Multihash) error {
	self := peer.AddrInfo{ID: r.h.ID()}
	if err := r.dht.ProviderStore().AddProvider(ctx, mh, self); err != nil {
		r.log.Warn("cannot record own provider record", "digest", d, "err", err)
	}
	ids, err := r.closestPeers(ctx, string(mh))
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil // alone: the local record is all there is
	}
	self.Addrs = r.dht.FilteredAddrs()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		took int
		errs []error
	)
	for _, id := range ids {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, putTimeout)
			defer cancel()
			err := r.pm.PutProviderAddrs(pctx, id, mh, self)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				return
			}
			took++
		})
	}
	wg.Wait()
	if took == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("no peer took the record: %w", errors.Join(errs...))
	}
	r.provided.Add(d, r.now())
	return nil
}

// askHolders asks a few of the closest members of the key mh, known from the cache, who
// provides it, and returns the providers they name, this node left out, their addresses kept
// for dialling. ok is false when no member is cached or none answered.
func (r *Router) askHolders(ctx context.Context, mh multihash.Multihash) (peers []Peer, ok bool) {
	ids, cached := r.closestCached(string(mh))
	if !cached || len(ids) == 0 {
		return nil, false
	}
	among := slices.Clone(ids[:min(askAmong, len(ids))])
	rand.Shuffle(len(among), func(i, j int) { among[i], among[j] = among[j], among[i] })
	ask := among[:min(askClosest, len(among))]
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		answered int
		found    = make(map[peer.ID]peer.AddrInfo)
	)
	for _, id := range ask {
		wg.Go(func() {
			provs, _, err := r.pm.GetProviders(ctx, id, mh)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.log.Debug("closest peer did not answer a lookup", "peer", id.String(), "err", err)
				return
			}
			answered++
			for _, ai := range provs {
				if ai == nil || ai.ID == r.h.ID() {
					continue
				}
				prev := found[ai.ID]
				prev.ID = ai.ID
				prev.Addrs = append(prev.Addrs, ai.Addrs...)
				found[ai.ID] = prev
			}
		})
	}
	wg.Wait()
	if answered == 0 {
		return nil, false
	}
	for _, ai := range found {
		ai.Addrs = ma.Unique(ai.Addrs)
		if len(ai.Addrs) > 0 {
			r.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
		peers = append(peers, peerOf(ai))
	}
	return peers, true
}

// peerOf is the Peer a provider record names.
func peerOf(ai peer.AddrInfo) Peer {
	p := Peer{ID: ai.ID.String(), Addrs: make([]string, len(ai.Addrs))}
	for i, a := range ai.Addrs {
		p.Addrs[i] = a.String()
	}
	return p
}
