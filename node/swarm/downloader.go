// Package swarm downloads blobs into the store: one Download per digest per node, shared by
// every client that asks for it, streaming to them while it runs and committing only content
// whose digest verifies. Bytes come from the origin registry; peers slot in as further sources.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/store"
)

// Options configures a Downloader.
type Options struct {
	Store      *store.Store
	Origin     Origin
	ChunkSize  int64 // 0 means chunk.DefaultSize
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Fleet, if set, is where downloads find peers to fetch chunks from; nil means the origin
	// alone.
	Fleet Fleet
	// Policy decides which chunk to ask of whom.
	Policy Policy
	// OnChunkList, if set, receives the chunk list of each blob a download committed (only
	// with a Fleet), so the node can hand it to peers.
	OnChunkList func(d digest.Digest, chunkSize int64, list []digest.Digest)
	// OnCommit, if set, is called after a download committed its blob, so the node can
	// announce it; it must not block.
	OnCommit func(d digest.Digest)
	// Attempts bounds how often in a row the origin may fail a download's requests, when no
	// peer can supply the rest, before the download gives up; 0 means 4.
	Attempts int
	// BanFor is how long a peer that sent false data is not asked again; 0 means 10 minutes.
	BanFor time.Duration
	// MaxBuffered caps the bytes that endgame duplicates hold in memory (at least one chunk
	// each); 0 means 32 MiB.
	MaxBuffered int64
	// Clock is the time downloads go by: their timeouts, polls, backoffs and bans. Nil means
	// the real clock.
	Clock clock.Clock
}

// Downloader runs at most one Download per digest. Its Run method owns the downloads'
// goroutines; Open attaches readers.
type Downloader struct {
	opts    Options
	log     *slog.Logger
	clock   clock.Clock
	starts  chan *Download
	stopped chan struct{}
	metrics metrics

	mu     sync.Mutex
	active map[digest.Digest]*Download
	bans   map[string]time.Time // peer ID to the end of its ban

	peerBytes atomic.Int64 // the fetched{source="peer"} counter, readable

	// polls is the node's budget of HAVE polls, shared by its downloads.
	polls *rate.Limiter
	// askers are the peers that asked about each blob lately (askers.go).
	askers *askers
}

type metrics struct {
	fetched   *prometheus.CounterVec
	downloads *prometheus.CounterVec
	active    prometheus.Gauge
	failures  *prometheus.CounterVec
	bans      prometheus.Counter
}

// New returns a Downloader; call Run to make it work.
func New(opts Options) *Downloader {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = chunk.DefaultSize
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 4
	}
	if opts.BanFor <= 0 {
		opts.BanFor = 10 * time.Minute
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = maxBuffered
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := metrics{
		fetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_blob_fetched_bytes_total",
			Help: "Blob bytes the node fetched, by source.",
		}, []string{"source"}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_downloads_total",
			Help: "Finished blob downloads, by result.",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_downloads_active",
			Help: "Blob downloads in progress.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_chunk_failures_total",
			Help: "Chunk requests that failed, by reason: origin, error (a peer failed or died), not_held, verify (a peer's chunk failed its chunk list), protocol.",
		}, []string{"reason"}),
		bans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_bans_total",
			Help: "Peers banned for sending false data.",
		}),
	}
	for _, reason := range []string{"origin", "error", "not_held", "verify", "protocol"} {
		m.failures.WithLabelValues(reason)
	}
	for _, source := range []string{"peer", "origin"} {
		m.fetched.WithLabelValues(source)
	}
	for _, result := range []string{"ok", "failed", "mismatch"} {
		m.downloads.WithLabelValues(result)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m.fetched, m.downloads, m.active, m.failures, m.bans)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.New()
	}
	return &Downloader{
		opts:    opts,
		log:     log,
		clock:   clk,
		starts:  make(chan *Download),
		stopped: make(chan struct{}),
		metrics: m,
		active:  make(map[digest.Digest]*Download),
		bans:    make(map[string]time.Time),
		polls:   rate.NewLimiter(pollBudget, pollBudget),
		askers:  newAskers(),
	}
}

