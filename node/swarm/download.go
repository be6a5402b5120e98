package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/store"
)

// ErrDigestMismatch reports that a blob's bytes did not hash to its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// Download fetches one blob into a partial file of the store. Readers attach to it and read
// bytes as they land; a verifier reads it in order, hashes it, and commits it only when the
// digest matches. It is shared by every reader of that digest and owned by the Downloader,
// not by any one reader, so a reader leaving never cancels it.
type Download struct {
	digest   digest.Digest
	registry string
	repo     string

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever progress, size or state changes
	size     int64         // -1 until known
	partial  *store.Partial
	blob     *store.Blob // set once committed; readers switch to it
	fill     []int64     // bytes written from the start of each chunk
	err      error       // terminal failure
	verified bool        // the whole blob matched its digest
	done     bool        // committed
	refs     int         // open readers plus the running fetch
}

func newDownload(d digest.Digest, registry, repo string) *Download {
	return &Download{digest: d, registry: registry, repo: repo, size: -1, changed: make(chan struct{}), refs: 1}
}

// notifyLocked wakes every waiter. Callers hold mu.
func (dl *Download) notifyLocked() {
	close(dl.changed)
	dl.changed = make(chan struct{})
}

// start records the blob's size and the partial file the fetch writes to.
func (dl *Download) start(p *store.Partial) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.partial = p
	dl.size = p.Size()
	dl.fill = make([]int64, p.NumChunks())
	cs := p.ChunkSize()
	for i, have := range p.Chunks() {
		if have {
			dl.fill[i] = chunkLen(dl.size, cs, i)
		}
	}
	dl.notifyLocked()
}

// startCommitted serves a blob that was already committed.
func (dl *Download) startCommitted(b *store.Blob) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.size = b.Size()
	dl.blob = b
	dl.verified = true
	dl.done = true
	dl.notifyLocked()
}

// wrote records that [off, off+n) of the partial file now holds data; it returns the chunks
// that became complete.
func (dl *Download) wrote(off, n int64) []int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	cs := dl.partial.ChunkSize()
	var full []int
	for n > 0 {
		i := int(off / cs)
		within := off - int64(i)*cs
		// Data lands sequentially within a chunk, so fill is the contiguous prefix.
		take := min(n, chunkLen(dl.size, cs, i)-within)
		if end := within + take; end > dl.fill[i] && within <= dl.fill[i] {
			dl.fill[i] = end
			if end == chunkLen(dl.size, cs, i) {
				full = append(full, i)
			}
		}
		off += take
		n -= take
	}
	dl.notifyLocked()
	return full
}

// available reports whether [off, off+n) is readable. Callers hold mu.
func (dl *Download) availableLocked(off, n int64) bool {
	if dl.done {
		return true
	}
	cs := dl.partial.ChunkSize()
	for n > 0 {
		i := int(off / cs)
		within := off - int64(i)*cs
		take := min(n, chunkLen(dl.size, cs, i)-within)
		if dl.fill[i] < within+take {
			return false
		}
		off += take
		n -= take
	}
	return true
}

// firstGap is the offset of the first byte not yet written, or size when all is written.
func (dl *Download) firstGap() int64 {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	cs := dl.partial.ChunkSize()
	for i, f := range dl.fill {
		if f < chunkLen(dl.size, cs, i) {
			return int64(i)*cs + f
		}
	}
	return dl.size
}

// waitSize blocks until the size is known or the download failed.
func (dl *Download) waitSize(ctx context.Context) (int64, error) {
	for {
		dl.mu.Lock()
		size, err, ch := dl.size, dl.err, dl.changed
		dl.mu.Unlock()
		switch {
		case err != nil:
			return 0, err
		case size >= 0:
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// waitDone blocks until the download is committed or failed.
func (dl *Download) waitDone(ctx context.Context) error {
	for {
		dl.mu.Lock()
		done, err, ch := dl.done, dl.err, dl.changed
		dl.mu.Unlock()
		switch {
		case err != nil:
			return err
		case done:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readAt blocks until [off, off+len(p)) is written (or the download fails, or abort closes)
// and reads it. Client readers pass holdLast: the blob's last byte is released only after the
// whole blob verified, so a client never completes a transfer of bad bytes.
func (dl *Download) readAt(p []byte, off int64, abort <-chan struct{}, holdLast bool) (int, error) {
	n := int64(len(p))
	for {
		dl.mu.Lock()
		if dl.err != nil {
			err := dl.err
			dl.mu.Unlock()
			return 0, err
		}
		if off >= dl.size {
			dl.mu.Unlock()
			return 0, io.EOF
		}
		want := min(n, dl.size-off)
		if dl.availableLocked(off, want) && (!holdLast || dl.verified || off+want < dl.size) {
			var src io.ReaderAt = dl.partial
			if dl.blob != nil {
				src = dl.blob
			}
			dl.mu.Unlock()
			got, err := src.ReadAt(p[:want], off)
			if err == nil && want < n {
				err = io.EOF
			}
			return got, err
		}
		ch := dl.changed
		dl.mu.Unlock()
		select {
		case <-ch:
		case <-abort:
			return 0, errReaderClosed
		}
	}
}

var errReaderClosed = errors.New("reader closed")

// fail ends the download with err and wakes every reader.
func (dl *Download) fail(err error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err == nil && !dl.done {
		dl.err = err
	}
	dl.notifyLocked()
}

// markVerified releases the blob's last bytes to client readers.
func (dl *Download) markVerified() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.verified = true
	dl.notifyLocked()
}

// commit switches readers to the committed blob.
func (dl *Download) commit(b *store.Blob) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.blob = b
	dl.partial = nil
	dl.verified = true
	dl.done = true
	dl.notifyLocked()
}

// acquire adds a reference; it fails once the download has ended badly, so a new reader starts
// a fresh download instead of inheriting the failure.
func (dl *Download) acquire() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err != nil || dl.refs == 0 {
		return false
	}
	dl.refs++
	return true
}

// release drops a reference and frees the committed blob's pin after the last one.
func (dl *Download) release() {
	dl.mu.Lock()
	dl.refs--
	var b *store.Blob
	if dl.refs == 0 && dl.blob != nil {
		b = dl.blob
	}
	dl.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

// verify hashes the blob in order as its bytes land and reports whether it matches the digest.
func (dl *Download) verify(abort <-chan struct{}) error {
	h := dl.digest.Algorithm().Hash()
	buf := make([]byte, 1<<20)
	dl.mu.Lock()
	size := dl.size
	dl.mu.Unlock()
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		got, err := dl.readAt(buf[:n], off, abort, false)
		if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
			return err
		}
		h.Write(buf[:got])
		off += int64(got)
	}
	if got := digest.NewDigest(dl.digest.Algorithm(), h); got != dl.digest {
		return fmt.Errorf("%w: got %s", ErrDigestMismatch, got)
	}
	return nil
}

func chunkLen(size, chunkSize int64, i int) int64 {
	return min(chunkSize, size-int64(i)*chunkSize)
}
