package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
)

// holdersAsked is how many holders are asked for a manifest or a size before giving up on
// peers.
const holdersAsked = 3

// manifestFromPeers fetches a manifest by digest from peers holding it. It reports false
// when no peer could supply one whose bytes match d and whose media type is known.
func (m *Mirror) manifestFromPeers(ctx context.Context, d digest.Digest) (registryapi.Manifest, bool) {
	if !m.peers.Connected() {
		return registryapi.Manifest{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := m.peers.FindProviders(ctx, d, false)
	if err != nil {
		m.log.Debug("manifest lookup failed", "digest", d, "err", err)
	}
	tried := 0
	for _, id := range ids {
		if tried == holdersAsked || ctx.Err() != nil {
			break
		}
		if m.dl.Banned(id) {
			continue
		}
		tried++
		body, err := m.manifestFromPeer(ctx, id, d)
		if err != nil {
			m.log.Debug("manifest from peer failed", "digest", d, "peer", id, "err", err)
			if errors.Is(err, swarm.ErrDigestMismatch) || errors.Is(err, chunk.ErrProtocol) {
				m.dl.Ban(id, err)
			}
			continue
		}
		mt := registryapi.EmbeddedMediaType(body)
		if mt == "" {
			// Without a mediaType field the type cannot be told from the bytes.
			return registryapi.Manifest{}, false
		}
		if err := m.store.Put(d, mt, body); err != nil {
			m.log.Warn("cache manifest", "digest", d, "err", err)
		} else {
			m.onStored(d)
		}
		return registryapi.Manifest{Digest: d, MediaType: mt, Body: body}, true
	}
	return registryapi.Manifest{}, false
}

// manifestFromPeer reads a whole manifest from one peer and checks its digest.
func (m *Mirror) manifestFromPeer(ctx context.Context, id string, d digest.Digest) ([]byte, error) {
	h, err := m.peers.Have(ctx, id, d)
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
		if _, err := m.peers.GetChunk(ctx, id, d, i, &limitedBuffer{&buf, h.Size}); err != nil {
			return nil, err
		}
	}
	if int64(buf.Len()) != h.Size || d.Algorithm().FromBytes(buf.Bytes()) != d {
		return nil, fmt.Errorf("manifest from peer %s: %w", id, swarm.ErrDigestMismatch)
	}
	m.dl.Fetched("peer", buf.Len())
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
func (m *Mirror) peerBlobSize(ctx context.Context, d digest.Digest) (int64, bool) {
	if !m.peers.Connected() {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, _ := m.peers.FindProviders(ctx, d, false)
	for i, id := range ids {
		if i == holdersAsked || ctx.Err() != nil {
			break
		}
		if h, err := m.peers.Have(ctx, id, d); err == nil && !slices.Contains(h.Chunks, false) && !m.dl.Banned(id) {
			return h.Size, true
		}
	}
	return 0, false
}
