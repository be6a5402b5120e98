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
		e     *endpoint
		swarm map[digest.Digest][]tracker.Member
		err   error
	}
	answers := make([]answer, len(live))
	var wg sync.WaitGroup
	for i, e := range live {
		wg.Go(func() {
			answers[i] = answer{e: e, swarm: make(map[digest.Digest][]tracker.Member)}
			for batch := range slices.Chunk(blobs, tracker.MaxBlobs) {
				got, err := c.announceOne(ctx, e, batch)
				if err != nil {
					answers[i].err = err
					return
				}
				for d, m := range got {
					answers[i].swarm[d] = m
				}
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
	for _, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		for d, running := range downloading {
			if !running {
				delete(c.members, d)
				continue
			}
			byTracker := c.members[d]
			if byTracker == nil {
				byTracker = make(map[*endpoint][]tracker.Member)
				c.members[d] = byTracker
			}
			byTracker[a.e] = a.swarm[d]
		}
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

// announceOne sends one announce to e and returns the validated members of the swarm of
// each download among blobs.
func (c *Client) announceOne(ctx context.Context, e *endpoint, blobs []tracker.BlobState) (map[digest.Digest][]tracker.Member, error) {
	req := tracker.AnnounceRequest{Peer: c.self, Addrs: c.addrs(), Time: nowMillis(), Blobs: blobs}
	var resp tracker.AnnounceResponse
	err := c.do(ctx, e, http.MethodPost, tracker.PathAnnounce, req, &resp)
	c.result(e, "announce", err)
	if err != nil {
		return nil, err
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
	out := make(map[digest.Digest][]tracker.Member)
	for _, s := range resp.Swarms {
		if !downloading[s.Digest] {
			// Not a download of ours: the tracker sends members only for those, and an
			// answer from outside is input, not truth.
			continue
		}
		out[s.Digest] = c.validMembers(s.Members)
	}
	return out, nil
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
		for _, m := range c.members[d][e] {
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
