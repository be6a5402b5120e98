package prefetcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/prefetch"
	"github.com/shoal-dev/shoal/registryapi"
)

// accept is what a prefetch accepts when it resolves a tag: containerd's list, so the tag's
// resolution is cached under the same key a containerd pull then looks up.
var accept = []string{
	string(types.DockerManifestSchema2),
	string(types.DockerManifestList),
	string(types.OCIManifestSchema1),
	string(types.OCIImageIndex),
	"*/*",
}

// A plan: what an image consists of, resolved before any blob is fetched.
type plan struct {
	ref       imageRef
	repo      registryapi.Repo
	digest    digest.Digest // of the manifest or index the reference names
	manifests int
	blobs     []*blob
	total     int64
}

// States of a blob in a prefetch.
const (
	blobPending int32 = iota
	blobFetching
	blobCached // held before the prefetch
	blobDone   // fetched by it (or by another download it joined)
)

type blob struct {
	digest digest.Digest
	size   int64
	state  atomic.Int32
}

// progress reports where the plan stands; downloads tells how far running ones are.
func (pl *plan) progress(downloads Downloads, status string, begin time.Time) prefetch.Progress {
	p := prefetch.Progress{
		Status:     status,
		Image:      pl.ref.String(),
		Digest:     pl.digest,
		Manifests:  pl.manifests,
		BlobsTotal: len(pl.blobs),
		BytesTotal: pl.total,
		Seconds:    time.Since(begin).Seconds(),
	}
	for _, b := range pl.blobs {
		switch b.state.Load() {
		case blobCached:
			p.BlobsDone++
			p.BytesDone += b.size
			p.BytesCached += b.size
		case blobDone:
			p.BlobsDone++
			p.BytesDone += b.size
		case blobFetching:
			// What of its running download has landed, in whole chunks.
			if done, ok := downloads.Done(b.digest); ok {
				p.BytesDone += done
			}
		}
	}
	return p
}

// plan resolves ref (the tag at the origin, as a pull would, or the digest) and walks the
// manifests it names, keeping only the platforms asked for, into the list of distinct blobs
// to fetch. Every manifest fetched is cached on the way.
func (h *Handler) plan(ctx context.Context, ref imageRef, platforms []prefetch.Platform) (*plan, error) {
	pl := &plan{ref: ref, repo: registryapi.Repo{Registry: ref.registry, Name: ref.repo}}
	top, err := h.manifest(ctx, pl.repo, ref.reference())
	if err != nil {
		return nil, err
	}
	pl.digest = top.Digest
	seen := make(map[digest.Digest]bool)
	if err := h.walk(ctx, pl, top, platforms, 0, seen); err != nil {
		return nil, err
	}
	if pl.manifests == 0 {
		return nil, refuse(http.StatusNotFound, "%s has no manifest for %s", ref, platformList(platforms))
	}
	if h.opts.CacheSize > 0 && pl.total > h.opts.CacheSize {
		return nil, refuse(http.StatusUnprocessableEntity, "%s has %d bytes of blobs, more than the node's cache of %d", ref, pl.total, h.opts.CacheSize)
	}
	return pl, nil
}

// manifest fetches a manifest by tag or digest through the node's own manifest path and
// checks it is what was asked for.
func (h *Handler) manifest(ctx context.Context, repo registryapi.Repo, reference string) (registryapi.Manifest, error) {
	m, err := h.opts.Manifests.Manifest(ctx, repo, reference, accept)
	if err != nil {
		return m, manifestError(repo, reference, err)
	}
	// The node's manifest path verified the content (by digest it hashes what the origin or
	// a peer sent; by tag the digest is the body's own).
	if want, err := digest.Parse(reference); err == nil && m.Digest != want {
		return m, refuse(http.StatusBadGateway, "manifest %s of %s: got %s", reference, repo, m.Digest)
	}
	return m, nil
}