// Ban stops every download from asking peer id for a while.
func (dl *Downloader) Ban(id string, why error) {
	dl.mu.Lock()
	_, already := dl.bans[id]
	dl.bans[id] = dl.clock.Now().Add(dl.opts.BanFor)
	dl.mu.Unlock()
	if !already {
		dl.metrics.bans.Inc()
		dl.log.Warn("peer banned", "peer", id, "for", dl.opts.BanFor, "err", why)
	}
}

// Banned reports whether peer id is banned now.
func (dl *Downloader) Banned(id string) bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	until, ok := dl.bans[id]
	if ok && dl.clock.Now().After(until) {
		delete(dl.bans, id)
		return false
	}
	return ok
}

// Fetched counts n bytes the node fetched from source ("peer" or "origin"): a download's
// chunks, or something outside of a download, such as a manifest.
func (dl *Downloader) Fetched(source string, n int) {
	dl.metrics.fetched.WithLabelValues(source).Add(float64(n))
	if source == "peer" {
		dl.peerBytes.Add(int64(n))
	}
}

// PeerBytes is every byte the node fetched from peers so far, blobs and manifests.
func (dl *Downloader) PeerBytes() int64 { return dl.peerBytes.Load() }

func (dl *Downloader) chunkFailure(reason string) {
	dl.metrics.failures.WithLabelValues(reason).Inc()
}

// Hint tells the download of d, if one runs, that peer asked about d: it is most likely
// fetching it too, so the two can trade chunks. The peer is also one of d's askers, named
// to the others who ask (Askers). It never blocks.
func (dl *Downloader) Hint(peer string, d digest.Digest) {
	dl.askers.add(d, peer, dl.clock.Now())
	if download := dl.lookup(d); download != nil {
		download.hint(peer)
	}
}

// Askers returns the peers that asked about d in the last askersFor, newest first, at most
// maxAskers: what a node holding d whole names to those who ask about it (chunk.Have.Peers).
func (dl *Downloader) Askers(d digest.Digest) []string {
	return dl.askers.list(d, dl.clock.Now())
}

// ErrStopped is returned by Open once Run has returned.
var ErrStopped = errors.New("downloader stopped")

// Run starts downloads until ctx ends, then waits for the running ones to stop.
func (dl *Downloader) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		close(dl.stopped)
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-dl.starts:
			wg.Add(1)
			go func() {
				defer wg.Done()
				dl.run(ctx, d)
			}()
		}
	}
}

// lookup returns the running download of d, or nil.
func (dl *Downloader) lookup(d digest.Digest) *Download {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.active[d]
}

// Active returns the size of the blob if a download for it is running and knows it.
func (dl *Downloader) Active(d digest.Digest) (int64, bool) {
	download := dl.lookup(d)
	if download == nil {
		return 0, false
	}
	download.mu.Lock()
	defer download.mu.Unlock()
	return download.size, download.size >= 0 && download.err == nil
}

// Open returns a reader of the blob d from repo at registry, joining the running download
// for d or starting one. It returns once the blob's size is known. ctx bounds only this
// reader: the download goes on when the reader leaves.
func (dl *Downloader) Open(ctx context.Context, registry, repo string, d digest.Digest) (*Reader, error) {
	download, err := dl.join(ctx, registry, repo, d)
	if err != nil {
		return nil, err
	}
	size, err := download.waitSize(ctx)
	if err == nil && size == 0 {
		// An empty body would complete at once: hold it until the digest is checked.
		err = download.waitDone(ctx)
	}
	if err != nil {
		download.opened(nil)
		download.release()
		return nil, err
	}
	return newReader(ctx, download), nil
}

