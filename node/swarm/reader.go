package swarm

import (
	"context"
	"sync"
)

// Reader reads a blob while its Download runs. It satisfies registryapi.Blob.
type Reader struct {
	download *Download
	size     int64
	abort    chan struct{}
	stop     func() bool
	once     sync.Once
	closed   sync.Once
}

// newReader attaches a reader that gives up waiting when ctx ends (the client went away).
func newReader(ctx context.Context, download *Download) *Reader {
	r := &Reader{download: download, size: download.size, abort: make(chan struct{})}
	download.opened(r.abort)
	r.stop = context.AfterFunc(ctx, r.closeAbort)
	return r
}

func (r *Reader) closeAbort() { r.once.Do(func() { close(r.abort) }) }

// Wait blocks until the blob is verified and committed to the store (nil) or the download
// failed (its error).
func (r *Reader) Wait(ctx context.Context) error { return r.download.waitDone(ctx) }

// Size is the blob's length in bytes.
func (r *Reader) Size() int64 { return r.size }

// Source names where the bytes come from, for metrics.
func (r *Reader) Source() string { return "download" }

// Fetched is how many bytes of the blob the node has fetched so far, from peers and from
// the origin, in this download (a resumed download's earlier bytes are not in it).
func (r *Reader) Fetched() (peers, origin int64) {
	return r.download.fromPeers.Load(), r.download.fromOrigin.Load()
}

// ReadAt blocks until the bytes are present; it fails if the download fails, including a
// digest mismatch found after the last byte.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	return r.download.readAt(p, off, r.abort, true)
}

// Close detaches the reader; the download goes on.
func (r *Reader) Close() error {
	r.closed.Do(func() {
		r.stop()
		r.closeAbort()
		r.download.forget(r.abort)
		r.download.release()
	})
	return nil
}