// manifestError gives a failed manifest fetch the status a client of the node would see.
func manifestError(repo registryapi.Repo, reference string, err error) error {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, registryapi.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, registryapi.ErrDenied):
		status = http.StatusForbidden
	case errors.Is(err, registryapi.ErrTooManyRequests):
		status = http.StatusTooManyRequests
	case errors.Is(err, registryapi.ErrTooLarge):
		status = http.StatusUnprocessableEntity
	}
	return &refusal{status: status, err: fmt.Errorf("manifest %s of %s: %w", reference, repo, err)}
}

// nonDistributable layers are fetched by clients from their own URLs, not from the
// registry; a prefetch leaves them out. (types.MediaType.IsDistributable misses the zstd
// variant.)
func nonDistributable(mediaType string) bool {
	return mediaType == string(types.DockerForeignLayer) ||
		strings.HasPrefix(mediaType, "application/vnd.oci.image.layer.nondistributable.")
}

// walk adds what m needs to the plan: for an index, the manifests of the chosen platforms
// (fetched, cached, walked); for an image, its config and layers.
func (h *Handler) walk(ctx context.Context, pl *plan, m registryapi.Manifest, platforms []prefetch.Platform, depth int, seen map[digest.Digest]bool) error {
	// An image manifest and an index are told apart by fields they do not share (config,
	// manifests), so the body is read as both; Docker's v2 documents have the same shapes.
	var image specs.Manifest
	var index specs.Index
	if err := json.Unmarshal(m.Body, &image); err != nil {
		return refuse(http.StatusUnprocessableEntity, "manifest %s of %s is not JSON: %v", m.Digest, pl.repo, err)
	}
	if err := json.Unmarshal(m.Body, &index); err != nil {
		return refuse(http.StatusUnprocessableEntity, "manifest %s of %s is not JSON: %v", m.Digest, pl.repo, err)
	}
	mt := m.MediaType
	if image.MediaType != "" {
		mt = image.MediaType
	}
	hasConfig := image.Config.Digest != "" || image.Config.MediaType != "" || image.Config.Size != 0
	switch {
	case image.SchemaVersion == 1:
		return refuse(http.StatusUnprocessableEntity, "manifest %s of %s is Docker schema 1, which is not supported", m.Digest, pl.repo)
	case types.MediaType(mt).IsIndex() || index.Manifests != nil && !hasConfig:
		if depth >= maxIndexDepth {
			return refuse(http.StatusUnprocessableEntity, "index %s of %s nests indexes more than %d deep", m.Digest, pl.repo, maxIndexDepth)
		}
		for _, desc := range index.Manifests {
			if desc.Platform != nil && len(platforms) > 0 && !matchAny(platforms, *desc.Platform) {
				continue
			}
			d, err := registryapi.ParseDigest(desc.Digest.String())
			if err != nil {
				return refuse(http.StatusUnprocessableEntity, "index %s of %s lists a bad digest %q", m.Digest, pl.repo, desc.Digest)
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			child, err := h.manifest(ctx, pl.repo, d.String())
			if err != nil {
				return err
			}
			if err := h.walk(ctx, pl, child, platforms, depth+1, seen); err != nil {
				return err
			}
		}
		return nil
	case hasConfig:
		pl.manifests++
		if pl.manifests > maxManifests {
			return refuse(http.StatusUnprocessableEntity, "%s lists more than %d manifests", pl.ref, maxManifests)
		}
		for _, desc := range append([]specs.Descriptor{image.Config}, image.Layers...) {
			if nonDistributable(desc.MediaType) {
				continue
			}
			d, err := registryapi.ParseDigest(desc.Digest.String())
			if err != nil || desc.Size < 0 {
				return refuse(http.StatusUnprocessableEntity, "manifest %s of %s lists a bad blob %q (%d bytes)", m.Digest, pl.repo, desc.Digest, desc.Size)
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			if len(pl.blobs) == maxBlobs {
				return refuse(http.StatusUnprocessableEntity, "%s has more than %d blobs", pl.ref, maxBlobs)
			}
			pl.blobs = append(pl.blobs, &blob{digest: d, size: desc.Size})
			pl.total += desc.Size
		}
		return nil
	}
	return refuse(http.StatusUnprocessableEntity, "%s of %s is neither an image manifest nor an index (media type %q)", m.Digest, pl.repo, mt)
}
