package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

type partialState int

const (
	partialOpen partialState = iota
	partialCommitted
	partialDone // closed or aborted
)

// Partial is a download in progress: a file of the blob's full size written at any offset, and
// a persisted bitmap of which fixed-size chunks are complete, so the download survives a
// restart. Chunk i covers [i*ChunkSize, min((i+1)*ChunkSize, Size)). The methods are safe for
// concurrent use; writes to different offsets proceed in parallel.
//
// A Partial ends with exactly one of Commit, Abort or Close; once it has ended, Abort and
// Close do nothing, and ReadAt keeps working after Commit until the committed Blob is closed.
type Partial struct {
	s         *Store
	digest    digest.Digest
	size      int64
	chunkSize int64
	n         int

	// life is held shared by every I/O call and exclusively by Commit, Abort and Close, so a
	// handle is never closed or moved under a write in flight. Shared holders do not exclude
	// each other: reads and writes still run in parallel.
	life  sync.RWMutex
	state partialState
	data  *handle
	bits  *handle
	// committed is the data file after Commit, owned by the committed Blob; ReadAt reads it.
	committed *os.File

	// mu serialises bitmap updates so the byte written to disk always matches memory even
	// when neighbouring chunks, which share a byte, are marked at the same time.
	mu     sync.Mutex
	bitmap []byte
}

// CreatePartial starts or resumes the download of d. A partial left on disk for d with the
// same size and chunk size is reopened with its bitmap; anything else starts fresh. Only one
// Partial per digest may be open (ErrBusy), and a committed digest gives ErrExists.
//
// It reserves size bytes against the capacity, evicting least recently used blobs to make
// room. When that is impossible because the rest is pinned or the blob alone is too big, it
// proceeds anyway and logs a warning: serving beats refusing.
func (s *Store) CreatePartial(d digest.Digest, size, chunkSize int64) (*Partial, error) {
	if err := validate(d); err != nil {
		return nil, fmt.Errorf("create partial: %w", err)
	}
	if size < 0 || chunkSize <= 0 {
		return nil, fmt.Errorf("create partial %s: size %d, chunk size %d: %w", d, size, chunkSize, ErrOutOfRange)
	}
	n := chunk.Count(size, chunkSize)
	if n > maxChunks {
		return nil, fmt.Errorf("create partial %s: %d chunks, at most %d: %w", d, n, maxChunks, ErrOutOfRange)
	}
	p := &Partial{s: s, digest: d, size: size, chunkSize: chunkSize, n: int(n)}
	var c cleanup
	defer func() { s.finish(c) }() // deferred first so it runs after p.life is released
	// Held until the files are ready, so a concurrent Store.Close cannot close p half-built.
	p.life.Lock()
	defer p.life.Unlock()

	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, fmt.Errorf("create partial %s: %w", d, ErrClosed)
	case s.blobs[d] != nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("create partial %s: %w", d, ErrExists)
	case s.open[d] != nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("create partial %s: %w", d, ErrBusy)
	}
	if e := s.idle[d]; e != nil {
		// Its files are ours now: off the eviction list, and counted as a reservation instead.
		delete(s.idle, d)
		s.lru.remove(e)
		s.idleBytes -= e.size
	}
	s.open[d] = p
	s.reserved += size
	s.evictLocked("", &c)
	over := s.overLocked()
	s.mu.Unlock()
	if over {
		s.log.Warn("cache over capacity, nothing left to evict for a download", "digest", d, "bytes", size)
	}

	if err := p.openFiles(); err != nil {
		p.state = partialDone
		s.release(p, false)
		return nil, fmt.Errorf("create partial %s: %w", d, err)
	}
	return p, nil
}

// openFiles resumes the partial on disk if it matches, else creates a fresh one.
func (p *Partial) openFiles() error {
	s := p.s
	size, chunkSize, bitmap, _, err := s.loadChunks(p.digest)
	switch {
	case err == nil && size == p.size && chunkSize == p.chunkSize:
		rerr := p.reopen(bitmap)
		if rerr == nil {
			s.log.Debug("resuming partial download", "digest", p.digest, "bytes", p.size)
			return nil
		}
		s.log.Warn("cannot resume partial download, starting over", "digest", p.digest, "err", rerr)
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		s.log.Warn("dropping malformed partial download", "digest", p.digest, "err", err)
	default:
		s.log.Info("restarting partial download made for another size or chunk size", "digest", p.digest)
	}
	return p.create()
}

