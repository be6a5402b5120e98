package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/chunk"
)

// A chunk list is the SHA-256 of every chunk of a committed blob, for one chunk size: chunk i
// covers [i*chunkSize, min((i+1)*chunkSize, size)). Peers check each chunk they receive
// against it. It is computed once, while the whole blob is re-verified against its digest,
// and then stored: recomputing it from the file at every request would let a byte that rots on
// this disk later produce a list that agrees with the rotten data, and peers would accept it.
//
// The sidecar blobs/<alg>/<hex>.chunks-<chunkSize> holds:
//
//	"SHOALCL1"                 magic
//	uint64 big-endian          blob size
//	uint64 big-endian          chunk size
//	32 bytes per chunk         the raw SHA-256 sums, in chunk order
//	uint32 big-endian          CRC-32C of everything before it
//
// Its length is fixed by the blob size and chunk size, so a truncated or extended file is
// rejected before the checksum is even looked at; the checksum catches damage inside it.
//
// Sidecar bytes are not counted toward the store's byte accounting (Stats.Bytes, Info.Size,
// the capacity): a list is 32 bytes per chunk of at least chunk.MinSize, and at most
// maxChunkLists are kept per blob, so all of a blob's lists together stay under 0.2% of it.
const (
	listMagic     = "SHOALCL1"
	listHeaderLen = len(listMagic) + 16
	listCRCLen    = 4

	// maxChunkLists bounds the lists kept per blob; a node normally uses one chunk size, and
	// a further one replaces the oldest.
	maxChunkLists = 4

	// hashBufSize is how much of a blob ComputeChunkList reads at a time, and so how often it
	// looks at its context.
	hashBufSize = 1 << 20
)

var (
	errMalformedList = errors.New("malformed chunk list")
	// errShortBlob means a blob file holds fewer bytes than the index says.
	errShortBlob = errors.New("blob file shorter than its size")

	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// ChunkList returns the stored chunk list of the committed blob d for chunkSize. It does not
// read the blob. Without a stored list, the error wraps ErrNoChunkList (ErrNotFound if d is
// not held); a stored list that fails its checks is removed, logged, and counts as absent.
func (s *Store) ChunkList(d digest.Digest, chunkSize int64) ([]digest.Digest, error) {
	if err := validate(d); err != nil {
		return nil, fmt.Errorf("chunk list: %w", err)
	}
	if err := checkChunkSize(chunkSize); err != nil {
		return nil, fmt.Errorf("chunk list of %s: %w", d, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("chunk list of %s: %w", d, ErrClosed)
	}
	e := s.blobs[d]
	if e == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("chunk list of %s: %w", d, ErrNotFound)
	}
	stored, size := slices.Contains(e.chunkLists, chunkSize), e.size
	s.mu.Unlock()
	absent := fmt.Errorf("chunk list of %s for chunk size %d: %w", d, chunkSize, ErrNoChunkList)
	if !stored {
		return nil, absent
	}

	path := s.listPath(d, chunkSize)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.forgetList(e, chunkSize, nil) // removed behind the store's back
		return nil, absent
	}
	if err != nil {
		return nil, fmt.Errorf("chunk list of %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("chunk list of %s: %w", d, err)
	}
	list, err := readList(f, size, chunkSize)
	if errors.Is(err, errMalformedList) {
		s.log.Warn("dropping malformed chunk list", "digest", d, "err", fmt.Errorf("%s: %w", path, err))
		s.forgetList(e, chunkSize, fi)
		return nil, absent
	}
	if err != nil {
		return nil, fmt.Errorf("chunk list of %s: %w", d, err)
	}
	return list, nil
}

// ComputeChunkList reads the committed blob d once, pinned so it cannot be evicted meanwhile,
// and hashes each chunk of chunkSize with SHA-256 and the whole blob with d's algorithm. If
// the whole does not match d, the copy on disk is corrupt: the store deletes it, calls
// OnEvict as for an eviction, and returns an error wrapping ErrCorrupt. Otherwise the list is
// stored, replacing any for the same chunk size, and returned.
//
// Concurrent calls for the same blob and chunk size share one computation. A caller that
// gives up (its ctx ends) returns at once, and the computation goes on for the others: it is
// bounded by the deadline of the caller that started it and by Close, not by that caller
// leaving. If the deadline ends it while a caller still wants the list, that caller starts
// again.
func (s *Store) ComputeChunkList(ctx context.Context, d digest.Digest, chunkSize int64) ([]digest.Digest, error) {
	if err := validate(d); err != nil {
		return nil, fmt.Errorf("compute chunk list: %w", err)
	}
	if err := checkChunkSize(chunkSize); err != nil {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
	}
	key := string(d) + " " + strconv.FormatInt(chunkSize, 10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
		}
		ch := s.flights.DoChan(key, func() (any, error) { return s.computeShared(ctx, d, chunkSize) })
		var r singleflight.Result
		select {
		case r = <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("compute chunk list of %s: %w", d, ctx.Err())
		}
		if isContextErr(r.Err) && ctx.Err() == nil {
			continue // the deadline of the caller that started it (or Close) ended it; this one still wants the list
		}
		list, _ := r.Val.([]digest.Digest)
		return cloneList(list), r.Err
	}
}

