// Package prefetcher is the node's side of POST /prefetch: it pulls an image into the
// node's cache ahead of a rollout, through the same paths a client pull takes (the tag
// resolved at the origin, manifests cached by digest, every blob through the downloader, so
// peers come first and every digest is verified), and streams its progress as
// newline-delimited JSON in package prefetch's wire format.
//
// The work is bounded: the body is small strict JSON, the image's registry must be one the
// node mirrors (checked before any request goes out, as for ?ns=), the manifests and blobs
// of one image are capped, few prefetches run at once, and each has a deadline. A client
// that goes away stops its prefetch; downloads already started run to their end, as they do
// when a pulling client leaves, so nothing is left half-committed.
//
// It reaches the node through the small interfaces below, so it can be built and tested
// without a store, a downloader or a network.
package prefetcher

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/registryapi"
)

// Manifests fetches a manifest by tag or digest the way a pull does, caching it on the
// way. Its errors are the /v2 edge's (registryapi.ErrNotFound, ErrDenied, ...).
type Manifests interface {
	Manifest(ctx context.Context, repo registryapi.Repo, reference string, accept []string) (registryapi.Manifest, error)
}

// Cache is the node's blob cache.
type Cache interface {
	// Touch marks d most recently used, so eviction spares it until the rollout pulls it;
	// an error means the cache does not hold d.
	Touch(d digest.Digest) error
	// Stat reports, without marking it used, whether the cache holds d: nil if it does.
	Stat(d digest.Digest) error
}

// Downloads fetches blobs into the cache: from peers first, else the origin.
type Downloads interface {
	// Open joins the download of d, starting it if none runs.
	Open(ctx context.Context, repo registryapi.Repo, d digest.Digest) (Download, error)
	// Done is how many bytes of d's running download have landed, in whole chunks; false
	// when none runs.
	Done(d digest.Digest) (int64, bool)
}

// Download is one reader's hold on a running download.
type Download interface {
	// Size is the blob's length in bytes.
	Size() int64
	// Wait returns once the blob is verified and committed, or when ctx ends: the download
	// itself goes on.
	Wait(ctx context.Context) error
	Close() error
}

// Options are what a Handler needs of its node.
type Options struct {
	Manifests Manifests
	Cache     Cache
	Downloads Downloads
	// Registries are the registry keys (as registryapi.NormalizeNamespace gives them) the
	// node mirrors: images of any other registry are refused.
	Registries []string
	// CacheSize is the cache's capacity in bytes, 0 for unlimited: an image whose blobs do
	// not fit is refused before any is fetched.
	CacheSize int64
	// Registerer receives shoal_prefetch_requests_total; nil means it is not exported.
	Registerer prometheus.Registerer
	// Logger receives the prefetches' logs; nil discards them.
	Logger *slog.Logger
}

// Bounds of one prefetch and of the prefetches running at once.
const (
	maxBody          = 16 << 10
	maxPlatforms     = 16
	maxManifests     = 128  // image manifests of one image (an index lists them)
	maxBlobs         = 2048 // distinct configs and layers of one image
	maxIndexDepth    = 2    // an index may list indexes, once
	maxPrefetches    = 4    // prefetches running at once on a node
	blobWorkers      = 4    // blobs of one prefetch fetched at once
	timeout          = 30 * time.Minute
	progressEvery    = time.Second // between progress lines
	lineWriteTimeout = 10 * time.Second
)

// Values of the result label of shoal_prefetch_requests_total.
const (
	resultOK       = "ok"
	resultInvalid  = "invalid"  // refused: body, reference, registry, platform, limits
	resultBusy     = "busy"     // refused: too many prefetches running
	resultFailed   = "failed"   // the image could not be resolved or fetched
	resultCanceled = "canceled" // the client went away
)

// Handler serves POST /prefetch for a node.
type Handler struct {
	opts    Options
	log     *slog.Logger
	slots   chan struct{}
	results *prometheus.CounterVec
}

// New builds the handler and registers its metric.
func New(opts Options) (*Handler, error) {
	h := &Handler{
		opts:  opts,
		log:   opts.Logger,
		slots: make(chan struct{}, maxPrefetches),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_prefetch_requests_total",
			Help: "Prefetch requests by result: ok, invalid, busy, failed, canceled.",
		}, []string{"result"}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range []string{resultOK, resultInvalid, resultBusy, resultFailed, resultCanceled} {
		h.results.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(h.results); err != nil {
			return nil, fmt.Errorf("register prefetch metrics: %w", err)
		}
	}
	return h, nil
}
