package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/tracker"
)

// Announce tells every tracker not known to be down about blobs (in requests of at most
// MaxBlobs each) and returns the members they answered for the blobs neither complete nor
// gone, merged across trackers, this node left out. It fails only when no tracker answered.
// The members of downloads are also kept for Members.
func (c *Client) Announce(ctx context.Context, blobs []tracker.BlobState) (map[digest.Digest][]tracker.Member, error) {
	now := time.Now()
	var live []*endpoint
	for _, e := range c.trackers {
		if e.available(now) {
			live = append(live, e)
		}
	}
	if len(live) == 0 {
		return nil, ErrUnavailable
	}
	type answer struct {
		e        *endpoint
		swarm    map[digest.Digest]swarmAnswer
		interval time.Duration
		err      error
	}
	answers := make([]answer, len(live))
	var wg sync.WaitGroup
	for i, e := range live {
		wg.Go(func() {
			answers[i] = answer{e: e, swarm: make(map[digest.Digest]swarmAnswer)}
			for batch := range slices.Chunk(blobs, tracker.MaxBlobs) {
				got, interval, err := c.announceOne(ctx, e, batch)
				if err != nil {
					answers[i].err = err
					return
				}
				for d, m := range got {
					answers[i].swarm[d] = m
				}
				answers[i].interval = max(answers[i].interval, interval)
			}
		})
	}
	wg.Wait()

	downloading := make(map[digest.Digest]bool)
	for _, b := range blobs {
		downloading[b.Digest] = !b.Complete && !b.Gone
	}
	var errs []error
	merged := make(map[digest.Digest][]tracker.Member)
	c.mu.Lock()
	defer c.mu.Unlock()
	interval := time.Duration(0)
	for _, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		interval = max(interval, a.interval)
		for d, running := range downloading {
			if !running {
				delete(c.members, d)
				continue
			}
			byTracker := c.members[d]
			if byTracker == nil {
				byTracker = make(map[*endpoint]swarmAnswer)
				c.members[d] = byTracker
			}
			byTracker[a.e] = a.swarm[d]
		}
	}
	if len(errs) < len(answers) {
		c.interval = interval
	}
	if len(errs) == len(answers) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	for d, running := range downloading {
		if running {
			merged[d] = c.mergedLocked(d)
		}
	}
	return merged, nil
}

// swarmAnswer is what one tracker answered about one download's swarm.
type swarmAnswer struct {
	members  []tracker.Member
	fetchers []string
}

// announceOne sends one announce to e and returns the validated members and fetchers of the
// swarm of each download among blobs, and the interval the tracker asks for.
func (c *Client) announceOne(ctx context.Context, e *endpoint, blobs []tracker.BlobState) (map[digest.Digest]swarmAnswer, time.Duration, error) {
	req := tracker.AnnounceRequest{Peer: c.self, Addrs: c.addrs(), Time: nowMillis(), Blobs: blobs}
	var resp tracker.AnnounceResponse
	err := c.do(ctx, e, http.MethodPost, tracker.PathAnnounce, req, &resp)
	c.result(e, "announce", err)
	if err != nil {
		return nil, 0, err
	}
	e.mu.Lock()
	changed := e.instance != "" && resp.Instance != e.instance
	e.instance = resp.Instance
	e.mu.Unlock()
	if changed {
		c.log.Info("tracker restarted, announcing everything again", "tracker", e.base)
		select {
		case c.restarted <- struct{}{}:
		default:
		}
	}
	downloading := make(map[digest.Digest]bool, len(blobs))
	for _, b := range blobs {
		downloading[b.Digest] = !b.Complete && !b.Gone
	}
	out := make(map[digest.Digest]swarmAnswer)
	for _, s := range resp.Swarms {
		if !downloading[s.Digest] {
			// Not a download of ours: the tracker sends members only for those, and an
			// answer from outside is input, not truth.
			continue
		}
		members := c.validMembers(s.Members)
		out[s.Digest] = swarmAnswer{members: members, fetchers: c.validFetchers(s.Fetchers, members)}
	}
	interval := min(max(time.Duration(resp.IntervalMillis)*time.Millisecond, tracker.AnnounceDownload), tracker.MaxAnnounceDownload)
	return out, interval, nil
}