// computeShared runs one computation that concurrent callers share, first among them
// caller. It runs on a context of its own, so that none of them leaving ends it for the
// others, with caller's values and deadline, and ends when the store closes.
func (s *Store) computeShared(caller context.Context, d digest.Digest, chunkSize int64) ([]digest.Digest, error) {
	if !s.computations.start() {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, ErrClosed)
	}
	defer s.computations.done()
	ctx, cancel := context.WithCancel(context.WithoutCancel(caller))
	if deadline, ok := caller.Deadline(); ok {
		cancel()
		ctx, cancel = context.WithDeadline(context.WithoutCancel(caller), deadline)
	}
	defer cancel()
	go func() {
		select {
		case <-s.computations.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.computeList(ctx, d, chunkSize)
}

// computations are the chunk list computations running. Close ends them and waits for them,
// since they write into the store's directory.
type computations struct {
	closing chan struct{} // closed by stop

	mu      sync.Mutex
	stopped bool
	running int
	wg      sync.WaitGroup
}

// start counts a computation in, unless the store is closing.
func (c *computations) start() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return false
	}
	c.running++
	c.wg.Add(1)
	return true
}

// done counts a computation out.
func (c *computations) done() {
	c.mu.Lock()
	c.running--
	c.mu.Unlock()
	c.wg.Done()
}

// count is how many computations are running.
func (c *computations) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// stop ends the computations running, waits for them, and refuses new ones.
func (c *computations) stop() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.closing)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// PutChunkList stores the chunk list of the committed blob d that its download computed while
// verifying the digest, so it need not be read again. The list must have one SHA-256 digest
// per chunk of chunkSize.
func (s *Store) PutChunkList(d digest.Digest, chunkSize int64, list []digest.Digest) error {
	if err := validate(d); err != nil {
		return fmt.Errorf("put chunk list: %w", err)
	}
	if err := checkChunkSize(chunkSize); err != nil {
		return fmt.Errorf("put chunk list of %s: %w", d, err)
	}
	info, err := s.Stat(d)
	if err != nil {
		return fmt.Errorf("put chunk list of %s: %w", d, err)
	}
	if n := chunk.Count(info.Size, chunkSize); int64(len(list)) != n {
		return fmt.Errorf("put chunk list of %s: %d entries for %d chunks: %w", d, len(list), n, ErrOutOfRange)
	}
	sums := make([]byte, 0, len(list)*sha256.Size)
	for i, c := range list {
		raw, err := hex.DecodeString(c.Encoded())
		if c.Algorithm() != digest.SHA256 || err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("put chunk list of %s: entry %d %q is not a sha256 digest: %w", d, i, c, ErrInvalidDigest)
		}
		sums = append(sums, raw...)
	}
	tmp, err := s.writeTemp(encodeList(info.Size, chunkSize, sums))
	if err != nil {
		return fmt.Errorf("put chunk list of %s: %w", d, err)
	}
	defer os.Remove(tmp) // already renamed away on success
	if err := s.installList(d, chunkSize, tmp); err != nil {
		return fmt.Errorf("put chunk list of %s: %w", d, err)
	}
	return nil
}

