package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
)

var _ swarm.Fleet = (*fleetLink)(nil)

// fleetLink is how downloads reach the fleet. It exists before the p2p side starts (which
// needs the downloader to serve chunks), and f is set once it has, before the node runs.
type fleetLink struct {
	f *fleet
	t *trackerLink // nil without trackers
}

func (l *fleetLink) Self() string { return l.f.net.ID() }

func (l *fleetLink) Connected() bool { return l.f.net.RoutingPeers() > 0 || l.f.net.Peers() > 0 }

func (l *fleetLink) Provide(ctx context.Context, d digest.Digest) error {
	l.t.event(d, blobStarted) // to the trackers too, without waiting for them
	return l.f.net.Router.Provide(ctx, d)
}

func (l *fleetLink) FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error) {
	find := l.f.net.Router.FindProviders
	if fresh {
		find = l.f.net.Router.FindProvidersFresh
	}
	dht := func(ctx context.Context) ([]string, error) {
		peers, err := find(ctx, d)
		ids := make([]string, len(peers))
		for i, p := range peers {
			ids[i] = p.ID
		}
		return ids, err
	}
	if l.t != nil {
		return l.t.findProviders(ctx, d, fresh, dht)
	}
	return dht(ctx)
}

func (l *fleetLink) Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error) {
	return l.f.net.Exchange.Have(ctx, peer, d)
}

func (l *fleetLink) GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error) {
	return l.f.net.Exchange.GetChunk(ctx, peer, d, index, w)
}

// holdersAsked is how many holders are asked for a manifest or a size before giving up on
// peers.
const holdersAsked = 3

// manifestFromPeers fetches a manifest by digest from peers holding it. It reports false
// when no peer could supply one whose bytes match d and whose media type is known.
func (n *Node) manifestFromPeers(ctx context.Context, d digest.Digest) (registryapi.Manifest, bool) {
	if n.link == nil || !n.link.Connected() {
		return registryapi.Manifest{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := n.link.FindProviders(ctx, d, false)
	if err != nil {
		n.log.Debug("manifest lookup failed", "digest", d, "err", err)
	}
	tried := 0
	for _, id := range ids {
		if tried == holdersAsked || ctx.Err() != nil {
			break
		}
		if n.downloader.Banned(id) {
			continue
		}
		tried++
		body, err := n.manifestFromPeer(ctx, id, d)
		if err != nil {
			n.log.Debug("manifest from peer failed", "digest", d, "peer", id, "err", err)
			if errors.Is(err, swarm.ErrDigestMismatch) || errors.Is(err, chunk.ErrProtocol) {
				n.downloader.Ban(id, err)
			}
			continue
		}
		mt := registryapi.EmbeddedMediaType(body)
		if mt == "" {
			// Without a mediaType field the type cannot be told from the bytes.
			return registryapi.Manifest{}, false
		}
		if err := n.store.Put(d, mt, body); err != nil {
			n.log.Warn("cache manifest", "digest", d, "err", err)
		} else {
			n.queueAnnounce(d)
		}
		return registryapi.Manifest{Digest: d, MediaType: mt, Body: body}, true
	}
	return registryapi.Manifest{}, false
}

// manifestFromPeer reads a whole manifest from one peer and checks its digest.
func (n *Node) manifestFromPeer(ctx context.Context, id string, d digest.Digest) ([]byte, error) {
	h, err := n.link.Have(ctx, id, d)
	if err != nil {
		return nil, err
	}
	if h.Size > maxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes: %w", h.Size, registryapi.ErrTooLarge)
	}
	var buf bytes.Buffer
	for i, held := range h.Chunks {
		if !held {
			return nil, fmt.Errorf("peer holds only part of the manifest: %w", chunk.ErrNotHeld)
		}
		if _, err := n.link.GetChunk(ctx, id, d, i, &limitedBuffer{&buf, h.Size}); err != nil {
			return nil, err
		}
	}
	if int64(buf.Len()) != h.Size || d.Algorithm().FromBytes(buf.Bytes()) != d {
		return nil, fmt.Errorf("manifest from peer %s: %w", id, swarm.ErrDigestMismatch)
	}
	n.downloader.Fetched("peer", buf.Len())
	return buf.Bytes(), nil
}

// limitedBuffer refuses to grow past max bytes.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int64
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if int64(l.b.Len()+len(p)) > l.max {
		return 0, fmt.Errorf("%w: more bytes than announced", chunk.ErrProtocol)
	}
	return l.b.Write(p)
}

// peerBlobSize asks peers holding all of d for its size.
func (n *Node) peerBlobSize(ctx context.Context, d digest.Digest) (int64, bool) {
	if n.link == nil || !n.link.Connected() {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, _ := n.link.FindProviders(ctx, d, false)
	for i, id := range ids {
		if i == holdersAsked || ctx.Err() != nil {
			break
		}
		if h, err := n.link.Have(ctx, id, d); err == nil && !slices.Contains(h.Chunks, false) && !n.downloader.Banned(id) {
			return h.Size, true
		}
	}
	return 0, false
}

// keepChunkList stores the chunk list a download computed, so peers can check what this node
// sends them.
func (n *Node) keepChunkList(d digest.Digest, chunkSize int64, list []digest.Digest) {
	if err := n.store.PutChunkList(d, chunkSize, list); err != nil {
		n.log.Warn("store chunk list", "digest", d, "err", err)
	}
}
