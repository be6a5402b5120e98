package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/registryapi"
)

// Prefetch is POST /prefetch on the admin address: the node pulls an image into its cache
// ahead of a rollout, through the same paths a client pull takes (the tag resolved at the
// origin, manifests cached by digest, every blob through the downloader, so peers come
// first and every digest is verified), and streams its progress as newline-delimited JSON.
//
// The work is bounded: the body is small strict JSON, the image's registry must be one the
// node mirrors (checked before any request goes out, as for ?ns=), the manifests and blobs
// of one image are capped, few prefetches run at once, and each has a deadline. A client
// that goes away stops its prefetch; downloads already started run to their end, as they do
// when a pulling client leaves, so nothing is left half-committed.

// Bounds of one prefetch and of the prefetches running at once.
const (
	maxPrefetchBody       = 16 << 10
	maxPrefetchPlatforms  = 16
	maxPrefetchManifests  = 128  // image manifests of one image (an index lists them)
	maxPrefetchBlobs      = 2048 // distinct configs and layers of one image
	maxPrefetchIndexDepth = 2    // an index may list indexes, once
	maxPrefetches         = 4    // prefetches running at once on a node
	prefetchBlobWorkers   = 4    // blobs of one prefetch fetched at once
	prefetchTimeout       = 30 * time.Minute
	prefetchInterval      = time.Second // between progress lines
	prefetchWriteTimeout  = 10 * time.Second
)

// prefetchAccept is what a prefetch accepts when it resolves a tag: containerd's list, so
// the tag's resolution is cached under the same key a containerd pull then looks up.
var prefetchAccept = []string{
	string(types.DockerManifestSchema2),
	string(types.DockerManifestList),
	string(types.OCIManifestSchema1),
	string(types.OCIImageIndex),
	"*/*",
}

// PrefetchRequest is the body of POST /prefetch.
type PrefetchRequest struct {
	// Image is a full reference, registry-host[:port]/repo[:tag][@digest]; Docker's short
	// forms (nginx, library/nginx:1.27) mean docker.io.
	Image string `json:"image"`
	// Platforms, "os/arch[/variant]", select an index's manifests; empty means all of them.
	// They do not apply to an image that is a single manifest.
	Platforms []string `json:"platforms,omitempty"`
}

// Values of PrefetchProgress.Status.
const (
	PrefetchRunning = "running"
	PrefetchOK      = "ok"
	PrefetchError   = "error"
)