// computeList does ComputeChunkList's work.
func (s *Store) computeList(ctx context.Context, d digest.Digest, chunkSize int64) ([]digest.Digest, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
	}
	// Not marked used: working out a list is not a read by a client.
	b, err := s.openBlob("compute chunk list", d, false)
	if err != nil {
		return nil, err
	}
	defer b.Close() // after a corrupt blob is dropped, this unlinks its file
	if s.beforeHash != nil {
		s.beforeHash()
	}
	size := b.Size()
	if n := chunk.Count(size, chunkSize); n > maxChunks {
		return nil, fmt.Errorf("compute chunk list of %s: %d chunks, at most %d: %w", d, n, maxChunks, ErrOutOfRange)
	}

	fi, err := b.File().Stat()
	if err != nil {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
	}
	var sums []byte
	var corrupt error
	if fi.Size() != size {
		corrupt = fmt.Errorf("file holds %d bytes, want %d", fi.Size(), size)
	} else {
		var whole digest.Digest
		sums, whole, err = hashChunks(ctx, b, size, chunkSize, d.Algorithm())
		switch {
		case errors.Is(err, errShortBlob):
			corrupt = err // truncated while being read
		case err != nil:
			return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
		case whole != d:
			corrupt = fmt.Errorf("content hashes to %s", whole)
		}
	}
	if corrupt != nil {
		s.dropCorrupt(b.e)
		return nil, fmt.Errorf("compute chunk list of %s: %w: %w", d, ErrCorrupt, corrupt)
	}

	tmp, err := s.writeTemp(encodeList(size, chunkSize, sums))
	if err != nil {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
	}
	defer os.Remove(tmp) // already renamed away on success
	if err := s.installList(d, chunkSize, tmp); err != nil {
		return nil, fmt.Errorf("compute chunk list of %s: %w", d, err)
	}
	return listFromSums(sums), nil
}

// hashChunks reads size bytes of r once, returning the SHA-256 of each chunk back to back and
// the digest of the whole under alg. It checks ctx before every read.
func hashChunks(ctx context.Context, r io.ReaderAt, size, chunkSize int64, alg digest.Algorithm) ([]byte, digest.Digest, error) {
	whole := alg.Digester()
	sum := sha256.New()
	buf := make([]byte, min(chunkSize, hashBufSize))
	sums := make([]byte, 0, chunk.Count(size, chunkSize)*sha256.Size)
	for start := int64(0); start < size; start += chunkSize {
		end := min(start+chunkSize, size)
		sum.Reset()
		for off := start; off < end; {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			p := buf[:min(int64(len(buf)), end-off)]
			n, err := r.ReadAt(p, off)
			if n < len(p) {
				if err == nil || errors.Is(err, io.EOF) {
					return nil, "", fmt.Errorf("read at %d: %w", off+int64(n), errShortBlob)
				}
				return nil, "", err
			}
			sum.Write(p)
			whole.Hash().Write(p)
			off += int64(n)
		}
		sums = sum.Sum(sums)
	}
	return sums, whole.Digest(), nil
}

// installList renames a finished list into place for d, if d is still held.
func (s *Store) installList(d digest.Digest, chunkSize int64, tmp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed // the directory may already belong to a successor
	}
	// Possibly a fresh copy if d was dropped while being hashed: the list was made from
	// content verified against d, so it holds for any correct copy.
	e := s.blobs[d]
	if e == nil {
		return ErrNotFound
	}
	if err := os.Rename(tmp, s.listPath(d, chunkSize)); err != nil {
		return err
	}
	if slices.Contains(e.chunkLists, chunkSize) {
		return nil
	}
	for len(e.chunkLists) >= maxChunkLists {
		s.removeListLocked(d, e.chunkLists[0])
		e.chunkLists = slices.Delete(e.chunkLists, 0, 1)
	}
	e.chunkLists = append(e.chunkLists, chunkSize)
	return nil
}

// forgetList removes a chunk list found missing (fi nil) or malformed (fi describes the file
// read), unless it has been replaced since: lists are renamed into place under s.mu, so the
// check and the removal cannot race a fresh list.
func (s *Store) forgetList(e *entry, chunkSize int64, fi os.FileInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.blobs[e.digest] != e || !slices.Contains(e.chunkLists, chunkSize) {
		return
	}
	cur, err := os.Stat(s.listPath(e.digest, chunkSize))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil || fi == nil || !os.SameFile(cur, fi):
		return
	default:
		s.removeListLocked(e.digest, chunkSize)
	}
	e.chunkLists = slices.DeleteFunc(e.chunkLists, func(cs int64) bool { return cs == chunkSize })
}

