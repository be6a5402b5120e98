package store

import (
	"bytes"
	"testing"

	"github.com/shoal-dev/shoal/chunk"
)

func TestNumChunks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, chunkSize, want int64
	}{
		{0, 4, 0},
		{1, 4, 1},
		{4, 4, 1},
		{5, 4, 2},
		{10, 4, 3},
		{1<<63 - 1, 1 << 62, 2},
	}
	for _, tc := range tests {
		if got := chunk.Count(tc.size, tc.chunkSize); got != tc.want {
			t.Errorf("chunk.Count(%d, %d) = %d, want %d", tc.size, tc.chunkSize, got, tc.want)
		}
	}
}

func TestParseChunksRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, chunkSize int64
		bitmap          []byte
	}{
		{0, 4, nil},
		{10, 4, []byte{0b101}},
		{64, 4, []byte{0xff, 0x0f}},
		{4 << 30, 4 << 20, make([]byte, 128)},
	}
	for _, tc := range tests {
		size, chunkSize, bitmap, err := parseChunks(encodeChunks(tc.size, tc.chunkSize, tc.bitmap))
		if err != nil || size != tc.size || chunkSize != tc.chunkSize || !bytes.Equal(bitmap, tc.bitmap) {
			t.Errorf("parseChunks(encodeChunks(%d, %d, %x)) = %d, %d, %x, %v, want the same back", tc.size, tc.chunkSize, tc.bitmap, size, chunkSize, bitmap, err)
		}
	}
}

// FuzzParseChunks feeds arbitrary files to the bitmap parser: it must never panic, and what it
// accepts must describe itself exactly.
func FuzzParseChunks(f *testing.F) {
	f.Add(encodeChunks(10, 4, []byte{0b101}))
	f.Add(encodeChunks(0, 1, nil))
	f.Add(encodeChunks(1<<40, 1<<20, nil))
	f.Add([]byte(chunksMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		size, chunkSize, bitmap, err := parseChunks(b)
		if err != nil {
			return
		}
		if size < 0 || chunkSize <= 0 {
			t.Fatalf("parseChunks accepted size %d, chunk size %d", size, chunkSize)
		}
		n := chunk.Count(size, chunkSize)
		if len(bitmap) != bitmapLen(int(n)) {
			t.Fatalf("parseChunks gave %d bitmap bytes for %d chunks", len(bitmap), n)
		}
		if again := encodeChunks(size, chunkSize, bitmap); !bytes.Equal(again, b) {
			t.Fatalf("encodeChunks(parseChunks(%x)) = %x", b, again)
		}
	})
}
