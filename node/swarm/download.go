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

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever progress, size or state changes
	// held is closed and replaced whenever what peers are told of the download changes: a
	// chunk completes, one starts or stops being fetched from the origin, the size becomes
	// known, the download ends. Unlike changed, bytes landing inside a chunk leave it be.
	held     chan struct{}
	size     int64 // -1 until known
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
		digest: d, registry: registry, repo: repo, size: -1, changed: make(chan struct{}), held: make(chan struct{}), refs: 1,
		readers: make(map[<-chan struct{}]int64),
		wake:    make(chan struct{}, 1),
		ended:   make(chan struct{}),
		hints:   make(chan string, 64),
	}
}

// hint tells the download's engine of a peer that most likely holds or fetches the blob;
// it never blocks (a full queue drops the hint: the next lookup finds the peer anyway).
func (job *Download) hint(peer string) {
	select {
	case job.hints <- peer:
	default:
	}
}

// notifyLocked wakes every waiter. Callers hold mu.
func (job *Download) notifyLocked() {
	close(job.changed)
	job.changed = make(chan struct{})
}

// heldLocked wakes every waiter, and every watcher of what is held. Callers hold mu.
func (job *Download) heldLocked() {
	job.notifyLocked()
	close(job.held)
	job.held = make(chan struct{})
}

// heldChanged returns a channel closed once what peers are told of the download changes.
func (job *Download) heldChanged() <-chan struct{} {
	job.mu.Lock()
	defer job.mu.Unlock()
	return job.held
}

// start records the blob's size and the partial file the fetch writes to.
func (job *Download) start(p *store.Partial) {
	job.mu.Lock()
	defer job.mu.Unlock()
	job.partial = p
	job.size = p.Size()
	job.fill = make([]int64, p.NumChunks())
	job.owner = make([]uint64, p.NumChunks())
	job.sums = make([]digest.Digest, p.NumChunks())
	job.fetching = make([]bool, p.NumChunks())
	cs := p.ChunkSize()
	for i, have := range p.Chunks() {
		if have {
			job.fill[i] = chunk.Len(job.size, cs, i)
		}
	}
	job.heldLocked()
}

// startCommitted serves a blob that was already committed.
func (job *Download) startCommitted(b *store.Blob) {
	job.mu.Lock()
	defer job.mu.Unlock()
	job.size = b.Size()
	job.blob = b
	job.verified = true
	job.done = true
	job.heldLocked()
}

// writeStream writes p at off for request id, which streams chunk c from the origin, and
// counts it as present at once so readers follow the transfer. It reports whether the chunk
// is now complete.
func (job *Download) writeStream(c int, id uint64, p []byte, off int64) (bool, error) {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	ok := job.owner[c] == id
	job.mu.Unlock()
	if !ok {
		return false, errSuperseded
	}
	if _, err := job.partial.WriteAt(p, off); err != nil {
		return false, fmt.Errorf("write partial: %w", err)
	}
	job.mu.Lock()
	// The stream fills the chunk in order from where it stood, so fill is its written prefix.
	n := chunk.Len(job.size, job.partial.ChunkSize(), c)
	job.fill[c] = min(n, off+int64(len(p))-int64(c)*job.partial.ChunkSize())
	full := job.fill[c] == n
	if full {
		job.owner[c] = 0
		job.heldLocked()
	} else {
		job.notifyLocked()
	}
	job.mu.Unlock()
	if full {
		if err := job.partial.MarkChunk(c); err != nil {
			return false, fmt.Errorf("mark chunk %d: %w", c, err)
		}
	}
	return full, nil
}

// availableLocked reports whether [off, off+n) is readable. Callers hold mu.
func (job *Download) availableLocked(off, n int64) bool {
	if job.done {
		return true
	}
	cs := job.partial.ChunkSize()
	for n > 0 {
		i := int(off / cs)
		within := off - int64(i)*cs
		take := min(n, chunk.Len(job.size, cs, i)-within)
		if job.fill[i] < within+take {
			return false
		}
		off += take
		n -= take
	}
	return true
}

