// Package store is a node's content-addressed disk cache. It holds committed blobs named by
// their OCI digest, partial downloads whose persisted chunk bitmap lets a transfer resume after
// a restart, and evicts least-recently-used blobs to stay within a byte capacity, never
// removing a blob that somebody is reading.
//
// The store does not hash multi-gigabyte blobs on its own: Put verifies the small content it
// is handed, and Partial.Commit trusts its caller to have verified the whole download. Only
// ComputeChunkList, called on purpose, reads a whole blob, and it re-verifies it on the way.
//
// One Store owns its directory: Open takes an exclusive lock on it, so a second node
// pointed at the same --data-dir fails to start instead of corrupting the first one's cache.
package store

import (
	_ "crypto/sha256" // digest algorithms the store accepts
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

var (
	// ErrNotFound means no committed blob has the digest.
	ErrNotFound = errors.New("blob not found")
	// ErrBusy means a Partial for the digest is already open.
	ErrBusy = errors.New("partial download already open")
	// ErrExists means the digest is already committed, so there is nothing to download.
	ErrExists = errors.New("blob already committed")
	// ErrDigestMismatch means content does not hash to the digest it was offered under.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidDigest means a digest is malformed or uses an unsupported algorithm.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrOutOfRange means an offset, chunk index or size lies outside what is allowed.
	ErrOutOfRange = errors.New("out of range")
	// ErrClosed means the Store or Partial has been closed or finished.
	ErrClosed = errors.New("closed")
	// ErrLocked means another process (or Store) has the directory open.
	ErrLocked = errors.New("directory in use by another store")
	// ErrNoChunkList means no chunk list is stored for the blob and chunk size.
	ErrNoChunkList = errors.New("no chunk list")
	// ErrCorrupt means a committed blob on disk no longer hashes to its digest; the store has
	// removed it.
	ErrCorrupt = errors.New("stored blob corrupt")
)

// fileSeq names temp and trash files. It is shared by every Store in the process so a store
// still releasing pins after Close cannot collide with a successor on the same directory.
var fileSeq atomic.Uint64

// maxMediaType bounds the media type sidecar; real media types are well under 200 bytes.
const maxMediaType = 1024

// Options configures a Store.
type Options struct {
	// Dir is the root directory; it is created if absent.
	Dir string
	// Capacity is the byte budget for LRU eviction; 0 means unlimited.
	Capacity int64
	// Logger receives Warn for degraded states and Info for lifecycle; nil discards.
	Logger *slog.Logger
	// OnEvict, if set, is called without any store lock held after a committed blob leaves
	// the index through eviction or Delete, so the node can stop announcing it.
	OnEvict func(digest.Digest)
	// Handles bounds the files of partial downloads kept open, and may be shared by several
	// Stores; nil gives the Store a pool of its own of DefaultOpenFiles.
	Handles *Handles

	now        func() time.Time // tests fix the clock so recency order on disk is deterministic
	beforeHash func()           // tests hold a chunk list computation to make callers meet
}

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	MediaType string
}

// Stats is a snapshot of the store's accounting.
type Stats struct {
	Bytes     int64 // committed bytes
	Blobs     int   // committed blobs
	Evictions int64 // committed blobs removed to make room, since Open
	Capacity  int64 // 0 means unlimited

	// Reserved is held for open partial downloads and PartialBytes by closed ones kept for a
	// resume; both count toward Capacity alongside Bytes.
	Reserved     int64
	PartialBytes int64
}

// Store is a content-addressed disk cache. All methods are safe for concurrent use.
type Store struct {
	dir      string
	lock     *os.File // held for the Store's life: one Store per directory
	capacity int64
	log      *slog.Logger
	onEvict  func(digest.Digest)
	now      func() time.Time
	handles  *Handles

	// mu guards the index. It is held for renames, which keep disk and index in step, but
	// never while blob contents are read, written or synced.
	mu        sync.Mutex
	closed    bool
	blobs     map[digest.Digest]*entry // committed
	idle      map[digest.Digest]*entry // partial downloads on disk, not open
	open      map[digest.Digest]*Partial
	lru       lru
	committed int64
	reserved  int64
	idleBytes int64
	evictions int64

	// flights share a chunk list computation among concurrent callers; computations lets
	// Close end and wait for those running.
	flights      singleflight.Group
	computations computations
	// beforeHash, if set, runs before a chunk list computation reads the blob (tests).
	beforeHash func()
}

