// Package chunk is the unit in which nodes exchange blobs: the sizes a chunk may have, the
// arithmetic of chunk indices, what a node holds of a blob (Have) and the errors of the chunk
// protocol. It imports no network code, so the downloader, the store and the tracker share it
// without depending on libp2p; p2p carries it on the wire.
package chunk

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Sizes a fleet may use. All nodes of a fleet must agree on one.
const (
	// DefaultSize is the chunk size when none is configured.
	DefaultSize = 4 << 20
	// MinSize and MaxSize bound a chunk size; with MaxCount they cap a blob exchanged with
	// peers at 64 TiB and its chunk list at 32 MiB.
	MinSize = 64 << 10
	MaxSize = 64 << 20
	// MaxCount is the most chunks of one blob that peers exchange.
	MaxCount = 1 << 20
)

var (
	// ErrNotHeld reports that a peer holds nothing of a blob, or not the requested chunk.
	ErrNotHeld = errors.New("not held by peer")
	// ErrBusy reports that a peer refused a request because it is serving as many of ours as
	// it allows; ask another peer or later.
	ErrBusy = errors.New("peer busy")
	// ErrProtocol reports a malformed or oversized message from a peer, including a chunk
	// shorter or longer than the peer announced.
	ErrProtocol = errors.New("chunk protocol violation")
	// ErrSize reports a chunk size outside MinSize..MaxSize.
	ErrSize = errors.New("chunk size out of range")
)

// BusyError is a busy answer that names other peers to ask: those the holder sent the chunk
// to just now, which hold it or are about to. errors.Is(err, ErrBusy) holds for it.
type BusyError struct {
	Others []string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%v, sent just now to %d others", ErrBusy, len(e.Others))
}

// Is makes a BusyError an ErrBusy.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// CheckSize reports whether size is a chunk size a fleet may use.
func CheckSize(size int64) error {
	if size < MinSize || size > MaxSize {
		return fmt.Errorf("%w: %d, want %d to %d", ErrSize, size, MinSize, MaxSize)
	}
	return nil
}

// Count is the number of chunks of chunkSize that cover size bytes, without overflowing for
// sizes near the int64 limit. chunkSize must be positive.
func Count(size, chunkSize int64) int64 {
	n := size / chunkSize
	if size%chunkSize != 0 {
		n++
	}
	return n
}

// Len is the length of chunk i of a blob of size bytes; i must be in range.
func Len(size, chunkSize int64, i int) int64 {
	return min(chunkSize, size-int64(i)*chunkSize)
}

// Have is what a node has of a blob. Chunk i covers bytes
// [i*ChunkSize, min((i+1)*ChunkSize, Size)).
type Have struct {
	Size      int64
	ChunkSize int64
	// Chunks has one entry per chunk, true for those the node can serve now.
	Chunks []bool
	// Fetching marks the chunks the node is fetching from the origin registry right now, so
	// that a peer can wait for them rather than fetch them from the origin too. It is nil or
	// all false when there are none, and then arrives as nil; otherwise it has one entry per
	// chunk, never true for a chunk in Chunks. It is a hint: the fetch may fail.
	Fetching []bool
	// ChunkList is the SHA-256 of every chunk, set only when the node holds the whole blob
	// verified against its digest; nil otherwise. A receiver checks chunks against it but
	// must not trust it blindly: the final blob digest check is what proves it.
	ChunkList []digest.Digest
	// Peers are peers that asked the node about the blob lately, newest first: most likely
	// downloading it too. A hint, like Fetching; nil if none.
	Peers []string
}
