package swarm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
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
	blob     *store.Blob               // set once committed; readers switch to it
	fill     []int64                   // bytes written from the start of each chunk
	owner    []uint64                  // the request allowed to write each chunk; 0 for none
	fetching []bool                    // chunks this node is fetching from the origin right now
	list     []digest.Digest           // the chunk list, once the whole blob verified
	sums     []digest.Digest           // SHA-256 of chunks checked against a peer's chunk list on arrival
	err      error                     // terminal failure
	verified bool                      // the whole blob matched its digest
	done     bool                      // committed
	refs     int                       // open readers plus the running fetch
	readers  map[<-chan struct{}]int64 // each streaming client's next offset
	opening  int                       // clients between joining and reading: they start at 0

	// wmu orders writes into the partial file with changes of chunk ownership, so a request
	// that lost its chunk to another never writes into it again.
	wmu sync.Mutex

	ended chan struct{} // closed once the download left the active set, its file released
	wake  chan struct{} // a reader is waiting for bytes no one may be fetching
	hints chan string   // peers that asked about this blob: likely fetching it too

	fromPeers  atomic.Int64 // bytes fetched from peers, for the pull's log line
	fromOrigin atomic.Int64 // bytes fetched from the origin
}

func newDownload(d digest.Digest, registry, repo string) *Download {
	return &Download{
		digest: d, registry: registry, repo: repo, size: -1, changed: make(chan struct{}), refs: 1,
		readers: make(map[<-chan struct{}]int64),
		wake:    make(chan struct{}, 1),
		ended:   make(chan struct{}),
		hints:   make(chan string, 64),
	}
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
	dl.owner = make([]uint64, p.NumChunks())
	dl.sums = make([]digest.Digest, p.NumChunks())
	dl.fetching = make([]bool, p.NumChunks())
	cs := p.ChunkSize()
	for i, have := range p.Chunks() {
		if have {
			dl.fill[i] = chunk.Len(dl.size, cs, i)
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

// writeStream writes p at off for request id, which streams chunk c from the origin, and
// counts it as present at once so readers follow the transfer. It reports whether the chunk
// is now complete.
func (dl *Download) writeStream(c int, id uint64, p []byte, off int64) (bool, error) {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	ok := dl.owner[c] == id
	dl.mu.Unlock()
	if !ok {
		return false, errSuperseded
	}
	if _, err := dl.partial.WriteAt(p, off); err != nil {
		return false, fmt.Errorf("write partial: %w", err)
	}
	dl.mu.Lock()
	// The stream fills the chunk in order from where it stood, so fill is its written prefix.
	n := chunk.Len(dl.size, dl.partial.ChunkSize(), c)
	dl.fill[c] = min(n, off+int64(len(p))-int64(c)*dl.partial.ChunkSize())
	full := dl.fill[c] == n
	if full {
		dl.owner[c] = 0
	}
	dl.notifyLocked()
	dl.mu.Unlock()
	if full {
		if err := dl.partial.MarkChunk(c); err != nil {
			return false, fmt.Errorf("mark chunk %d: %w", c, err)
		}
	}
	return full, nil
}

// availableLocked reports whether [off, off+n) is readable. Callers hold mu.
func (dl *Download) availableLocked(off, n int64) bool {
	if dl.done {
		return true
	}
	cs := dl.partial.ChunkSize()
	for n > 0 {
		i := int(off / cs)
		within := off - int64(i)*cs
		take := min(n, chunk.Len(dl.size, cs, i)-within)
		if dl.fill[i] < within+take {
			return false
		}
		off += take
		n -= take
	}
	return true
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
	for waited := false; ; waited = true {
		dl.mu.Lock()
		if holdLast && !dl.done {
			dl.readers[abort] = off
		}
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
		if holdLast && !waited {
			// Let the fetch put this reader's window first.
			select {
			case dl.wake <- struct{}{}:
			default:
			}
		}
		select {
		case <-ch:
		case <-abort:
			return 0, errReaderClosed
		}
	}
}

// opened turns a joining client into a reader at offset 0 (abort identifies it), or, with a
// nil abort, forgets a client that gave up before reading.
func (dl *Download) opened(abort <-chan struct{}) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.opening--
	if abort != nil && !dl.done {
		dl.readers[abort] = 0
	}
}

// forget drops a reader's position.
func (dl *Download) forget(abort <-chan struct{}) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	delete(dl.readers, abort)
}

// readerChunks returns the chunk each streaming reader needs next.
func (dl *Download) readerChunks(cs int64) []int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	out := make([]int, 0, len(dl.readers)+1)
	if dl.opening > 0 {
		// A client about to read: the download started for it, so its first bytes go first.
		out = append(out, 0)
	}
	for _, off := range dl.readers {
		if off < dl.size {
			out = append(out, int(off/cs))
		}
	}
	return out
}

// errSuperseded stops a request whose chunk another request completed or took over.
var errSuperseded = errors.New("chunk taken over by another request")

// claim makes request id the writer of chunk c. It returns how many bytes of the chunk are
// in place already (a broken origin transfer's): they are never written again, since
// readers and the verifier may have read them.
func (dl *Download) claim(c int, id uint64) int64 {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.owner[c] = id
	dl.sums[c] = ""
	return dl.fill[c]
}

// unclaim ends request id's hold on chunk c, if it still has it. A peer request that wrote
// bytes it could not complete leaves them uncounted.
func (dl *Download) unclaim(c int, id uint64) {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.owner[c] == id {
		dl.owner[c] = 0
	}
}