// Open opens the store rooted at opts.Dir. It indexes the committed blobs with their recency
// taken from file mtimes, keeps resumable partial downloads, drops malformed ones and clears
// temp files left by a previous run.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("open store: no directory")
	}
	if opts.Capacity < 0 {
		return nil, fmt.Errorf("open store %s: capacity %d: %w", opts.Dir, opts.Capacity, ErrOutOfRange)
	}
	s := &Store{
		dir:      opts.Dir,
		capacity: opts.Capacity,
		log:      opts.Logger,
		onEvict:  opts.OnEvict,
		now:      opts.now,
		handles:  opts.Handles,
		blobs:    make(map[digest.Digest]*entry),
		idle:     make(map[digest.Digest]*entry),
		open:     make(map[digest.Digest]*Partial),

		computations: computations{closing: make(chan struct{})},
		beforeHash:   opts.beforeHash,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.handles == nil {
		s.handles = NewHandles(DefaultOpenFiles)
	}
	for _, sub := range []string{blobsDir, partialDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	lock, err := lockDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.lock = lock
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := s.clearTmp(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	blobs, err := s.scanBlobs()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	partials, err := s.scanPartials(blobs)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	all := append(blobs, partials...)
	slices.SortStableFunc(all, func(a, b found) int { return a.mtime.Compare(b.mtime) })

	s.mu.Lock()
	for _, f := range all {
		if f.partial {
			s.idle[f.digest] = f.entry
			s.idleBytes += f.size
		} else {
			s.blobs[f.digest] = f.entry
			s.committed += f.size
		}
		s.lru.add(f.entry)
	}
	var c cleanup
	s.evictLocked("", &c)
	committed := s.committed
	s.mu.Unlock()
	s.finish(c)

	s.log.Info("store opened", "bytes", committed)
	ok = true
	return s, nil
}

// Close closes the open partial downloads, keeping them for a resume, ends the chunk list
// computations running, and makes further calls fail with ErrClosed. Blobs already open stay
// readable until their own Close.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	partials := make([]*Partial, 0, len(s.open))
	for _, p := range s.open {
		partials = append(partials, p)
	}
	s.mu.Unlock()

	var errs []error
	for _, p := range partials {
		errs = append(errs, p.Close())
	}
	s.computations.stop()
	errs = append(errs, s.lock.Close()) // releases the directory lock
	s.log.Info("store closed")
	return errors.Join(errs...)
}

// Stat describes the committed blob d without marking it used.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	if err := validate(d); err != nil {
		return Info{}, fmt.Errorf("stat: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Info{}, fmt.Errorf("stat %s: %w", d, ErrClosed)
	}
	e := s.blobs[d]
	if e == nil {
		return Info{}, &notFoundError{op: "stat", d: d}
	}
	return e.info(), nil
}

// Open opens the committed blob d, pinning it against eviction until the Blob is closed, and
// marks it most recently used.
func (s *Store) Open(d digest.Digest) (*Blob, error) {
	return s.openBlob("open", d, true)
}

// openBlob pins and opens the committed blob d for op, which prefixes its errors; touch marks
// it most recently used, which a read for the store's own purposes (ComputeChunkList) should
// not do.
func (s *Store) openBlob(op string, d digest.Digest, touch bool) (*Blob, error) {
	if err := validate(d); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	path := s.blobPath(d)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s %s: %w", op, d, ErrClosed)
	}
	e := s.blobs[d]
	if e == nil {
		s.mu.Unlock()
		return nil, &notFoundError{op: op, d: d}
	}
	// Opened under the lock so Delete cannot move the file aside between lookup and open.
	f, err := os.Open(path)
	if err != nil {
		var c cleanup
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind the store's back: forget it instead of failing every request.
			s.dropLocked(e, &c)
			err = ErrNotFound
		}
		s.mu.Unlock()
		s.finish(c)
		return nil, fmt.Errorf("%s %s: %w", op, d, err)
	}
	e.pins++
	if touch {
		s.lru.touch(e)
	}
	s.mu.Unlock()

	if touch {
		// The mtime carries recency across a restart. A lost update (say, a concurrent Delete
		// moved the file) only blurs that order, so the error is not worth reporting.
		now := s.now()
		_ = os.Chtimes(path, now, now)
	}
	return &Blob{s: s, e: e, f: f}, nil
}