// validFetchers keeps the fetchers that are this node or among members, once each, at most
// tracker.Fetchers: a fetcher the node cannot reach is of no use to it.
func (c *Client) validFetchers(ids []string, members []tracker.Member) []string {
	out := []string{}
	for _, id := range ids {
		if len(out) == tracker.Fetchers {
			break
		}
		known := id == c.self || slices.ContainsFunc(members, func(m tracker.Member) bool { return m.Peer == id })
		if known && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// validMembers keeps the members whose peer ID decodes, other than this node, once each, at
// most MaxMembers, each with only its own addrs (at most MaxAddrs).
func (c *Client) validMembers(ms []tracker.Member) []tracker.Member {
	var out []tracker.Member
	seen := make(map[string]bool)
	for _, m := range ms {
		if len(out) == tracker.MaxMembers {
			break
		}
		if m.Peer == c.self || seen[m.Peer] {
			continue
		}
		addrs, err := c.opts.PeerAddrs(m.Peer, m.Addrs)
		if err != nil {
			c.log.Debug("tracker member skipped", "peer", m.Peer, "err", err)
			continue
		}
		seen[m.Peer] = true
		if len(addrs) > tracker.MaxAddrs {
			addrs = addrs[:tracker.MaxAddrs]
		}
		out = append(out, tracker.Member{Peer: m.Peer, Addrs: addrs, Done: max(m.Done, 0), Complete: m.Complete})
	}
	return out
}

// Members returns the latest members the trackers gave for the download of d, merged.
func (c *Client) Members(d digest.Digest) []tracker.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mergedLocked(d)
}

// Fetchers returns the origin fetchers of d's swarm as the trackers last answered (see
// tracker.Swarm.Fetchers), from the first tracker in the order leases of d are asked in
// that answered about it, so that they agree with the leases; ok is false when no tracker
// has answered about the download yet.
func (c *Client) Fetchers(d digest.Digest) (fetchers []string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.order(d) {
		if a, answered := c.members[d][e]; answered {
			return slices.Clone(a.fetchers), true
		}
	}
	return nil, false
}

// Interval is how long the trackers asked the node to wait between announces of its
// running downloads, as of their last answer: tracker.AnnounceDownload unless they asked
// for longer.
func (c *Client) Interval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.interval, tracker.AnnounceDownload)
}

// Forget drops what is known of d's swarm.
func (c *Client) Forget(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, d)
}

// mergedLocked merges the members of d the trackers gave, keeping each peer once with the
// most progress any tracker saw; capped at MaxMembers. Callers hold mu.
func (c *Client) mergedLocked(d digest.Digest) []tracker.Member {
	byPeer := make(map[string]int)
	var out []tracker.Member
	for _, e := range c.trackers { // a fixed order, so the cap keeps the same members
		for _, m := range c.members[d][e].members {
			if i, ok := byPeer[m.Peer]; ok {
				if m.Done > out[i].Done || m.Complete {
					out[i].Done, out[i].Complete = max(out[i].Done, m.Done), out[i].Complete || m.Complete
				}
				continue
			}
			if len(out) == tracker.MaxMembers {
				continue
			}
			byPeer[m.Peer] = len(out)
			out = append(out, tracker.Member{Peer: m.Peer, Addrs: slices.Clone(m.Addrs), Done: m.Done, Complete: m.Complete})
		}
	}
	return out
}

// ownAddr reports whether a is a multiaddr of peer id, ending in /p2p/<id>.
func (c *Client) ownAddr(id, a string) bool {
	addrs, err := c.opts.PeerAddrs(id, []string{a})
	return err == nil && len(addrs) == 1
}

// Bootstrap asks every tracker, even one known to be down (joining is rare and off any
// download's path), for peers to join the DHT through, and returns them merged: multiaddrs
// ending in /p2p/<id>, this node's own left out. It fails only when no tracker answered.
func (c *Client) Bootstrap(ctx context.Context) ([]string, error) {
	var (
		peers []string
		errs  []error
		seen  = make(map[string]bool)
	)
	for _, e := range c.trackers {
		var resp tracker.BootstrapResponse
		err := c.do(ctx, e, http.MethodGet, tracker.PathBootstrap, nil, &resp)
		c.result(e, "bootstrap", err)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range resp.Peers {
			if len(peers) == tracker.MaxMembers || len(a) > tracker.MaxAddrLen || seen[a] {
				continue
			}
			id := a[strings.LastIndex(a, "/")+1:]
			if id == c.self || !c.ownAddr(id, a) {
				continue
			}
			seen[a] = true
			peers = append(peers, a)
		}
	}
	if len(errs) == len(c.trackers) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return peers, nil
}
