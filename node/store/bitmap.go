package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shoal-dev/shoal/chunk"
)

// A partial download's .chunks file is a fixed header naming the blob size and chunk size the
// bitmap was made for, followed by one bit per chunk (chunk i is bit i%8 of byte i/8). The
// header lets a restart tell a resumable partial from one made for a different layout, and the
// bit layout lets MarkChunk persist progress by rewriting a single byte in place.
const (
	chunksMagic     = "SHOALCK1"
	chunksHeaderLen = len(chunksMagic) + 16

	// maxChunks bounds the bitmap (2 MiB) so a tiny chunk size cannot make the store allocate
	// or read an unbounded file; at 4 MiB chunks it still allows 64 TiB blobs.
	maxChunks = 1 << 24
)

var errMalformedChunks = errors.New("malformed chunk bitmap")

// bitmapLen is the number of bytes holding n chunk bits.
func bitmapLen(n int) int { return (n + 7) / 8 }

// bitOffset is where the byte holding chunk i's bit lives in the .chunks file.
func bitOffset(i int) int64 { return int64(chunksHeaderLen + i/8) }

func hasBit(bitmap []byte, i int) bool { return bitmap[i/8]&(1<<(i%8)) != 0 }

// encodeChunks returns the full .chunks file for a blob of size bytes.
func encodeChunks(size, chunkSize int64, bitmap []byte) []byte {
	b := make([]byte, chunksHeaderLen, chunksHeaderLen+len(bitmap))
	copy(b, chunksMagic)
	binary.BigEndian.PutUint64(b[len(chunksMagic):], uint64(size))
	binary.BigEndian.PutUint64(b[len(chunksMagic)+8:], uint64(chunkSize))
	return append(b, bitmap...)
}

// parseChunks decodes a .chunks file. Anything it cannot fully account for is an error: a
// bitmap that vouches for data it should not would make the store serve garbage after a
// restart, while dropping a doubtful one only costs a re-download.
func parseChunks(b []byte) (size, chunkSize int64, bitmap []byte, err error) {
	if len(b) < chunksHeaderLen || string(b[:len(chunksMagic)]) != chunksMagic {
		return 0, 0, nil, fmt.Errorf("%w: bad header", errMalformedChunks)
	}
	usize := binary.BigEndian.Uint64(b[len(chunksMagic):])
	ucs := binary.BigEndian.Uint64(b[len(chunksMagic)+8:])
	if usize > 1<<62 || ucs == 0 || ucs > 1<<62 {
		return 0, 0, nil, fmt.Errorf("%w: size %d, chunk size %d", errMalformedChunks, usize, ucs)
	}
	size, chunkSize = int64(usize), int64(ucs)
	n := chunk.Count(size, chunkSize)
	if n > maxChunks {
		return 0, 0, nil, fmt.Errorf("%w: %d chunks", errMalformedChunks, n)
	}
	bitmap = b[chunksHeaderLen:]
	if len(bitmap) != bitmapLen(int(n)) {
		return 0, 0, nil, fmt.Errorf("%w: %d bitmap bytes for %d chunks", errMalformedChunks, len(bitmap), n)
	}
	if n%8 != 0 && bitmap[len(bitmap)-1]>>(n%8) != 0 {
		return 0, 0, nil, fmt.Errorf("%w: bits set past the last chunk", errMalformedChunks)
	}
	return size, chunkSize, bitmap, nil
}