// PrefetchProgress is one line of the response to POST /prefetch, and the whole body of a
// request refused before the prefetch started.
type PrefetchProgress struct {
	// Status is "running" on every line but the last, which says "ok" or "error".
	Status string `json:"status"`
	// Image is the normalised reference and Digest the manifest or index it resolved to.
	Image  string        `json:"image,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	// Manifests is the number of image manifests whose blobs are fetched.
	Manifests  int   `json:"manifests"`
	BlobsDone  int   `json:"blobsDone"`
	BlobsTotal int   `json:"blobsTotal"`
	BytesDone  int64 `json:"bytesDone"`
	BytesTotal int64 `json:"bytesTotal"`
	// BytesCached is the part of BytesDone the node held before the prefetch began.
	BytesCached int64 `json:"bytesCached"`
	// Seconds since the node received the request.
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// Values of the result label of shoal_prefetch_requests_total.
const (
	prefetchResultOK       = "ok"
	prefetchResultInvalid  = "invalid"  // refused: body, reference, registry, platform, limits
	prefetchResultBusy     = "busy"     // refused: too many prefetches running
	prefetchResultFailed   = "failed"   // the image could not be resolved or fetched
	prefetchResultCanceled = "canceled" // the client went away
)

// prefetcher serves POST /prefetch for a node.
type prefetcher struct {
	n       *Node
	slots   chan struct{}
	results *prometheus.CounterVec
}

// prefetchHandler builds the /prefetch handler and registers its metric.
func (n *Node) prefetchHandler() http.Handler {
	p := &prefetcher{
		n:     n,
		slots: make(chan struct{}, maxPrefetches),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_prefetch_requests_total",
			Help: "Prefetch requests by result: ok, invalid, busy, failed, canceled.",
		}, []string{"result"}),
	}
	for _, r := range []string{prefetchResultOK, prefetchResultInvalid, prefetchResultBusy, prefetchResultFailed, prefetchResultCanceled} {
		p.results.WithLabelValues(r)
	}
	n.metrics.MustRegister(p.results)
	return p
}

// prefetchError is a prefetch that ends before its stream begins, with an HTTP status.
type prefetchError struct {
	status int
	err    error
}

func (e *prefetchError) Error() string { return e.err.Error() }
func (e *prefetchError) Unwrap() error { return e.err }

func refuse(status int, format string, args ...any) error {
	return &prefetchError{status: status, err: fmt.Errorf(format, args...)}
}

func (p *prefetcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	ref, platforms, err := p.parse(w, r)
	if err != nil {
		p.fail(w, r, err, prefetchResultInvalid)
		return
	}
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	default:
		w.Header().Set("Retry-After", "5")
		p.fail(w, r, refuse(http.StatusTooManyRequests, "%d prefetches are running on this node, try again later", maxPrefetches), prefetchResultBusy)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), prefetchTimeout)
	defer cancel()
	log := p.n.log.With("repo", ref.String())

	plan, err := p.n.planPrefetch(ctx, ref, platforms)
	if err != nil {
		// An image beyond the limits is refused like a bad request; anything else failed.
		result := prefetchResultFailed
		if pe := (*prefetchError)(nil); errors.As(err, &pe) && pe.status == http.StatusUnprocessableEntity {
			result = prefetchResultInvalid
		}
		p.fail(w, r, err, result)
		return
	}
	log.Info("prefetch started", "digest", plan.digest, "blobs", len(plan.blobs), "bytes", plan.total, "platforms", platformList(platforms))

	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out := &progressWriter{w: w, rc: http.NewResponseController(w)}

	done := make(chan error, 1)
	go func() { done <- p.n.runPrefetch(ctx, plan) }()
	tick := time.NewTicker(prefetchInterval)
	defer tick.Stop()
	for running := true; running; {
		if out.err == nil {
			out.write(plan.progress(p.n, PrefetchRunning, begin))
			if out.err != nil {
				// The client is gone: start no more downloads.
				cancel()
			}
		}
		select {
		case <-tick.C:
		case err = <-done:
			running = false
		}
	}
	last := plan.progress(p.n, PrefetchOK, begin)
	result := prefetchResultOK
	switch {
	case out.err != nil || r.Context().Err() != nil:
		result = prefetchResultCanceled
		log.Info("prefetch stopped: the client went away", "duration", time.Since(begin))
	case err != nil:
		result = prefetchResultFailed
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", prefetchTimeout, err)
		}
		last.Status, last.Error = PrefetchError, err.Error()
		log.Error("prefetch failed", "digest", plan.digest, "err", err, "duration", time.Since(begin))
	default:
		log.Info("prefetch done", "digest", plan.digest, "bytes", plan.total, "cached", last.BytesCached, "duration", time.Since(begin))
	}
	if out.err == nil {
		out.write(last)
	}
	p.results.WithLabelValues(result).Inc()
}

// fail answers a prefetch refused before its stream began: the status from a prefetchError
// (502 for anything else) and one PrefetchProgress line saying why.
func (p *prefetcher) fail(w http.ResponseWriter, r *http.Request, err error, result string) {
	if r.Context().Err() != nil {
		p.results.WithLabelValues(prefetchResultCanceled).Inc()
		return
	}
	status := http.StatusBadGateway
	if pe := (*prefetchError)(nil); errors.As(err, &pe) {
		status = pe.status
	}
	p.results.WithLabelValues(result).Inc()
	if status >= 500 {
		p.n.log.Error("prefetch failed", "err", err)
	} else {
		p.n.log.Debug("prefetch refused", "err", err)
	}
	body, _ := json.Marshal(PrefetchProgress{Status: PrefetchError, Error: err.Error()})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// parse reads and checks the body: JSON (by Content-Type, so a browser cannot send it
// without a preflight), small, strict, an image reference of a mirrored registry, known
// platforms.
func (p *prefetcher) parse(w http.ResponseWriter, r *http.Request) (ImageRef, []Platform, error) {
	var req PrefetchRequest
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return ImageRef{}, nil, refuse(http.StatusUnsupportedMediaType, "the body must be JSON sent with Content-Type: application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPrefetchBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil {
		// Exactly one JSON value: trailing data is as wrong as a missing brace.
		switch err = dec.Decode(&struct{}{}); {
		case err == io.EOF:
			err = nil
		case err == nil, !errors.As(err, new(*http.MaxBytesError)):
			err = errors.New("data after the JSON object")
		}
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return ImageRef{}, nil, refuse(http.StatusRequestEntityTooLarge, "the body exceeds %d bytes", maxPrefetchBody)
	}
	if err != nil {
		return ImageRef{}, nil, refuse(http.StatusBadRequest, "bad body: %v (want {\"image\": \"REGISTRY/REPO:TAG\", \"platforms\": [\"linux/amd64\"]})", err)
	}
	if req.Image == "" {
		return ImageRef{}, nil, refuse(http.StatusBadRequest, "no image given")
	}
	ref, err := ParseImageRef(req.Image)
	if err != nil {
		return ImageRef{}, nil, refuse(http.StatusBadRequest, "%w", err)
	}
	if !slices.Contains(p.n.registries, ref.Registry) {
		return ImageRef{}, nil, refuse(http.StatusForbidden, "registry %s is not mirrored by this node", ref.Registry)
	}
	if len(req.Platforms) > maxPrefetchPlatforms {
		return ImageRef{}, nil, refuse(http.StatusBadRequest, "%d platforms given, at most %d", len(req.Platforms), maxPrefetchPlatforms)
	}
	var platforms []Platform
	for _, s := range req.Platforms {
		pl, err := ParsePlatform(s)
		if err != nil {
			return ImageRef{}, nil, refuse(http.StatusBadRequest, "%w", err)
		}
		platforms = append(platforms, pl)
	}
	return ref, platforms, nil
}

// progressWriter writes progress lines, each flushed at once and each bounded in time, so
// a client that stops reading cannot hold the prefetch. After the first failure it writes
// nothing more.
type progressWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (pw *progressWriter) write(p PrefetchProgress) {
	if pw.err != nil {
		return
	}
	line, err := json.Marshal(p)
	if err != nil {
		pw.err = err
		return
	}
	_ = pw.rc.SetWriteDeadline(time.Now().Add(prefetchWriteTimeout))
	if _, err := pw.w.Write(append(line, '\n')); err != nil {
		pw.err = err
		return
	}
	pw.err = pw.rc.Flush()
}

// A prefetch plan: what an image consists of, resolved before any blob is fetched.
type prefetchPlan struct {
	ref       ImageRef
	repo      registryapi.Repo
	digest    digest.Digest // of the manifest or index the reference names
	manifests int
	blobs     []*prefetchBlob
	total     int64
}

// States of a blob in a prefetch.
const (
	blobPending int32 = iota
	blobFetching
	blobCached // held before the prefetch
	blobDone   // fetched by it (or by another download it joined)
)

type prefetchBlob struct {
	digest digest.Digest
	size   int64
	state  atomic.Int32
}

// progress reports where the plan stands.
func (pl *prefetchPlan) progress(n *Node, status string, begin time.Time) PrefetchProgress {
	p := PrefetchProgress{
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
			if st, ok := n.downloader.Status(b.digest); ok {
				p.BytesDone += st.Done
			}
		}
	}
	return p
}

// planPrefetch resolves ref (the tag at the origin, as a pull would, or the digest) and
// walks the manifests it names, keeping only the platforms asked for, into the list of
// distinct blobs to fetch. Every manifest fetched is cached on the way.
func (n *Node) planPrefetch(ctx context.Context, ref ImageRef, platforms []Platform) (*prefetchPlan, error) {
	pl := &prefetchPlan{ref: ref, repo: registryapi.Repo{Registry: ref.Registry, Name: ref.Repo}}
	top, err := n.prefetchManifest(ctx, pl.repo, ref.Reference())
	if err != nil {
		return nil, err
	}
	pl.digest = top.Digest
	seen := make(map[digest.Digest]bool)
	if err := n.walkManifest(ctx, pl, top, platforms, 0, seen); err != nil {
		return nil, err
	}
	if pl.manifests == 0 {
		return nil, refuse(http.StatusNotFound, "%s has no manifest for %s", ref, platformList(platforms))
	}
	if n.cfg.CacheSize > 0 && pl.total > n.cfg.CacheSize {
		return nil, refuse(http.StatusUnprocessableEntity, "%s has %d bytes of blobs, more than the node's cache of %d", ref, pl.total, n.cfg.CacheSize)
	}
	return pl, nil
}

// prefetchManifest fetches a manifest by tag or digest through the node's own manifest
// path and checks it is what was asked for.
func (n *Node) prefetchManifest(ctx context.Context, repo registryapi.Repo, reference string) (registryapi.Manifest, error) {
	m, err := n.Manifest(ctx, repo, reference, prefetchAccept)
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
	return &prefetchError{status: status, err: fmt.Errorf("manifest %s of %s: %w", reference, repo, err)}
}

// manifestDoc is the part of an image manifest or an index a prefetch reads.
type manifestDoc struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Config        *descriptorDoc   `json:"config"`
	Layers        []descriptorDoc  `json:"layers"`
	Manifests     []descriptorDoc  `json:"manifests"`
	FSLayers      []map[string]any `json:"fsLayers"` // schema 1
}

type descriptorDoc struct {
	MediaType string    `json:"mediaType"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	Platform  *Platform `json:"platform"`
}