func (p *Partial) reopen(bitmap []byte) error {
	data, err := os.OpenFile(p.s.partialPath(p.digest), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	bits, err := os.OpenFile(p.s.chunksPath(p.digest), os.O_RDWR, 0)
	if err != nil {
		data.Close()
		return err
	}
	p.adopt(data, bits)
	p.bitmap = bitmap
	return nil
}

// create writes a fresh, empty partial. The old bitmap goes first: a crash between the steps
// must never leave a bitmap vouching for chunks of a file that has just been truncated.
func (p *Partial) create() error {
	s := p.s
	if err := os.RemoveAll(s.chunksPath(p.digest)); err != nil {
		return err
	}
	data, err := os.OpenFile(s.partialPath(p.digest), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	p.bitmap = make([]byte, bitmapLen(p.n))
	// Sparse: only the chunks actually written take space.
	err = data.Truncate(p.size)
	var bits *os.File
	if err == nil {
		bits, err = os.OpenFile(s.chunksPath(p.digest), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	}
	if err == nil {
		_, err = bits.WriteAt(encodeChunks(p.size, p.chunkSize, p.bitmap), 0)
	}
	if err != nil {
		data.Close()
		if bits != nil {
			bits.Close()
		}
		_ = p.removeFiles() // the create error is the one worth reporting
		return err
	}
	p.adopt(data, bits)
	return nil
}

// adopt hands the freshly opened files to the store's Handles, which may close them while
// unused and open them again on the next read or write.
func (p *Partial) adopt(data, bits *os.File) {
	p.data = p.s.handles.adopt(data, p.s.partialPath(p.digest))
	p.bits = p.s.handles.adopt(bits, p.s.chunksPath(p.digest))
}

// Digest returns the digest being downloaded.
func (p *Partial) Digest() digest.Digest { return p.digest }

// Size returns the blob's full size.
func (p *Partial) Size() int64 { return p.size }

// ChunkSize returns the size of every chunk but possibly the last.
func (p *Partial) ChunkSize() int64 { return p.chunkSize }

// NumChunks returns the number of chunks.
func (p *Partial) NumChunks() int { return p.n }

// WriteAt writes b at off. The whole write must fit within Size.
func (p *Partial) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off > p.size-int64(len(b)) {
		return 0, fmt.Errorf("write %d bytes at %d of %s (size %d): %w", len(b), off, p.digest, p.size, ErrOutOfRange)
	}
	p.life.RLock()
	defer p.life.RUnlock()
	if p.state != partialOpen {
		return 0, fmt.Errorf("write %s: %w", p.digest, ErrClosed)
	}
	f, err := p.data.use()
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", p.digest, err)
	}
	defer p.data.done()
	return f.WriteAt(b, off)
}

// ReadAt reads from the partial file, following io.ReaderAt. It does not check the bitmap:
// bytes of chunks not yet written read as zeros.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	p.life.RLock()
	defer p.life.RUnlock()
	if p.state == partialDone {
		return 0, fmt.Errorf("read %s: %w", p.digest, ErrClosed)
	}
	if p.state == partialCommitted {
		return p.committed.ReadAt(b, off)
	}
	f, err := p.data.use()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p.digest, err)
	}
	defer p.data.done()
	return f.ReadAt(b, off)
}

// MarkChunk records that chunk i is completely written. It persists with a one-byte write and
// no fsync: that survives a crash of the process, and after a power loss the chunk and digest
// checks catch any chunk whose data did not reach the disk.
func (p *Partial) MarkChunk(i int) error { return p.setChunk(i, true) }

// UnmarkChunk forgets chunk i, for instance after it failed verification.
func (p *Partial) UnmarkChunk(i int) error { return p.setChunk(i, false) }

func (p *Partial) setChunk(i int, done bool) error {
	if i < 0 || i >= p.n {
		return fmt.Errorf("set chunk %d of %s (%d chunks): %w", i, p.digest, p.n, ErrOutOfRange)
	}
	p.life.RLock()
	defer p.life.RUnlock()
	if p.state != partialOpen {
		return fmt.Errorf("set chunk %d of %s: %w", i, p.digest, ErrClosed)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.bitmap[i/8]
	b := old &^ (1 << (i % 8))
	if done {
		b |= 1 << (i % 8)
	}
	if b == old {
		return nil
	}
	f, err := p.bits.use()
	if err == nil {
		_, err = f.WriteAt([]byte{b}, bitOffset(i))
		p.bits.done()
	}
	if err != nil {
		return fmt.Errorf("set chunk %d of %s: %w", i, p.digest, err)
	}
	p.bitmap[i/8] = b
	return nil
}

// HasChunk reports whether chunk i is marked complete; out of range is false.
func (p *Partial) HasChunk(i int) bool {
	if i < 0 || i >= p.n {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return hasBit(p.bitmap, i)
}

// Chunks returns a copy of the bitmap, one bool per chunk.
func (p *Partial) Chunks() []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]bool, p.n)
	for i := range out {
		out[i] = hasBit(p.bitmap, i)
	}
	return out
}

// anyChunk reports whether any chunk is marked, that is, whether there is progress to keep.
func (p *Partial) anyChunk() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.bitmap {
		if b != 0 {
			return true
		}
	}
	return false
}

// Commit turns the finished download into a committed blob and returns it pinned; the caller
// closes it. The caller must already have verified the whole content against the digest: the
// store does not re-hash a multi-gigabyte file. The rename into place is atomic, the
// reservation becomes committed bytes, and least recently used blobs are evicted if the store
// is over capacity. If Commit fails, the Partial is still open and may be aborted or closed.
func (p *Partial) Commit(mediaType string) (*Blob, error) {
	if len(mediaType) > maxMediaType {
		return nil, fmt.Errorf("commit %s: media type of %d bytes: %w", p.digest, len(mediaType), ErrOutOfRange)
	}
	var c cleanup
	b, err := p.commit(mediaType, &c)
	p.s.finish(c)
	return b, err
}

