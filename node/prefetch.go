package node

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/mirror"
	"github.com/shoal-dev/shoal/node/prefetch/prefetcher"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
)

// prefetchHandler builds POST /prefetch on the node's manifests, store and downloader.
func (n *Node) prefetchHandler() (*prefetcher.Handler, error) {
	return prefetcher.New(prefetcher.Options{
		Manifests:  n.mirror,
		Cache:      prefetchCache{n.store},
		Downloads:  prefetchDownloads{n.downloader},
		Registries: n.registries,
		CacheSize:  n.cfg.CacheSize,
		Registerer: n.metrics,
		Logger:     n.log,
	})
}

var (
	_ prefetcher.Manifests = (*mirror.Mirror)(nil)
	_ prefetcher.Cache     = prefetchCache{}
	_ prefetcher.Downloads = prefetchDownloads{}
	_ prefetcher.Download  = edgeDownload{}
)

// prefetchCache is the store as a prefetch sees it.
type prefetchCache struct{ s *store.Store }

func (c prefetchCache) Touch(d digest.Digest) error {
	b, err := c.s.Open(d)
	if err != nil {
		return err
	}
	return b.Close()
}

func (c prefetchCache) Stat(d digest.Digest) error {
	_, err := c.s.Stat(d)
	return err
}

// prefetchDownloads is the downloader as a prefetch sees it, its errors the edge's.
type prefetchDownloads struct{ dl *swarm.Downloader }

func (p prefetchDownloads) Open(ctx context.Context, repo registryapi.Repo, d digest.Digest) (prefetcher.Download, error) {
	r, err := p.dl.Open(ctx, repo.Registry, repo.Name, d)
	if err != nil {
		return nil, mirror.EdgeError(err)
	}
	return edgeDownload{r}, nil
}

func (p prefetchDownloads) Done(d digest.Digest) (int64, bool) {
	st, ok := p.dl.Status(d)
	return st.Done, ok
}

// edgeDownload is a download whose failure reads as the edge's errors.
type edgeDownload struct{ *swarm.Reader }

func (r edgeDownload) Wait(ctx context.Context) error { return mirror.EdgeError(r.Reader.Wait(ctx)) }