// nonDistributable layers are fetched by clients from their own URLs, not from the
// registry; a prefetch leaves them out. (types.MediaType.IsDistributable misses the zstd
// variant.)
func nonDistributable(mediaType string) bool {
	return mediaType == string(types.DockerForeignLayer) ||
		strings.HasPrefix(mediaType, "application/vnd.oci.image.layer.nondistributable.")
}

// walkManifest adds what m needs to the plan: for an index, the manifests of the chosen
// platforms (fetched, cached, walked); for an image, its config and layers.
func (n *Node) walkManifest(ctx context.Context, pl *prefetchPlan, m registryapi.Manifest, platforms []Platform, depth int, seen map[digest.Digest]bool) error {
	var doc manifestDoc
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return refuse(http.StatusUnprocessableEntity, "manifest %s of %s is not JSON: %v", m.Digest, pl.repo, err)
	}
	mt := m.MediaType
	if doc.MediaType != "" {
		mt = doc.MediaType
	}
	switch {
	case doc.SchemaVersion == 1 || doc.FSLayers != nil:
		return refuse(http.StatusUnprocessableEntity, "manifest %s of %s is Docker schema 1, which is not supported", m.Digest, pl.repo)
	case types.MediaType(mt).IsIndex() || doc.Manifests != nil && doc.Config == nil:
		if depth >= maxPrefetchIndexDepth {
			return refuse(http.StatusUnprocessableEntity, "index %s of %s nests indexes more than %d deep", m.Digest, pl.repo, maxPrefetchIndexDepth)
		}
		for _, desc := range doc.Manifests {
			if desc.Platform != nil && len(platforms) > 0 && !matchAny(platforms, *desc.Platform) {
				continue
			}
			d, err := registryapi.ParseDigest(desc.Digest)
			if err != nil {
				return refuse(http.StatusUnprocessableEntity, "index %s of %s lists a bad digest %q", m.Digest, pl.repo, desc.Digest)
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			child, err := n.prefetchManifest(ctx, pl.repo, d.String())
			if err != nil {
				return err
			}
			if err := n.walkManifest(ctx, pl, child, platforms, depth+1, seen); err != nil {
				return err
			}
		}
		return nil
	case doc.Config != nil:
		pl.manifests++
		if pl.manifests > maxPrefetchManifests {
			return refuse(http.StatusUnprocessableEntity, "%s lists more than %d manifests", pl.ref, maxPrefetchManifests)
		}
		for _, desc := range append([]descriptorDoc{*doc.Config}, doc.Layers...) {
			if nonDistributable(desc.MediaType) {
				continue
			}
			d, err := registryapi.ParseDigest(desc.Digest)
			if err != nil || desc.Size < 0 {
				return refuse(http.StatusUnprocessableEntity, "manifest %s of %s lists a bad blob %q (%d bytes)", m.Digest, pl.repo, desc.Digest, desc.Size)
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			if len(pl.blobs) == maxPrefetchBlobs {
				return refuse(http.StatusUnprocessableEntity, "%s has more than %d blobs", pl.ref, maxPrefetchBlobs)
			}
			pl.blobs = append(pl.blobs, &prefetchBlob{digest: d, size: desc.Size})
			pl.total += desc.Size
		}
		return nil
	}
	return refuse(http.StatusUnprocessableEntity, "%s of %s is neither an image manifest nor an index (media type %q)", m.Digest, pl.repo, mt)
}

// runPrefetch fetches the plan's blobs, a few at a time, and returns at the first failure
// (ctx ends the others; their downloads go on without the prefetch).
func (n *Node) runPrefetch(ctx context.Context, pl *prefetchPlan) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan *prefetchBlob)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range min(prefetchBlobWorkers, len(pl.blobs)) {
		wg.Go(func() {
			for b := range next {
				if err := n.prefetchBlob(ctx, pl.repo, b); err != nil {
					once.Do(func() {
						firstErr = err
						cancel()
					})
				}
			}
		})
	}
