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
	"math/rand/v2"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/node/store"
)

// DefaultChunkSize is the unit of resumption and, with peers, of exchange.
const DefaultChunkSize = 4 << 20

// Origin is the upstream registry a download takes bytes from.
type Origin interface {
	// GetBlob returns the blob's bytes from offset (length < 0: to the end) and its total size.
	GetBlob(ctx context.Context, registry, repo string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error)
}

// Options configures a Downloader.
type Options struct {
	Store      *store.Store
	Origin     Origin
	ChunkSize  int64 // 0 means DefaultChunkSize
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// OnStart, if set, is called when a download starts, so the node can announce that it
	// is fetching the blob; it must not block.
	OnStart func(digest.Digest)
	// Attempts bounds how often a download re-requests the origin after a broken transfer
	// before giving up; 0 means 4.
	Attempts int
}

// Downloader runs at most one Download per digest. Its Run method owns the downloads'
// goroutines; Open attaches readers.
type Downloader struct {
	opts    Options
	log     *slog.Logger
	starts  chan *Download
	stopped chan struct{}
	metrics metrics

	mu     sync.Mutex
	active map[digest.Digest]*Download
}

type metrics struct {
	fetched   *prometheus.CounterVec
	downloads *prometheus.CounterVec
	active    prometheus.Gauge
}

// New returns a Downloader; call Run to make it work.
func New(opts Options) *Downloader {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 4
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
	}
	for _, source := range []string{"peer", "origin"} {
		m.fetched.WithLabelValues(source)
	}
	for _, result := range []string{"ok", "failed", "mismatch"} {
		m.downloads.WithLabelValues(result)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m.fetched, m.downloads, m.active)
	}
	return &Downloader{
		opts:    opts,
		log:     log,
		starts:  make(chan *Download),
		stopped: make(chan struct{}),
		metrics: m,
		active:  make(map[digest.Digest]*Download),
	}
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
		download.release()
		return nil, err
	}
	return newReader(ctx, download), nil
}

