package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/swarm"
)

// origin is the registry every node falls back to, behind its own link.
type origin struct {
	w     *world
	up    link
	blobs map[digest.Digest][]byte

	sent     atomic.Int64 // virtual bytes sent
	requests atomic.Int64
}

// originClient is one node's way to the origin, through the node's own downlink.
type originClient struct {
	o *origin
	n *node
}

var _ swarm.Origin = originClient{}

func (c originClient) blob(d digest.Digest) ([]byte, error) {
	b, ok := c.o.blobs[d]
	if !ok {
		return nil, fmt.Errorf("origin: blob %s unknown", d)
	}
	return b, nil
}

func (c originClient) GetBlob(ctx context.Context, _, _ string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error) {
	c.o.requests.Add(1)
	c.n.stats.OriginRequests.Add(1)
	b, err := c.blob(d)
	if err != nil {
		return nil, 0, err
	}
	size := int64(len(b))
	if length < 0 || offset+length > size {
		length = size - offset
	}
	if offset < 0 || length < 0 {
		return nil, 0, fmt.Errorf("origin: range %d+%d of %d bytes", offset, length, size)
	}
	// A request and the first byte of the answer, then the body across both links.
	if err := sleep(ctx, 2*c.o.w.cfg.Latency+c.o.w.cfg.OriginLatency); err != nil {
		return nil, 0, err
	}
	vbytes := length * c.o.w.scale
	c.o.sent.Add(vbytes)
	c.n.fromOrigin.Add(vbytes)
	c.n.originChunks.Store(chunkKey{d, int(offset / c.o.w.cfg.RealChunk)}, true)
	if err := sleepUntil(ctx, transfer(&c.o.up, c.n.down, vbytes)); err != nil {
		return nil, 0, err
	}
	return io.NopCloser(bytes.NewReader(b[offset : offset+length])), size, nil
}

func (c originClient) HeadBlob(ctx context.Context, _, _ string, d digest.Digest) (int64, error) {
	c.n.stats.OriginRequests.Add(1)
	b, err := c.blob(d)
	if err != nil {
		return 0, err
	}
	if err := sleep(ctx, 2*c.o.w.cfg.Latency+c.o.w.cfg.OriginLatency); err != nil {
		return 0, err
	}
	return int64(len(b)), nil
}