feed:
	for _, b := range pl.blobs {
		select {
		case next <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// prefetchBlob makes sure the node holds b: a cached blob is marked recently used; any
// other joins or starts its download and waits until it is verified and committed.
func (n *Node) prefetchBlob(ctx context.Context, repo registryapi.Repo, b *prefetchBlob) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if cached, err := n.store.Open(b.digest); err == nil {
		cached.Close()
		b.state.Store(blobCached)
		return nil
	}
	b.state.Store(blobFetching)
	r, err := n.downloader.Open(ctx, repo.Registry, repo.Name, b.digest)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s: %w", b.digest, edgeError(err))
	}
	defer r.Close()
	if r.Size() != b.size {
		return fmt.Errorf("blob %s is %d bytes, its manifest says %d", b.digest, r.Size(), b.size)
	}
	if err := r.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s: %w", b.digest, edgeError(err))
	}
	if _, err := n.store.Stat(b.digest); err != nil {
		return fmt.Errorf("blob %s verified but not kept in the cache: %w", b.digest, err)
	}
	b.state.Store(blobDone)
	return nil
}

// ImageRef is a parsed image reference.
type ImageRef struct {
	// Registry is the registry key (as NormalizeNamespace gives it), e.g. "docker.io" or
	// "127.0.0.1:5000".
	Registry string
	// Repo is the repository path, e.g. "library/nginx".
	Repo string
	// Tag is "" when only a digest was given.
	Tag    string
	Digest digest.Digest
}

