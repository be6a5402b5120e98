package node

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
)

var (
	_ registryapi.BlobSource     = (*Node)(nil)
	_ registryapi.ManifestSource = (*Node)(nil)
	_ registryapi.FileBlob       = cachedBlob{}
	_ registryapi.Blob           = (*swarm.Reader)(nil)
)

// OpenBlob serves a blob from the cache, or joins or starts its download.
func (n *Node) OpenBlob(ctx context.Context, repo registryapi.Repo, d digest.Digest) (registryapi.Blob, error) {
	if b, err := n.store.Open(d); err == nil {
		return cachedBlob{b}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	r, err := n.downloader.Open(ctx, repo.Registry, repo.Name, d)
	if err != nil {
		return nil, edgeError(err)
	}
	return r, nil
}

// StatBlob answers HEAD: from the cache, a running download, the origin, or peers when the
// origin cannot answer.
func (n *Node) StatBlob(ctx context.Context, repo registryapi.Repo, d digest.Digest) (int64, error) {
	if info, err := n.store.Stat(d); err == nil {
		return info.Size, nil
	}
	if size, ok := n.downloader.Active(d); ok {
		return size, nil
	}
	size, err := n.origin.HeadBlob(ctx, repo.Registry, repo.Name, d)
	if err != nil {
		if size, ok := n.peerBlobSize(ctx, d); ok {
			return size, nil
		}
		return 0, edgeError(err)
	}
	return size, nil
}

// cachedBlob is a committed blob served from disk.
type cachedBlob struct{ *store.Blob }

func (b cachedBlob) File() registryapi.FileHandle { return b.Blob.File() }
func (b cachedBlob) Source() string               { return "cache" }