// removeListLocked unlinks a chunk list; it is small, so this happens under the lock. A
// failure is only logged: a list is never trusted beyond its blob's index entry, and a stray
// one is attributed again (or removed as an orphan) at the next Open.
func (s *Store) removeListLocked(d digest.Digest, chunkSize int64) {
	if err := os.Remove(s.listPath(d, chunkSize)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove chunk list", "digest", d, "err", err)
	}
}

// dropCorrupt removes the committed blob e after its content failed verification, unless it
// has been replaced or dropped meanwhile.
func (s *Store) dropCorrupt(e *entry) {
	var c cleanup
	s.mu.Lock()
	if !s.closed && s.blobs[e.digest] == e {
		s.dropLocked(e, &c)
	}
	s.mu.Unlock()
	s.finish(c)
}

// checkChunkSize bounds a chunk size to what a file name and a list may hold. The store takes
// sizes below the fleet's chunk.MinSize (the config enforces that one), so a simulated fleet
// can run small chunks through the real store; a list's length is bounded by maxChunks.
func checkChunkSize(chunkSize int64) error {
	if chunkSize < 1 || chunkSize > chunk.MaxSize {
		return fmt.Errorf("chunk size %d, want 1 to %d: %w", chunkSize, chunk.MaxSize, ErrOutOfRange)
	}
	return nil
}

// listLen is the length of the sidecar of n chunks.
func listLen(n int64) int64 { return int64(listHeaderLen) + n*sha256.Size + listCRCLen }

// encodeList returns the sidecar holding sums, the chunk sums back to back.
func encodeList(size, chunkSize int64, sums []byte) []byte {
	b := make([]byte, 0, listLen(int64(len(sums)/sha256.Size)))
	b = append(b, listMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint64(b, uint64(chunkSize))
	b = append(b, sums...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// readList reads and checks the sidecar for a blob of size bytes. Every failure of the
// content wraps errMalformedList; a list that vouches for wrong chunks would get this node
// banned by its peers, while dropping a doubtful one only costs a re-hash.
func readList(r io.Reader, size, chunkSize int64) ([]digest.Digest, error) {
	n := chunk.Count(size, chunkSize)
	if n > maxChunks {
		return nil, fmt.Errorf("%w: %d chunks", errMalformedList, n)
	}
	want := listLen(n)
	b, err := io.ReadAll(io.LimitReader(r, want+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != want {
		return nil, fmt.Errorf("%w: %d bytes, want %d", errMalformedList, len(b), want)
	}
	if string(b[:len(listMagic)]) != listMagic {
		return nil, fmt.Errorf("%w: bad header", errMalformedList)
	}
	body, sum := b[:len(b)-listCRCLen], binary.BigEndian.Uint32(b[len(b)-listCRCLen:])
	if got := crc32.Checksum(body, crcTable); got != sum {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", errMalformedList, got, sum)
	}
	gotSize := binary.BigEndian.Uint64(b[len(listMagic):])
	gotChunk := binary.BigEndian.Uint64(b[len(listMagic)+8:])
	if gotSize != uint64(size) || gotChunk != uint64(chunkSize) {
		return nil, fmt.Errorf("%w: made for size %d, chunk size %d; want %d, %d", errMalformedList, gotSize, gotChunk, size, chunkSize)
	}
	return listFromSums(body[listHeaderLen:]), nil
}

// listFromSums turns raw SHA-256 sums into digests. The result is never nil, so an empty blob
// has an empty list rather than none.
func listFromSums(sums []byte) []digest.Digest {
	list := make([]digest.Digest, 0, len(sums)/sha256.Size)
	for i := 0; i+sha256.Size <= len(sums); i += sha256.Size {
		list = append(list, digest.NewDigestFromBytes(digest.SHA256, sums[i:i+sha256.Size]))
	}
	return list
}

// cloneList gives each caller of a shared computation its own slice; nil stays nil.
func cloneList(list []digest.Digest) []digest.Digest {
	if list == nil {
		return nil
	}
	return append(make([]digest.Digest, 0, len(list)), list...)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