// maxImageRefLength bounds a reference: a host, a repository name, a tag and a digest.
const maxImageRefLength = 1024

// ParseImageRef parses registry-host[:port]/repo[:tag][@digest] and normalises it as Docker
// does: a first path component that has no '.' or ':' and is not "localhost" (and is lower
// case) is part of the repository on docker.io, and a docker.io repository without '/' is
// in library/. Without tag or digest the tag is "latest".
func ParseImageRef(s string) (ImageRef, error) {
	bad := func(why string) (ImageRef, error) {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: %s", truncateRef(s), why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxImageRefLength {
		return bad(fmt.Sprintf("longer than %d bytes", maxImageRefLength))
	}
	var ref ImageRef
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d, err := registryapi.ParseDigest(rest[i+1:])
		if err != nil {
			return bad("bad digest")
		}
		ref.Digest, rest = d, rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		if err := registryapi.ValidateTag(rest[i+1:]); err != nil {
			return bad("bad tag")
		}
		ref.Tag, rest = rest[i+1:], rest[:i]
	}
	host, name := registryapi.DockerHub, rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		first := rest[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			host, name = first, rest[i+1:]
		}
	}
	key, err := registryapi.NormalizeNamespace(host)
	if err != nil {
		return bad("bad registry host")
	}
	ref.Registry = key
	if key == registryapi.DockerHub && !strings.Contains(name, "/") {
		name = "library/" + name
	}
	if err := registryapi.ValidateName(name); err != nil {
		return bad("bad repository name (lower-case letters, digits and separators)")
	}
	ref.Repo = name
	if ref.Tag == "" && ref.Digest == "" {
		ref.Tag = "latest"
	}
	return ref, nil
}

func truncateRef(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// String is the full reference, registry/repo[:tag][@digest].
func (r ImageRef) String() string {
	s := r.Registry + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Reference is what a manifest request names: the digest if there is one, else the tag.
func (r ImageRef) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// Platform is the platform of an index entry, or one asked for.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses "os/arch[/variant]", e.g. "linux/amd64" or "linux/arm/v7".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", truncateRef(s))
	}
	for _, part := range parts {
		if !platformPart(part) {
			return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant] in lower-case letters, digits, '.', '_' and '-'", truncateRef(s))
		}
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func platformPart(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// matches reports whether an index entry for have serves the platform p asked for: same
// OS and architecture, and the same variant when p names one (arm64 without a variant is
// v8, as containerd has it).
func (p Platform) matches(have Platform) bool {
	if p.OS != have.OS || p.Architecture != have.Architecture {
		return false
	}
	if p.Variant == "" {
		return true
	}
	variant := have.Variant
	if variant == "" && have.Architecture == "arm64" {
		variant = "v8"
	}
	return p.Variant == variant
}

func matchAny(ps []Platform, have Platform) bool {
	return slices.ContainsFunc(ps, func(p Platform) bool { return p.matches(have) })
}

func platformList(ps []Platform) string {
	if len(ps) == 0 {
		return "any platform"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}