func (dl *Downloader) join(ctx context.Context, registry, repo string, d digest.Digest) (*Download, error) {
	dl.mu.Lock()
	for {
		old := dl.active[d]
		if old == nil {
			break
		}
		if old.acquire() {
			dl.mu.Unlock()
			return old, nil
		}
		// Failed and still letting go of its file: a new download starts once it has.
		dl.mu.Unlock()
		select {
		case <-old.ended:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		dl.mu.Lock()
	}
	download := newDownload(d, registry, repo)
	download.refs++ // the reader's reference, besides the fetch's own
	download.opening++
	dl.active[d] = download
	dl.mu.Unlock()
	if err := dl.launch(ctx, download); err != nil {
		return nil, err
	}
	return download, nil
}

// launch hands a download just put in the active set to Run; it fails the download if Run
// has returned or ctx ends first.
func (dl *Downloader) launch(ctx context.Context, download *Download) error {
	select {
	case dl.starts <- download:
		return nil
	case <-dl.stopped:
		dl.finish(download, ErrStopped)
		return ErrStopped
	case <-ctx.Done():
		dl.finish(download, ctx.Err())
		return ctx.Err()
	}
}

// finish removes a download from the active set and ends its fetch reference.
func (dl *Downloader) finish(download *Download, err error) {
	if err != nil {
		download.fail(err)
	}
	dl.mu.Lock()
	if dl.active[download.digest] == download {
		delete(dl.active, download.digest)
	}
	dl.mu.Unlock()
	close(download.ended)
	download.release()
}

// run fetches, verifies and commits one blob.
func (dl *Downloader) run(ctx context.Context, download *Download) {
	dl.metrics.active.Inc()
	defer dl.metrics.active.Dec()
	start := dl.clock.Now()
	log := dl.log.With("digest", download.digest, "repo", download.registry+"/"+download.repo)
	e := newEngine(dl, download, log)
	err := e.run(ctx)
	result := "ok"
	switch {
	case err == nil:
		log.Debug("blob downloaded", "bytes", download.size, "duration", dl.clock.Since(start), "peers", len(e.suppliers))
	case errors.Is(err, ErrDigestMismatch):
		result = "mismatch"
		log.Error("blob failed verification, discarded", "err", err)
	default:
		result = "failed"
		log.Warn("blob download failed", "err", err, "duration", dl.clock.Since(start))
	}
	dl.metrics.downloads.WithLabelValues(result).Inc()
	dl.finish(download, err)
	if errors.Is(err, ErrDigestMismatch) && len(e.suppliers) > 0 && ctx.Err() == nil {
		// The liars are banned now: fetch again at once, without them, so the client's
		// retry finds the blob on its way (or in the cache).
		log.Info("fetching the blob again without the banned peers")
		dl.restart(ctx, download)
	}
}

// restart starts a new download of what download fetched, with no reader, unless another
// has started meanwhile.
func (dl *Downloader) restart(ctx context.Context, old *Download) {
	if err := dl.detached(ctx, old.registry, old.repo, old.digest); err != nil {
		dl.log.Debug("blob not fetched again", "digest", old.digest, "err", err)
	}
}

// Fetch starts a download of d from repo at registry with no reader, unless one runs or the
// store holds d already: a seed, asked by a peer, fetches the blob for the fleet. It returns
// once the download is started; the download goes on after ctx ends.
func (dl *Downloader) Fetch(ctx context.Context, registry, repo string, d digest.Digest) error {
	if _, err := dl.opts.Store.Stat(d); err == nil {
		return nil
	}
	return dl.detached(ctx, registry, repo, d)
}

// detached starts a download with no reader unless one of d runs.
func (dl *Downloader) detached(ctx context.Context, registry, repo string, d digest.Digest) error {
	dl.mu.Lock()
	if dl.active[d] != nil {
		dl.mu.Unlock()
		return nil
	}
	download := newDownload(d, registry, repo)
	dl.active[d] = download
	dl.mu.Unlock()
	return dl.launch(ctx, download)
}

// Len is the number of downloads in progress.
func (dl *Downloader) Len() int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return len(dl.active)
}

// ErrChunkMissing means a running download does not hold the chunk asked for (yet).
var ErrChunkMissing = errors.New("chunk not held")

