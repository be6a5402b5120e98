package mirror

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
func (m *Mirror) Manifest(ctx context.Context, repo registryapi.Repo, reference string, accept []string) (registryapi.Manifest, error) {
	if d, err := digest.Parse(reference); err == nil {
		return m.manifestByDigest(ctx, repo, d, accept)
	}
	key := tagKey(repo, reference, accept)
	if e, ok := m.tags.get(key); ok && time.Since(e.resolved) < m.ttl {
		if man, err := m.cachedManifest(e.desc.Digest); err == nil {
			return man, nil
		}
	}
	v, err := m.share(ctx, "manifest "+key, func(ctx context.Context) (any, error) {
		man, err := m.origin.GetManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return nil, err
		}
		m.keepManifest(man)
		m.tags.put(key, registryapi.Descriptor{Digest: man.Digest, MediaType: man.MediaType, Size: int64(len(man.Body))})
		return registryapi.Manifest{Digest: man.Digest, MediaType: man.MediaType, Body: man.Body}, nil
	})
	if err == nil {
		return v.(registryapi.Manifest), nil
	}
	if e, ok := m.staleTag(key, err); ok {
		if man, cerr := m.cachedManifest(e.desc.Digest); cerr == nil {
			m.log.Warn("origin unreachable, serving cached tag", "repo", repo.String(), "digest", man.Digest, "err", err)
			return man, nil
		}
	}
	return registryapi.Manifest{}, EdgeError(err)
}

// StatManifest answers HEAD for a manifest.
func (m *Mirror) StatManifest(ctx context.Context, repo registryapi.Repo, reference string, accept []string) (registryapi.Descriptor, error) {
	if d, err := digest.Parse(reference); err == nil {
		if man, err := m.cachedManifest(d); err == nil {
			return describe(man), nil
		}
		if man, ok := m.manifestFromPeers(ctx, d); ok {
			return describe(man), nil
		}
		desc, err := m.origin.HeadManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return registryapi.Descriptor{}, EdgeError(err)
		}
		return registryapi.Descriptor(desc), nil
	}
	key := tagKey(repo, reference, accept)
	if e, ok := m.tags.get(key); ok && time.Since(e.resolved) < m.ttl {
		return e.desc, nil
	}
	v, err := m.share(ctx, "head "+key, func(ctx context.Context) (any, error) {
		desc, err := m.origin.HeadManifest(ctx, repo.Registry, repo.Name, reference, accept)
		if err != nil {
			return nil, err
		}
		d := registryapi.Descriptor(desc)
		m.tags.put(key, d)
		return d, nil
	})
	if err == nil {
		return v.(registryapi.Descriptor), nil
	}
	if e, ok := m.staleTag(key, err); ok {
		m.log.Warn("origin unreachable, serving cached tag", "repo", repo.String(), "digest", e.desc.Digest, "err", err)
		return e.desc, nil
	}
	return registryapi.Descriptor{}, EdgeError(err)
}

// staleTag returns the last resolution of a tag when err says the origin is unreachable
// (not when it says the tag is gone) and the resolution is recent enough.
func (m *Mirror) staleTag(key string, err error) (tagEntry, bool) {
	if !errors.Is(err, origin.ErrUnavailable) && !errors.Is(err, origin.ErrTooManyRequests) {
		return tagEntry{}, false
	}
	e, ok := m.tags.get(key)
	if !ok || time.Since(e.resolved) > m.maxStale {
		return tagEntry{}, false
	}
	return e, true
}

func (m *Mirror) manifestByDigest(ctx context.Context, repo registryapi.Repo, d digest.Digest, accept []string) (registryapi.Manifest, error) {
	if man, err := m.cachedManifest(d); err == nil {
		return man, nil
	}
	v, err := m.share(ctx, "manifest "+repo.Registry+" "+d.String(), func(ctx context.Context) (any, error) {
		if man, ok := m.manifestFromPeers(ctx, d); ok {
			return man, nil
		}
		man, err := m.origin.GetManifest(ctx, repo.Registry, repo.Name, d.String(), accept)
		if err != nil {
			return nil, err
		}
		m.keepManifest(man)
		return registryapi.Manifest{Digest: man.Digest, MediaType: man.MediaType, Body: man.Body}, nil
	})
	if err != nil {
		return registryapi.Manifest{}, EdgeError(err)
	}
	return v.(registryapi.Manifest), nil
}

// cachedManifest reads a manifest from the store. Content that was stored as a plain blob
// has no media type; the manifest's own mediaType field stands in, and without one it is
// not served as a manifest.
func (m *Mirror) cachedManifest(d digest.Digest) (registryapi.Manifest, error) {
	b, err := m.store.Open(d)
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

// flightTimeout bounds an origin request shared by the clients asking for one thing.
const flightTimeout = time.Minute

// share runs fn once for the callers asking for key at the same time. fn runs detached from
// the caller that happened to start it, so the others do not fail when that one leaves; a
// caller whose ctx ends stops waiting at once, while fn goes on for the others.
func (m *Mirror) share(ctx context.Context, key string, fn func(ctx context.Context) (any, error)) (any, error) {
	ch := m.flight.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		return fn(ctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// keepManifest caches a manifest fetched from the origin, to be announced to the fleet.
func (m *Mirror) keepManifest(man origin.Manifest) {
	if err := m.store.Put(man.Digest, man.MediaType, man.Body); err != nil {
		m.log.Warn("cache manifest", "digest", man.Digest, "err", err)
		return
	}
	m.onStored(man.Digest)
}