// Put stores small content such as a manifest under d after checking that it hashes to d.
// The write is atomic: a crash leaves either no blob or the whole one. Putting content that is
// already committed does nothing.
func (s *Store) Put(d digest.Digest, mediaType string, data []byte) error {
	if err := validate(d); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if got := d.Algorithm().FromBytes(data); got != d {
		return fmt.Errorf("put %s: content hashes to %s: %w", d, got, ErrDigestMismatch)
	}
	if len(mediaType) > maxMediaType {
		return fmt.Errorf("put %s: media type of %d bytes: %w", d, len(mediaType), ErrOutOfRange)
	}
	s.mu.Lock()
	closed, exists := s.closed, s.blobs[d] != nil
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("put %s: %w", d, ErrClosed)
	}
	if exists {
		return nil
	}

	var temps []string
	defer func() {
		for _, t := range temps {
			_ = os.Remove(t) // already renamed away on success
		}
	}()
	tmp, err := s.writeTemp(data)
	if err != nil {
		return fmt.Errorf("put %s: %w", d, err)
	}
	temps = append(temps, tmp)
	var typeTmp string
	if mediaType != "" {
		if typeTmp, err = s.writeTemp([]byte(mediaType)); err != nil {
			return fmt.Errorf("put %s: %w", d, err)
		}
		temps = append(temps, typeTmp)
	}
	if err := os.MkdirAll(filepath.Dir(s.blobPath(d)), 0o755); err != nil {
		return fmt.Errorf("put %s: %w", d, err)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("put %s: %w", d, ErrClosed)
	}
	if s.blobs[d] != nil {
		s.mu.Unlock()
		return nil
	}
	var c cleanup
	if _, err := s.installLocked(d, int64(len(data)), mediaType, tmp, typeTmp, &c); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("put %s: %w", d, err)
	}
	s.evictLocked(d, &c)
	over := s.overLocked()
	s.mu.Unlock()
	s.finish(c)
	if over {
		s.log.Warn("cache over capacity, nothing left to evict", "digest", d, "bytes", len(data))
	}
	return nil
}

// Delete removes the committed blob d. Stat and Open report ErrNotFound at once; the file
// itself goes when the last Blob pinning it is closed.
func (s *Store) Delete(d digest.Digest) error {
	if err := validate(d); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("delete %s: %w", d, ErrClosed)
	}
	e := s.blobs[d]
	if e == nil {
		s.mu.Unlock()
		return fmt.Errorf("delete %s: %w", d, ErrNotFound)
	}
	var c cleanup
	s.dropLocked(e, &c)
	s.mu.Unlock()
	s.finish(c)
	return nil
}

// Walk calls fn for every committed blob, most recently used first, until fn returns false.
// fn runs without the store's lock, so it may call the store.
func (s *Store) Walk(fn func(Info) bool) {
	s.mu.Lock()
	infos := make([]Info, 0, len(s.blobs))
	s.lru.newestFirst(func(e *entry) bool {
		if !e.partial {
			infos = append(infos, e.info())
		}
		return true
	})
	s.mu.Unlock()
	for _, info := range infos {
		if !fn(info) {
			return
		}
	}
}

// Stats returns a snapshot of the store's accounting.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Bytes:        s.committed,
		Blobs:        len(s.blobs),
		Evictions:    s.evictions,
		Capacity:     s.capacity,
		Reserved:     s.reserved,
		PartialBytes: s.idleBytes,
	}
}

// notFoundError is ErrNotFound for one digest. Its message is put together only when asked
// for: a miss is the everyday answer to a peer asking for a blob the node is still
// downloading, and most callers only check errors.Is(err, ErrNotFound).
type notFoundError struct {
	op string
	d  digest.Digest
}

func (e *notFoundError) Error() string { return e.op + " " + string(e.d) + ": " + ErrNotFound.Error() }
func (e *notFoundError) Unwrap() error { return ErrNotFound }

// validate rejects anything go-digest does not accept before it can become part of a path:
// the hex check is what keeps "sha256:../../etc" out of the filesystem.
func validate(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidDigest, d, err)
	}
	return nil
}

