// Package mirror is what the /v2 edge serves from: blobs from the cache, a running download
// or a new one; manifests from the cache, peers or the origin, with tags resolved at the
// origin, briefly cached and served stale while the origin is unreachable. Its Mirror is the
// registryapi.BlobSource and registryapi.ManifestSource of a node.
package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
)

var (
	_ registryapi.BlobSource     = (*Mirror)(nil)
	_ registryapi.ManifestSource = (*Mirror)(nil)
	_ registryapi.FileBlob       = cachedBlob{}
	_ registryapi.Blob           = (*swarm.Reader)(nil)
)

// Peers is how the mirror reaches the nodes holding a manifest or a blob when it needs
// their bytes or size: the fleet. A node alone has one that is never connected.
type Peers interface {
	// Connected reports whether there is any peer to ask.
	Connected() bool
	// FindProviders returns the IDs of peers that announced d.
	FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error)
	// Have asks a peer what it holds of d.
	Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error)
	// GetChunk copies chunk index of d from peer to w.
	GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error)
}

// Options configure New. Store, Downloads and Origin are required.
type Options struct {
	Store     *store.Store
	Downloads *swarm.Downloader
	Origin    *origin.Client
	// Peers supply manifests and sizes the origin cannot; nil means none.
	Peers Peers
	// TagTTL is how long a tag's resolution is reused; TagMaxStale how long it is still
	// served while the origin is unreachable.
	TagTTL, TagMaxStale time.Duration
	// OnStored is told of every manifest the mirror adds to the store, so the node can
	// announce it; nil means no one.
	OnStored func(d digest.Digest)
	// Logger receives warnings about degraded service; nil discards them.
	Logger *slog.Logger
}

// tagEntries bounds the tag cache.
const tagEntries = 4096

// Mirror serves blobs and manifests; see the package comment.
type Mirror struct {
	store    *store.Store
	dl       *swarm.Downloader
	origin   *origin.Client
	peers    Peers
	ttl      time.Duration
	maxStale time.Duration
	onStored func(d digest.Digest)
	log      *slog.Logger
	tags     *tagCache
	flight   singleflight.Group
}

// New returns a mirror over o's store, downloader and origin.
func New(o Options) (*Mirror, error) {
	if o.Store == nil || o.Downloads == nil || o.Origin == nil {
		return nil, errors.New("mirror: store, downloader and origin are required")
	}
	m := &Mirror{
		store: o.Store, dl: o.Downloads, origin: o.Origin, peers: o.Peers,
		ttl: o.TagTTL, maxStale: o.TagMaxStale, onStored: o.OnStored, log: o.Logger,
		tags: newTagCache(tagEntries),
	}
	if m.peers == nil {
		m.peers = NoPeers{}
	}
	if m.onStored == nil {
		m.onStored = func(digest.Digest) {}
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// OpenBlob serves a blob from the cache, or joins or starts its download.
func (m *Mirror) OpenBlob(ctx context.Context, repo registryapi.Repo, d digest.Digest) (registryapi.Blob, error) {
	if b, err := m.store.Open(d); err == nil {
		return cachedBlob{b}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	r, err := m.dl.Open(ctx, repo.Registry, repo.Name, d)
	if err != nil {
		return nil, EdgeError(err)
	}
	return r, nil
}

// StatBlob answers HEAD: from the cache, a running download, the origin, or peers when the
// origin cannot answer.
func (m *Mirror) StatBlob(ctx context.Context, repo registryapi.Repo, d digest.Digest) (int64, error) {
	if info, err := m.store.Stat(d); err == nil {
		return info.Size, nil
	}
	if size, ok := m.dl.Active(d); ok {
		return size, nil
	}
	size, err := m.origin.HeadBlob(ctx, repo.Registry, repo.Name, d)
	if err != nil {
		if size, ok := m.peerBlobSize(ctx, d); ok {
			return size, nil
		}
		return 0, EdgeError(err)
	}
	return size, nil
}

// cachedBlob is a committed blob served from disk.
type cachedBlob struct{ *store.Blob }

func (b cachedBlob) File() registryapi.FileHandle { return b.Blob.File() }
func (b cachedBlob) Source() string               { return "cache" }

// NoPeers is the Peers of a node outside any fleet: never connected, holding nothing.
type NoPeers struct{}

func (NoPeers) Connected() bool { return false }
func (NoPeers) FindProviders(context.Context, digest.Digest, bool) ([]string, error) {
	return nil, nil
}
func (NoPeers) Have(context.Context, string, digest.Digest) (chunk.Have, error) {
	return chunk.Have{}, chunk.ErrNotHeld
}
func (NoPeers) GetChunk(context.Context, string, digest.Digest, int, io.Writer) (int64, error) {
	return 0, chunk.ErrNotHeld
}