func (p *Partial) commit(mediaType string, c *cleanup) (*Blob, error) {
	p.life.Lock()
	defer p.life.Unlock()
	if p.state != partialOpen {
		return nil, fmt.Errorf("commit %s: %w", p.digest, ErrClosed)
	}
	s, d := p.s, p.digest
	// Opened (if the pool had closed it) before the rename below moves its path, and held so
	// the pool cannot close it: on success it becomes the committed Blob's.
	data, err := p.data.use()
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", d, err)
	}
	handed := false
	defer func() {
		if !handed {
			p.data.done()
		}
	}()
	// Verified content must be on disk before its committed name is.
	if err := data.Sync(); err != nil {
		return nil, fmt.Errorf("commit %s: %w", d, err)
	}
	now := s.now()
	_ = os.Chtimes(s.partialPath(d), now, now) // only orders eviction after a restart
	var typeTmp string
	if mediaType != "" {
		var err error
		if typeTmp, err = s.writeTemp([]byte(mediaType)); err != nil {
			return nil, fmt.Errorf("commit %s: %w", d, err)
		}
		defer os.Remove(typeTmp) // already renamed away on success
	}
	if err := os.MkdirAll(filepath.Dir(s.blobPath(d)), 0o755); err != nil {
		return nil, fmt.Errorf("commit %s: %w", d, err)
	}

	s.mu.Lock()
	if e := s.blobs[d]; e != nil {
		// Put committed the same content first. Serve that copy and drop this one, but keep
		// its handle open for readers of this Partial until the Blob is closed.
		f, err := os.Open(s.blobPath(d))
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("commit %s: %w", d, err)
		}
		e.pins++
		s.lru.touch(e)
		for _, path := range []string{s.chunksPath(d), s.partialPath(d)} {
			if trash := s.trashLocked(path); trash != "" {
				c.trash = append(c.trash, trash)
			}
		}
		s.reserved -= p.size
		delete(s.open, d)
		s.mu.Unlock()
		handed = true
		p.finishCommit()
		return &Blob{s: s, e: e, f: f, also: p.committed}, nil
	}
	e, err := s.installLocked(d, p.size, mediaType, s.partialPath(d), typeTmp, c)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("commit %s: %w", d, err)
	}
	e.pins = 1
	// Under the lock: once d leaves s.open, a new Partial for d may claim this path.
	if trash := s.trashLocked(s.chunksPath(d)); trash != "" {
		c.trash = append(c.trash, trash)
	}
	s.reserved -= p.size
	delete(s.open, d)
	s.evictLocked(d, c)
	s.mu.Unlock()
	handed = true
	p.finishCommit()
	return &Blob{s: s, e: e, f: p.committed}, nil
}

// finishCommit takes the data file out of the pool for the committed Blob and closes the
// bitmap.
func (p *Partial) finishCommit() {
	p.state = partialCommitted
	p.committed = p.data.detach()
	if err := p.bits.close(); err != nil {
		p.s.log.Debug("close bitmap of committed blob", "digest", p.digest, "err", err)
	}
}

// Abort deletes the partial data and bitmap and releases the reservation.
func (p *Partial) Abort() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.state != partialOpen {
		return nil
	}
	p.state = partialDone
	// Files go before p leaves s.open, while nobody else may touch these paths.
	err := errors.Join(p.data.close(), p.bits.close(), p.removeFiles())
	p.s.release(p, false)
	if err != nil {
		return fmt.Errorf("abort %s: %w", p.digest, err)
	}
	return nil
}

// Close closes the handles and releases the reservation, keeping data and bitmap on disk so a
// later CreatePartial resumes. A partial with no chunk marked has nothing worth keeping and is
// removed. Until resumed, a kept partial counts toward the capacity and may be evicted.
func (p *Partial) Close() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.state != partialOpen {
		return nil
	}
	p.state = partialDone
	err := errors.Join(p.data.close(), p.bits.close())
	keep := p.anyChunk()
	if keep {
		now := p.s.now()
		_ = os.Chtimes(p.s.chunksPath(p.digest), now, now) // only orders eviction after a restart
	} else {
		err = errors.Join(err, p.removeFiles())
	}
	p.s.release(p, keep)
	if err != nil {
		return fmt.Errorf("close %s: %w", p.digest, err)
	}
	return nil
}

func (p *Partial) removeFiles() error {
	var errs []error
	for _, path := range []string{p.s.chunksPath(p.digest), p.s.partialPath(p.digest)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// release ends p's registration and reservation; keep indexes its files as an idle partial
// that eviction may reclaim.
func (s *Store) release(p *Partial, keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= p.size
	delete(s.open, p.digest)
	if keep {
		e := &entry{digest: p.digest, size: p.size, partial: true}
		s.idle[p.digest] = e
		s.lru.add(e)
		s.idleBytes += p.size
	}
}