// Progress reports what a running download holds, for peers asking: the blob's size, the
// chunk size, the chunks completely written and those being fetched from the origin. ok is
// false when no download of d is running or its size is not known yet. Those chunks are not
// verified until the whole blob is; peers check what they receive.
func (dl *Downloader) Progress(d digest.Digest) (chunk.Have, bool) {
	download := dl.lookup(d)
	if download == nil {
		return chunk.Have{}, false
	}
	download.mu.Lock()
	defer download.mu.Unlock()
	if download.size < 0 || download.err != nil || download.partial == nil && download.blob == nil {
		return chunk.Have{}, false
	}
	h := chunk.Have{Size: download.size, ChunkSize: dl.opts.ChunkSize, Chunks: make([]bool, len(download.fill))}
	for i, f := range download.fill {
		h.Chunks[i] = download.done || f == chunk.Len(download.size, dl.opts.ChunkSize, i)
		if !h.Chunks[i] && i < len(download.fetching) && download.fetching[i] {
			if h.Fetching == nil {
				h.Fetching = make([]bool, len(download.fill))
			}
			h.Fetching[i] = true
		}
	}
	return h, true
}

// closedChan is what Changes returns when no download runs: nothing will change that a
// watcher would not learn of at once by looking again.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Changes returns a channel closed once what Progress reports of d changes: a chunk
// completes, starts or stops being fetched from the origin, or the download ends. With no
// download of d running, the channel is closed already. Ask before Progress, so that no
// change falls between the two.
func (dl *Downloader) Changes(d digest.Digest) <-chan struct{} {
	download := dl.lookup(d)
	if download == nil {
		return closedChan
	}
	return download.heldChanged()
}

// ReadChunk copies chunk i of a running download of d to w, if that chunk is complete.
func (dl *Downloader) ReadChunk(d digest.Digest, i int, w io.Writer) (int64, error) {
	download := dl.lookup(d)
	if download == nil {
		return 0, fmt.Errorf("chunk %d of %s: %w", i, d, ErrChunkMissing)
	}
	download.mu.Lock()
	if download.size < 0 || download.err != nil || i < 0 || i >= len(download.fill) {
		download.mu.Unlock()
		return 0, fmt.Errorf("chunk %d of %s: %w", i, d, ErrChunkMissing)
	}
	cs := dl.opts.ChunkSize
	n := chunk.Len(download.size, cs, i)
	if !download.done && download.fill[i] < n {
		download.mu.Unlock()
		return 0, fmt.Errorf("chunk %d of %s: %w", i, d, ErrChunkMissing)
	}
	var src io.ReaderAt = download.partial
	if download.blob != nil {
		src = download.blob
	}
	download.mu.Unlock()
	return io.Copy(w, io.NewSectionReader(src, int64(i)*cs, n))
}

// DownloadStatus is where one running download stands.
type DownloadStatus struct {
	Digest digest.Digest
	// Size is the blob's size, -1 while unknown; ChunkSize the download's chunk size.
	Size      int64
	ChunkSize int64
	// Done is the bytes of the chunks completely written (every byte once committed).
	Done int64
	// FromPeers and FromOrigin are the bytes fetched so far from each.
	FromPeers  int64
	FromOrigin int64
}

// Downloads reports every running download, for announcing progress.
func (dl *Downloader) Downloads() []DownloadStatus {
	dl.mu.Lock()
	running := make([]*Download, 0, len(dl.active))
	for _, download := range dl.active {
		running = append(running, download)
	}
	dl.mu.Unlock()
	out := make([]DownloadStatus, 0, len(running))
	for _, download := range running {
		out = append(out, download.status(dl.opts.ChunkSize))
	}
	return out
}

// Status reports where the running download of d stands, if there is one.
func (dl *Downloader) Status(d digest.Digest) (DownloadStatus, bool) {
	download := dl.lookup(d)
	if download == nil {
		return DownloadStatus{}, false
	}
	return download.status(dl.opts.ChunkSize), true
}