func (dl *Downloader) join(ctx context.Context, registry, repo string, d digest.Digest) (*Download, error) {
	dl.mu.Lock()
	if download := dl.active[d]; download != nil && download.acquire() {
		dl.mu.Unlock()
		return download, nil
	}
	download := newDownload(d, registry, repo)
	download.refs++ // the reader's reference, besides the fetch's own
	dl.active[d] = download
	dl.mu.Unlock()
	select {
	case dl.starts <- download:
		return download, nil
	case <-dl.stopped:
		err := ErrStopped
		dl.finish(download, err)
		return nil, err
	case <-ctx.Done():
		dl.finish(download, ctx.Err())
		return nil, ctx.Err()
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
	download.release()
}

// run fetches, verifies and commits one blob.
func (dl *Downloader) run(ctx context.Context, download *Download) {
	if dl.opts.OnStart != nil {
		dl.opts.OnStart(download.digest)
	}
	dl.metrics.active.Inc()
	defer dl.metrics.active.Dec()
	start := time.Now()
	log := dl.log.With("digest", download.digest, "repo", download.registry+"/"+download.repo)
	err := dl.fetch(ctx, download)
	result := "ok"
	switch {
	case err == nil:
		log.Debug("blob downloaded", "bytes", download.size, "duration", time.Since(start), "source", "origin")
	case errors.Is(err, ErrDigestMismatch):
		result = "mismatch"
		log.Error("blob failed verification, discarded", "err", err)
	default:
		result = "failed"
		log.Warn("blob download failed", "err", err, "duration", time.Since(start))
	}
	dl.metrics.downloads.WithLabelValues(result).Inc()
	dl.finish(download, err)
}

func (dl *Downloader) fetch(ctx context.Context, download *Download) error {
	d := download.digest
	body, size, err := dl.opts.Origin.GetBlob(ctx, download.registry, download.repo, d, 0, -1)
	if err != nil {
		return err
	}
	partial, err := dl.opts.Store.CreatePartial(d, size, dl.opts.ChunkSize)
	if errors.Is(err, store.ErrExists) {
		// Committed by another path since the caller looked: serve that copy.
		body.Close()
		blob, err := dl.opts.Store.Open(d)
		if err != nil {
			return err
		}
		download.startCommitted(blob)
		return nil
	}
	if err != nil {
		body.Close()
		return fmt.Errorf("create partial %s: %w", d, err)
	}
	download.start(partial)

	// The verifier follows the written bytes in order; it ends with the download.
	abort := make(chan struct{})
	verified := make(chan error, 1)
	go func() { verified <- download.verify(abort) }()

	err = dl.copyFromOrigin(ctx, download, body)
	if err != nil {
		// Readers learn why before the file goes away under them.
		download.fail(err)
		close(abort)
		<-verified
		// What was written came from the origin in good faith: keep it for a resume.
		if cerr := partial.Close(); cerr != nil {
			dl.log.Warn("close partial", "digest", d, "err", cerr)
		}
		return err
	}
	if err := <-verified; err != nil {
		err = fmt.Errorf("verify %s: %w", d, err)
		download.fail(err)
		if aerr := partial.Abort(); aerr != nil {
			dl.log.Warn("discard partial", "digest", d, "err", aerr)
		}
		return err
	}
	// Clients may finish now; making the file durable need not hold them up.
	download.markVerified()
	blob, err := partial.Commit("")
	if err != nil {
		err = fmt.Errorf("commit %s: %w", d, err)
		download.fail(err)
		partial.Abort()
		return err
	}
	download.commit(blob)
	return nil
}

// copyFromOrigin writes the origin's bytes into the partial, resuming from the first missing
// byte after a broken transfer. body starts at offset 0.
func (dl *Downloader) copyFromOrigin(ctx context.Context, download *Download, body io.ReadCloser) error {
	d := download.digest
	off := int64(0)
	if gap := download.firstGap(); gap > 0 {
		// A partial from before a restart: ask only for what is missing.
		body.Close()
		body = nil
		off = gap
	}
	buf := make([]byte, 256<<10)
	for attempt := 0; ; {
		if off >= download.size {
			if body != nil {
				body.Close()
			}
			return nil
		}
		if body == nil {
			var err error
			body, _, err = dl.opts.Origin.GetBlob(ctx, download.registry, download.repo, d, off, -1)
			if err != nil {
				if attempt++; attempt >= dl.opts.Attempts || ctx.Err() != nil {
					return err
				}
				if err := sleep(ctx, backoff(attempt)); err != nil {
					return err
				}
				continue
			}
		}
		n, err := dl.copyBody(download, body, off, buf)
		body.Close()
		body = nil
		if n > 0 {
			attempt = 0
		}
		off += n
		if off >= download.size {
			continue
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		if attempt++; attempt >= dl.opts.Attempts || ctx.Err() != nil {
			return fmt.Errorf("read %s from origin at %d: %w", d, off, err)
		}
		dl.log.Debug("origin transfer broke, resuming", "digest", d, "bytes", off, "err", err)
	}
}

// copyBody copies body into the partial at off until EOF; it returns the bytes written.
func (dl *Downloader) copyBody(download *Download, body io.Reader, off int64, buf []byte) (int64, error) {
	partial := download.partial
	var total int64
	for {
		// Whatever has arrived is written at once, so clients and peers see it without
		// waiting for a full buffer from a slow origin.
		n, rerr := body.Read(buf)
		if n > 0 {
			if int64(n) > download.size-off {
				return total, fmt.Errorf("origin sent more than %d bytes", download.size)
			}
			if _, err := partial.WriteAt(buf[:n], off); err != nil {
				return total, fmt.Errorf("write partial: %w", err)
			}
			for _, i := range download.wrote(off, int64(n)) {
				if err := partial.MarkChunk(i); err != nil {
					return total, fmt.Errorf("mark chunk %d: %w", i, err)
				}
			}
			dl.metrics.fetched.WithLabelValues("origin").Add(float64(n))
			off += int64(n)
			total += int64(n)
		}
		switch {
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		}
	}
}

func backoff(attempt int) time.Duration {
	base := 100 * time.Millisecond << min(attempt, 5)
	return base/2 + rand.N(base/2)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
// chunk size and the chunks completely written. ok is false when no download of d is running
// or its size is not known yet. Those chunks are not verified until the whole blob is;
// peers check what they receive.
func (dl *Downloader) Progress(d digest.Digest) (size, chunkSize int64, chunks []bool, ok bool) {
	download := dl.lookup(d)
	if download == nil {
		return 0, 0, nil, false
	}
	download.mu.Lock()
	defer download.mu.Unlock()
	if download.size < 0 || download.err != nil || download.partial == nil && download.blob == nil {
		return 0, 0, nil, false
	}
	chunkSize = dl.opts.ChunkSize
	chunks = make([]bool, len(download.fill))
	for i, f := range download.fill {
		chunks[i] = download.done || f == chunkLen(download.size, chunkSize, i)
	}
	return download.size, chunkSize, chunks, true
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
	n := chunkLen(download.size, cs, i)
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