// installLocked moves a finished file, and its media type sidecar if any, into the committed
// layout and indexes it as the most recently used blob. The sidecar goes first so a crash in
// between leaves an orphan sidecar (removed at Open) rather than a blob missing its type.
func (s *Store) installLocked(d digest.Digest, size int64, mediaType, src, typeSrc string, c *cleanup) (*entry, error) {
	if typeSrc != "" {
		if err := os.Rename(typeSrc, s.typePath(d)); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(src, s.blobPath(d)); err != nil {
		if typeSrc != "" {
			_ = os.Remove(s.typePath(d)) // best effort; Open removes orphans anyway
		}
		return nil, err
	}
	if old := s.idle[d]; old != nil {
		// A leftover partial of content now held in full is dead weight.
		s.dropIdleLocked(old, c)
	}
	e := &entry{digest: d, size: size, mediaType: mediaType}
	s.blobs[d] = e
	s.lru.add(e)
	s.committed += size
	return e, nil
}

// overLocked reports whether what the store holds or has promised exceeds its capacity.
func (s *Store) overLocked() bool {
	return s.capacity > 0 && s.committed+s.reserved+s.idleBytes > s.capacity
}

// evictLocked removes least recently used entries until the store fits its capacity. It skips
// pinned blobs and keep, the blob just added, which would otherwise be thrown out at once
// whenever it alone exceeds the capacity. When the store cannot fit, it still evicts all it
// can: capacity exists to protect the disk, and serving beats refusing.
func (s *Store) evictLocked(keep digest.Digest, c *cleanup) {
	if s.closed {
		return // the directory may already belong to a successor
	}
	s.lru.oldestFirst(func(e *entry) bool {
		if !s.overLocked() {
			return false
		}
		switch {
		case e.partial:
			s.dropIdleLocked(e, c)
		case e.pins == 0 && e.digest != keep:
			s.dropLocked(e, c)
			s.evictions++
		}
		return true
	})
}

// dropLocked takes a committed blob out of the index and moves its file aside, so its path is
// free at once for a new copy; the file is unlinked after the lock is released, or after the
// last pin if it is pinned.
func (s *Store) dropLocked(e *entry, c *cleanup) {
	delete(s.blobs, e.digest)
	s.lru.remove(e)
	s.committed -= e.size
	trash := s.trashLocked(s.blobPath(e.digest))
	if e.mediaType != "" {
		if err := os.Remove(s.typePath(e.digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove media type of dropped blob", "digest", e.digest, "err", err)
		}
	}
	for _, cs := range e.chunkLists {
		s.removeListLocked(e.digest, cs)
	}
	e.chunkLists = nil
	if trash != "" {
		if e.pins > 0 {
			e.trash = trash
		} else {
			c.trash = append(c.trash, trash)
		}
	}
	c.dropped = append(c.dropped, e.digest)
}

// dropIdleLocked forgets a partial download that is not open and moves its files aside.
func (s *Store) dropIdleLocked(e *entry, c *cleanup) {
	delete(s.idle, e.digest)
	s.lru.remove(e)
	s.idleBytes -= e.size
	for _, path := range []string{s.chunksPath(e.digest), s.partialPath(e.digest)} {
		if trash := s.trashLocked(path); trash != "" {
			c.trash = append(c.trash, trash)
		}
	}
}

// trashLocked renames path into tmp/ and returns the new name, or "" if there was nothing to
// move. A failure is logged: the index has already let go, and the file is found again (and
// judged again) at the next Open.
func (s *Store) trashLocked(path string) string {
	trash := filepath.Join(s.dir, tmpDir, fmt.Sprintf("trash-%d", fileSeq.Add(1)))
	if err := os.Rename(path, trash); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("move dropped file aside", "err", err)
		}
		return ""
	}
	return trash
}

// unpin releases one pin on e. The last pin finishes a deferred Delete or, for a blob still
// indexed, lets eviction catch up on capacity exceeded while everything was pinned.
func (s *Store) unpin(e *entry) {
	var c cleanup
	s.mu.Lock()
	e.pins--
	if e.pins == 0 {
		if e.trash != "" {
			c.trash = append(c.trash, e.trash)
			e.trash = ""
		}
		s.evictLocked("", &c)
	}
	s.mu.Unlock()
	s.finish(c)
}

// cleanup is work decided under the lock and done after it: unlinking a large file can be
// slow, and OnEvict may call back into the store.
type cleanup struct {
	trash   []string
	dropped []digest.Digest
}

func (s *Store) finish(c cleanup) {
	for _, path := range c.trash {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove dropped file", "err", err)
		}
	}
	for _, d := range c.dropped {
		s.log.Debug("blob dropped", "digest", d)
		if s.onEvict != nil {
			s.onEvict(d)
		}
	}
}

// lockDir takes an exclusive advisory lock on dir/lock, so two nodes never share a cache
// directory; the lock goes with the returned file (and with the process).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