// waitSize blocks until the size is known or the download failed.
func (job *Download) waitSize(ctx context.Context) (int64, error) {
	for {
		job.mu.Lock()
		size, err, ch := job.size, job.err, job.changed
		job.mu.Unlock()
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
func (job *Download) waitDone(ctx context.Context) error {
	for {
		job.mu.Lock()
		done, err, ch := job.done, job.err, job.changed
		job.mu.Unlock()
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
func (job *Download) readAt(p []byte, off int64, abort <-chan struct{}, holdLast bool) (int, error) {
	n := int64(len(p))
	for waited := false; ; waited = true {
		job.mu.Lock()
		if holdLast && !job.done {
			job.readers[abort] = off
		}
		if job.err != nil {
			err := job.err
			job.mu.Unlock()
			return 0, err
		}
		if off >= job.size {
			job.mu.Unlock()
			return 0, io.EOF
		}
		want := min(n, job.size-off)
		if job.availableLocked(off, want) && (!holdLast || job.verified || off+want < job.size) {
			var src io.ReaderAt = job.partial
			if job.blob != nil {
				src = job.blob
			}
			job.mu.Unlock()
			got, err := src.ReadAt(p[:want], off)
			if err == nil && want < n {
				err = io.EOF
			}
			return got, err
		}
		ch := job.changed
		job.mu.Unlock()
		if holdLast && !waited {
			// Let the fetch put this reader's window first.
			select {
			case job.wake <- struct{}{}:
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
func (job *Download) opened(abort <-chan struct{}) {
	job.mu.Lock()
	defer job.mu.Unlock()
	job.opening--
	if abort != nil && !job.done {
		job.readers[abort] = 0
	}
}

// forget drops a reader's position.
func (job *Download) forget(abort <-chan struct{}) {
	job.mu.Lock()
	defer job.mu.Unlock()
	delete(job.readers, abort)
}

// readerChunks returns the chunk each streaming reader needs next.
func (job *Download) readerChunks(cs int64) []int {
	job.mu.Lock()
	defer job.mu.Unlock()
	out := make([]int, 0, len(job.readers)+1)
	if job.opening > 0 {
		// A client about to read: the download started for it, so its first bytes go first.
		out = append(out, 0)
	}
	for _, off := range job.readers {
		if off < job.size {
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
func (job *Download) claim(c int, id uint64) int64 {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	defer job.mu.Unlock()
	job.owner[c] = id
	job.sums[c] = ""
	return job.fill[c]
}

// unclaim ends request id's hold on chunk c, if it still has it. A peer request that wrote
// bytes it could not complete leaves them uncounted.
func (job *Download) unclaim(c int, id uint64) {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.owner[c] == id {
		job.owner[c] = 0
	}
}

// setFetching records whether chunk c is being fetched from the origin, for peers asking.
func (job *Download) setFetching(c int, on bool) {
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.fetching[c] != on {
		job.fetching[c] = on
		job.heldLocked()
	}
}

// writeOwned writes p at off, inside chunk c, if request id still owns the chunk.
func (job *Download) writeOwned(c int, id uint64, p []byte, off int64) error {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	ok := job.owner[c] == id && job.fill[c] < chunk.Len(job.size, job.partial.ChunkSize(), c)
	job.mu.Unlock()
	if !ok {
		return errSuperseded
	}
	if _, err := job.partial.WriteAt(p, off); err != nil {
		return fmt.Errorf("write partial: %w", err)
	}
	return nil
}

// complete records that request id wrote all of chunk c, if it still owns it; sum is the
// chunk's SHA-256 if the request checked it, else "".
func (job *Download) complete(c int, id uint64, sum digest.Digest) error {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	if job.owner[c] != id {
		job.mu.Unlock()
		return errSuperseded
	}
	job.owner[c] = 0
	job.fill[c] = chunk.Len(job.size, job.partial.ChunkSize(), c)
	job.sums[c] = sum
	job.heldLocked()
	job.mu.Unlock()
	return job.partial.MarkChunk(c)
}

// takeOver writes a whole chunk c received by request id into the file, unless the chunk is
// complete already; the request that owned it loses it.
func (job *Download) takeOver(c int, id uint64, data []byte, sum digest.Digest) error {
	job.wmu.Lock()
	defer job.wmu.Unlock()
	job.mu.Lock()
	n := chunk.Len(job.size, job.partial.ChunkSize(), c)
	if job.fill[c] == n {
		job.mu.Unlock()
		return errSuperseded
	}
	job.owner[c] = 0
	keep := job.fill[c]
	if keep > 0 {
		// The bytes in place stay; data's own prefix was checked, not these.
		sum = ""
	}
	job.mu.Unlock()
	if _, err := job.partial.WriteAt(data[keep:], int64(c)*job.partial.ChunkSize()+keep); err != nil {
		return fmt.Errorf("write partial: %w", err)
	}
	job.mu.Lock()
	job.fill[c] = n
	job.sums[c] = sum
	job.heldLocked()
	job.mu.Unlock()
	return job.partial.MarkChunk(c)
}

// knownSum is chunk c's SHA-256 if it was checked on arrival, else "".
func (job *Download) knownSum(c int) digest.Digest {
	job.mu.Lock()
	defer job.mu.Unlock()
	if c < len(job.sums) {
		return job.sums[c]
	}
	return ""
}

// chunkList is the chunk list computed while verifying, or nil.
func (job *Download) chunkList() []digest.Digest {
	job.mu.Lock()
	defer job.mu.Unlock()
	return job.list
}

// haveChunks reports which chunks are completely written.
func (job *Download) haveChunks() []bool {
	job.mu.Lock()
	defer job.mu.Unlock()
	cs := job.partial.ChunkSize()
	out := make([]bool, len(job.fill))
	for i, f := range job.fill {
		out[i] = f == chunk.Len(job.size, cs, i)
	}
	return out
}

// written is the number of bytes written so far.
func (job *Download) written() int64 {
	job.mu.Lock()
	defer job.mu.Unlock()
	var n int64
	for _, f := range job.fill {
		n += f
	}
	return n
}

// status is where the download stands, in chunks of cs.
func (job *Download) status(cs int64) DownloadStatus {
	st := DownloadStatus{
		Digest: job.digest, ChunkSize: cs,
		FromPeers: job.fromPeers.Load(), FromOrigin: job.fromOrigin.Load(),
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	st.Size = job.size
	if job.done {
		st.Done = job.size
		return st
	}
	for i, f := range job.fill {
		if n := chunk.Len(job.size, cs, i); f == n {
			st.Done += n
		}
	}
	return st
}

// chunkFill is how many bytes of chunk c are written from its start.
func (job *Download) chunkFill(c int) int64 {
	job.mu.Lock()
	defer job.mu.Unlock()
	return job.fill[c]
}

var errReaderClosed = errors.New("reader closed")

// fail ends the download with err and wakes every reader.
func (job *Download) fail(err error) {
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.err == nil && !job.done {
		job.err = err
	}
	job.heldLocked()
}

// markVerified releases the blob's last bytes to client readers.
func (job *Download) markVerified() {
	job.mu.Lock()
	defer job.mu.Unlock()
	job.verified = true
	job.notifyLocked()
}

// commit switches readers to the committed blob.
func (job *Download) commit(b *store.Blob) {
	job.mu.Lock()
	defer job.mu.Unlock()
	job.blob = b
	job.partial = nil
	job.verified = true
	job.done = true
	job.heldLocked()
}

// acquire adds a reference; it fails once the download has ended badly, so a new reader starts
// a fresh download instead of inheriting the failure.
func (job *Download) acquire() bool {
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.err != nil || job.refs == 0 {
		return false
	}
	job.refs++
	job.opening++
	return true
}

// release drops a reference and frees the committed blob's pin after the last one.
func (job *Download) release() {
	job.mu.Lock()
	job.refs--
	var b *store.Blob
	if job.refs == 0 && job.blob != nil {
		b = job.blob
	}
	job.mu.Unlock()
	if b != nil {
		_ = b.Close() // read-only; nothing to lose
	}
}

// verify hashes the blob in order as its bytes land and reports whether it matches the digest.
// With chunkSize > 0 it also computes the chunk list, kept once the digest matched.
func (job *Download) verify(abort <-chan struct{}, chunkSize int64) error {
	h := job.digest.Algorithm().Hash()
	job.mu.Lock()
	size := job.size
	job.mu.Unlock()
	// Reads stop at the blob's end and at each chunk's: a buffer longer than either is
	// never filled, and a download of a small blob need not hold a megabyte.
	bufLen := min(1<<20, max(size, 0))
	if chunkSize > 0 {
		bufLen = min(bufLen, chunkSize)
	}
	buf := make([]byte, bufLen)
	var list []digest.Digest
	ch := sha256.New()
	var known digest.Digest // the current chunk's SHA-256, if checked on arrival
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if chunkSize > 0 {
			// Never straddle a chunk boundary, so each chunk's hash ends cleanly.
			n = min(n, chunkSize-off%chunkSize)
		}
		got, err := job.readAt(buf[:n], off, abort, false)
		if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
			return err
		}
		h.Write(buf[:got])
		if chunkSize > 0 {
			if off%chunkSize == 0 {
				// The chunk is in: a peer's chunk checked against its list needs no second
				// hash (its bytes are fixed once complete).
				known = job.knownSum(int(off / chunkSize))
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
	if got := digest.NewDigest(job.digest.Algorithm(), h); got != job.digest {
		return fmt.Errorf("%w: got %s", ErrDigestMismatch, got)
	}
	job.mu.Lock()
	job.list = list
	job.mu.Unlock()
	return nil
}