// setFetching records whether chunk c is being fetched from the origin, for peers asking.
func (dl *Download) setFetching(c int, on bool) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.fetching[c] = on
}

// writeOwned writes p at off, inside chunk c, if request id still owns the chunk.
func (dl *Download) writeOwned(c int, id uint64, p []byte, off int64) error {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	ok := dl.owner[c] == id && dl.fill[c] < chunk.Len(dl.size, dl.partial.ChunkSize(), c)
	dl.mu.Unlock()
	if !ok {
		return errSuperseded
	}
	if _, err := dl.partial.WriteAt(p, off); err != nil {
		return fmt.Errorf("write partial: %w", err)
	}
	return nil
}

// complete records that request id wrote all of chunk c, if it still owns it; sum is the
// chunk's SHA-256 if the request checked it, else "".
func (dl *Download) complete(c int, id uint64, sum digest.Digest) error {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	if dl.owner[c] != id {
		dl.mu.Unlock()
		return errSuperseded
	}
	dl.owner[c] = 0
	dl.fill[c] = chunk.Len(dl.size, dl.partial.ChunkSize(), c)
	dl.sums[c] = sum
	dl.notifyLocked()
	dl.mu.Unlock()
	return dl.partial.MarkChunk(c)
}

// takeOver writes a whole chunk c received by request id into the file, unless the chunk is
// complete already; the request that owned it loses it.
func (dl *Download) takeOver(c int, id uint64, data []byte, sum digest.Digest) error {
	dl.wmu.Lock()
	defer dl.wmu.Unlock()
	dl.mu.Lock()
	n := chunk.Len(dl.size, dl.partial.ChunkSize(), c)
	if dl.fill[c] == n {
		dl.mu.Unlock()
		return errSuperseded
	}
	dl.owner[c] = 0
	keep := dl.fill[c]
	if keep > 0 {
		// The bytes in place stay; data's own prefix was checked, not these.
		sum = ""
	}
	dl.mu.Unlock()
	if _, err := dl.partial.WriteAt(data[keep:], int64(c)*dl.partial.ChunkSize()+keep); err != nil {
		return fmt.Errorf("write partial: %w", err)
	}
	dl.mu.Lock()
	dl.fill[c] = n
	dl.sums[c] = sum
	dl.notifyLocked()
	dl.mu.Unlock()
	return dl.partial.MarkChunk(c)
}

// knownSum is chunk c's SHA-256 if it was checked on arrival, else "".
func (dl *Download) knownSum(c int) digest.Digest {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if c < len(dl.sums) {
		return dl.sums[c]
	}
	return ""
}

// chunkList is the chunk list computed while verifying, or nil.
func (dl *Download) chunkList() []digest.Digest {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.list
}

// haveChunks reports which chunks are completely written.
func (dl *Download) haveChunks() []bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	cs := dl.partial.ChunkSize()
	out := make([]bool, len(dl.fill))
	for i, f := range dl.fill {
		out[i] = f == chunk.Len(dl.size, cs, i)
	}
	return out
}

// written is the number of bytes written so far.
func (dl *Download) written() int64 {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	var n int64
	for _, f := range dl.fill {
		n += f
	}
	return n
}

// status is where the download stands, in chunks of cs.
func (dl *Download) status(cs int64) DownloadStatus {
	st := DownloadStatus{
		Digest: dl.digest, ChunkSize: cs,
		FromPeers: dl.fromPeers.Load(), FromOrigin: dl.fromOrigin.Load(),
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	st.Size = dl.size
	if dl.done {
		st.Done = dl.size
		return st
	}
	for i, f := range dl.fill {
		if n := chunk.Len(dl.size, cs, i); f == n {
			st.Done += n
		}
	}
	return st
}

// chunkFill is how many bytes of chunk c are written from its start.
func (dl *Download) chunkFill(c int) int64 {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.fill[c]
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
	dl.opening++
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
// With chunkSize > 0 it also computes the chunk list, kept once the digest matched.
func (dl *Download) verify(abort <-chan struct{}, chunkSize int64) error {
	h := dl.digest.Algorithm().Hash()
	buf := make([]byte, 1<<20)
	dl.mu.Lock()
	size := dl.size
	dl.mu.Unlock()
	var list []digest.Digest
	ch := sha256.New()
	var known digest.Digest // the current chunk's SHA-256, if checked on arrival
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if chunkSize > 0 {
			// Never straddle a chunk boundary, so each chunk's hash ends cleanly.
			n = min(n, chunkSize-off%chunkSize)
		}
		got, err := dl.readAt(buf[:n], off, abort, false)
		if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
			return err
		}
		h.Write(buf[:got])
		if chunkSize > 0 {
			if off%chunkSize == 0 {
				// The chunk is in: a peer's chunk checked against its list needs no second
				// hash (its bytes are fixed once complete).
				known = dl.knownSum(int(off / chunkSize))
			}
			if known == "" {
				ch.Write(buf[:got])
			}
		}
		off += int64(got)
		if chunkSize > 0 && (off%chunkSize == 0 || off == size) {
			if known == "" {
				known = digest.NewDigest(digest.SHA256, ch)
			}
			list = append(list, known)
			ch.Reset()
			known = ""
		}
	}
	if got := digest.NewDigest(dl.digest.Algorithm(), h); got != dl.digest {
		return fmt.Errorf("%w: got %s", ErrDigestMismatch, got)
	}
	dl.mu.Lock()
	dl.list = list
	dl.mu.Unlock()
	return nil
}
