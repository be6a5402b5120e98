package node

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
)

// maxManifestSize bounds manifests read back from the store, as the origin client bounds
// those it downloads.
const maxManifestSize = origin.MaxManifestSize

// Manifest serves a manifest by digest from the cache, peers or the origin, and by tag from
// the origin (briefly cached; served stale while the origin is unreachable).
func (n *Node) Manifest(ctx context.Context, repo registryapi.Repo, reference string, accept []string) (registryapi.Manifest, error) {
	if d, err := digest.Parse(reference); err == nil {
		return n.manifestByDigest(ctx, repo, d, accept)
	}
	key := tagKey(repo, reference, accept)
	if e, ok := n.tags.get(key); ok && time.Since(e.resolved) < n.cfg.TagTTL {
		if m, err := n.cachedManifest(e.desc.Digest); err == nil {
			return m, nil
		}
	}
	v, err, _ := n.flight.Do("manifest "+key, func() (any, error) {
		ctx, cancel := flightContext(ctx)
		defer cancel()
		m, err := n.origin.GetManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return nil, err
		}
		n.keepManifest(m)
		n.tags.put(key, registryapi.Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))})
		return registryapi.Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body}, nil
	})
	if err == nil {
		return v.(registryapi.Manifest), nil
	}
	if e, ok := n.staleTag(key, err); ok {
		if m, cerr := n.cachedManifest(e.desc.Digest); cerr == nil {
			n.log.Warn("origin unreachable, serving cached tag", "repo", repo.String(), "digest", m.Digest, "err", err)
			return m, nil
		}
	}
	return registryapi.Manifest{}, edgeError(err)
}

// StatManifest answers HEAD for a manifest.
func (n *Node) StatManifest(ctx context.Context, repo registryapi.Repo, reference string, accept []string) (registryapi.Descriptor, error) {
	if d, err := digest.Parse(reference); err == nil {
		if m, err := n.cachedManifest(d); err == nil {
			return describe(m), nil
		}
		if m, ok := n.manifestFromPeers(ctx, d); ok {
			return describe(m), nil
		}
		desc, err := n.origin.HeadManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return registryapi.Descriptor{}, edgeError(err)
		}
		return registryapi.Descriptor(desc), nil
	}
	key := tagKey(repo, reference, accept)
	if e, ok := n.tags.get(key); ok && time.Since(e.resolved) < n.cfg.TagTTL {
		return e.desc, nil
	}
	v, err, _ := n.flight.Do("head "+key, func() (any, error) {
		ctx, cancel := flightContext(ctx)
		defer cancel()
		desc, err := n.origin.HeadManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return nil, err
		}
		d := registryapi.Descriptor(desc)
		n.tags.put(key, d)
		return d, nil
	})
	if err == nil {
		return v.(registryapi.Descriptor), nil
	}
	if e, ok := n.staleTag(key, err); ok {
		n.log.Warn("origin unreachable, serving cached tag", "repo", repo.String(), "digest", e.desc.Digest, "err", err)
		return e.desc, nil
	}
	return registryapi.Descriptor{}, edgeError(err)
}

// staleTag returns the last resolution of a tag when err says the origin is unreachable
// (not when it says the tag is gone) and the resolution is recent enough.
func (n *Node) staleTag(key string, err error) (tagEntry, bool) {
	if !errors.Is(err, origin.ErrUnavailable) && !errors.Is(err, origin.ErrTooManyRequests) {
		return tagEntry{}, false
	}
	e, ok := n.tags.get(key)
	if !ok || time.Since(e.resolved) > n.cfg.TagMaxStale {
		return tagEntry{}, false
	}
	return e, true
}

func (n *Node) manifestByDigest(ctx context.Context, repo registryapi.Repo, d digest.Digest, accept []string) (registryapi.Manifest, error) {
	if m, err := n.cachedManifest(d); err == nil {
		return m, nil
	}
	v, err, _ := n.flight.Do("manifest "+repo.Registry+" "+d.String(), func() (any, error) {
		ctx, cancel := flightContext(ctx)
		defer cancel()
		if m, ok := n.manifestFromPeers(ctx, d); ok {
			return m, nil
		}
		m, err := n.origin.GetManifest(ctx, repo.Registry, repo.Name, d.String(), accept)
		if err != nil {
			return nil, err
		}
		n.keepManifest(m)
		return registryapi.Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body}, nil
	})
	if err != nil {
		return registryapi.Manifest{}, edgeError(err)
	}
	return v.(registryapi.Manifest), nil
}

// cachedManifest reads a manifest from the store. Content that was stored as a plain blob
// has no media type; the manifest's own mediaType field stands in, and without one it is
// not served as a manifest.
func (n *Node) cachedManifest(d digest.Digest) (registryapi.Manifest, error) {
	b, err := n.store.Open(d)
	if err != nil {
		return registryapi.Manifest{}, err
	}
	defer b.Close()
	if b.Size() > maxManifestSize {
		return registryapi.Manifest{}, registryapi.ErrTooLarge
	}
	body := make([]byte, b.Size())
	if _, err := b.ReadAt(body, 0); err != nil && !errors.Is(err, io.EOF) {
		return registryapi.Manifest{}, err
	}
	mt := b.MediaType()
	if mt == "" {
		mt = registryapi.EmbeddedMediaType(body)
		if mt == "" {
			return registryapi.Manifest{}, store.ErrNotFound
		}
	}
	return registryapi.Manifest{Digest: d, MediaType: mt, Body: body}, nil
}

func describe(m registryapi.Manifest) registryapi.Descriptor {
	return registryapi.Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}
}

// tagKey identifies one resolution of a tag: the answer depends on what the client accepts.
func tagKey(repo registryapi.Repo, tag string, accept []string) string {
	return repo.Registry + "/" + repo.Name + ":" + tag + " " + strings.Join(accept, ",")
}

// flightContext detaches a shared origin request from the client that happened to start it,
// so the others waiting on it do not fail when that one leaves.
func flightContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// keepManifest caches a manifest fetched from the origin and announces it to the fleet.
func (n *Node) keepManifest(m origin.Manifest) {
	if err := n.store.Put(m.Digest, m.MediaType, m.Body); err != nil {
		n.log.Warn("cache manifest", "digest", m.Digest, "err", err)
		return
	}
	n.queueAnnounce(m.Digest)
}
