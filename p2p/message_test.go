package p2p

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

var (
	testDigest    = digest.FromString("blob")
	testDigest512 = digest.SHA512.FromString("blob")
)

func reader(b []byte) byteReader { return bufio.NewReader(bytes.NewReader(b)) }

func TestRequestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []request{
		{typ: msgHave, digest: testDigest},
		{typ: msgHave, digest: testDigest512},
		{typ: msgWatch, digest: testDigest},
		{typ: msgGet, digest: testDigest, index: 0},
		{typ: msgGet, digest: testDigest, index: 300},
		{typ: msgGet, digest: testDigest512, index: chunk.MaxCount - 1},
	}
	for _, want := range tests {
		b, err := appendRequest(nil, want)
		if err != nil {
			t.Fatalf("appendRequest(%+v) = %v", want, err)
		}
		if len(b) > maxRequestLen {
			t.Errorf("appendRequest(%+v) is %d bytes, want at most %d", want, len(b), maxRequestLen)
		}
		got, err := decodeRequest(reader(b))
		if err != nil || got != want {
			t.Errorf("decodeRequest(appendRequest(%+v)) = %+v, %v", want, got, err)
		}
	}
}

func TestAppendRequestInvalid(t *testing.T) {
	t.Parallel()
	tests := []request{
		{typ: 9, digest: testDigest},
		{typ: msgGet, digest: ""},
		{typ: msgGet, digest: digest.Digest(strings.Repeat("a", maxDigestLen+1))},
		{typ: msgGet, digest: testDigest, index: -1},
		{typ: msgGet, digest: testDigest, index: chunk.MaxCount},
		{typ: msgHave, digest: testDigest, index: 1},
	}
	for _, req := range tests {
		if b, err := appendRequest(nil, req); err == nil {
			t.Errorf("appendRequest(%+v) = %x, want an error", req, b)
		}
	}
}

func TestDecodeRequestInvalid(t *testing.T) {
	t.Parallel()
	d := []byte(testDigest)
	frame := func(typ byte, dlen uint64, body []byte, index uint64) []byte {
		b := []byte{typ}
		b = binary.AppendUvarint(b, dlen)
		b = append(b, body...)
		return binary.AppendUvarint(b, index)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "empty", in: nil},
		{name: "unknown type", in: frame(7, uint64(len(d)), d, 0)},
		{name: "empty digest", in: frame(msgGet, 0, nil, 0)},
		{name: "digest too long", in: frame(msgGet, maxDigestLen+1, bytes.Repeat([]byte("a"), maxDigestLen+1), 0)},
		{name: "huge digest length", in: frame(msgGet, 1<<62, d, 0)},
		{name: "truncated digest", in: frame(msgGet, uint64(len(d)), d, 0)[:20]},
		{name: "missing index", in: frame(msgGet, uint64(len(d)), d, 0)[:1+1+len(d)]},
		{name: "index too large", in: frame(msgGet, uint64(len(d)), d, chunk.MaxCount)},
		{name: "have with index", in: frame(msgHave, uint64(len(d)), d, 3)},
		{name: "watch with index", in: frame(msgWatch, uint64(len(d)), d, 3)},
		{name: "type zero", in: frame(0, uint64(len(d)), d, 0)},
		{name: "overlong varint", in: append([]byte{msgGet}, bytes.Repeat([]byte{0xff}, 11)...)},
		{name: "non-minimal varint", in: append([]byte{msgGet, 0x80 | byte(len(d)), 0x00}, d...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeRequest(reader(tt.in))
			if !errors.Is(err, chunk.ErrProtocol) {
				t.Errorf("decodeRequest(%x) = %+v, %v, want %v", tt.in, got, err, chunk.ErrProtocol)
			}
		})
	}
}

// newHave describes a blob of size bytes holding the chunks in held, or
// every chunk with its chunk list when held is nil.
func newHave(data []byte, chunkSize int64, held []int) chunk.Have {
	size := int64(len(data))
	count, err := chunkCount(size, chunkSize)
	if err != nil {
		panic(err)
	}
	h := chunk.Have{Size: size, ChunkSize: chunkSize, Chunks: make([]bool, count)}
	if held != nil {
		for _, i := range held {
			h.Chunks[i] = true
		}
		return h
	}
	h.ChunkList = make([]digest.Digest, count)
	for i := range count {
		h.Chunks[i] = true
		start := int64(i) * chunkSize
		h.ChunkList[i] = digest.FromBytes(data[start : start+chunk.Len(size, chunkSize, i)])
	}
	return h
}

// withFetching returns a copy of h fetching the chunks in fetching.
func withFetching(h chunk.Have, fetching ...int) chunk.Have {
	h.Fetching = make([]bool, len(h.Chunks))
	for _, i := range fetching {
		h.Fetching[i] = true
	}
	return h
}

func encodeHave(t testing.TB, h chunk.Have) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	_ = w.WriteByte(statusOK) // a bytes.Buffer never fails; Flush below would say so anyway
	if err := writeHave(w, h); err != nil {
		t.Fatalf("writeHave(%d bytes, %d chunks) = %v", h.Size, len(h.Chunks), err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func equalHave(a, b chunk.Have) bool {
	return a.Size == b.Size && a.ChunkSize == b.ChunkSize &&
		slices.Equal(a.Chunks, b.Chunks) && slices.Equal(a.ChunkList, b.ChunkList) &&
		(a.ChunkList == nil) == (b.ChunkList == nil) &&
		slices.Equal(a.Fetching, b.Fetching) && (a.Fetching == nil) == (b.Fetching == nil) &&
		slices.Equal(a.Peers, b.Peers)
}

// withPeers returns a copy of h naming peers.
func withPeers(h chunk.Have, peers ...peer.ID) chunk.Have {
	h.Peers = nil
	for _, id := range peers {
		h.Peers = append(h.Peers, id.String())
	}
	return h
}

func TestHaveRoundTrip(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB
	a, b := testPeerID(t), testPeerID(t)
	tests := []struct {
		name string
		have chunk.Have
	}{
		{name: "complete", have: newHave(data, chunk.MinSize, nil)},
		{name: "complete one chunk", have: newHave(data, chunk.MaxSize, nil)},
		{name: "empty blob", have: newHave(nil, chunk.MinSize, nil)},
		{name: "partial", have: newHave(data, chunk.MinSize, []int{0, 2, 4})},
		{name: "none yet", have: newHave(data, chunk.MinSize, []int{})},
		{name: "nine chunks", have: newHave(make([]byte, 9*chunk.MinSize), chunk.MinSize, []int{8})},
		{name: "fetching", have: withFetching(newHave(data, chunk.MinSize, []int{0, 2}), 1, 3)},
		{name: "fetching all", have: withFetching(newHave(data, chunk.MinSize, []int{}), 0, 1, 2, 3, 4)},
		{name: "nine chunks fetching", have: withFetching(newHave(make([]byte, 9*chunk.MinSize), chunk.MinSize, []int{0}), 8)},
		{name: "complete with peers", have: withPeers(newHave(data, chunk.MinSize, nil), a, b)},
		{name: "partial with a peer", have: withPeers(newHave(data, chunk.MinSize, []int{1}), a)},
		{name: "fetching with peers", have: withPeers(withFetching(newHave(data, chunk.MinSize, []int{0}), 3), b, a)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readHave(reader(encodeHave(t, tt.have)))
			if err != nil || !equalHave(got, tt.have) {
				t.Errorf("readHave(encoded %s) = %+v, %v, want %+v", tt.name, got, err, tt.have)
			}
		})
	}
}

// TestHaveNoneFetching checks that nothing fetching has one encoding, with
// no fetching bitmap, and arrives as nil.
func TestHaveNoneFetching(t *testing.T) {
	t.Parallel()
	h := newHave(make([]byte, 3*chunk.MinSize), chunk.MinSize, []int{1})
	none := withFetching(h)
	if got, want := encodeHave(t, none), encodeHave(t, h); !bytes.Equal(got, want) {
		t.Fatalf("writeHave(all false Fetching) = %x, want %x", got, want)
	}
	got, err := readHave(reader(encodeHave(t, none)))
	if err != nil || got.Fetching != nil || !equalHave(got, h) {
		t.Errorf("readHave(encoded all false Fetching) = %+v, %v, want %+v", got, err, h)
	}
	complete := withFetching(newHave(make([]byte, 3*chunk.MinSize), chunk.MinSize, nil))
	if got, err := readHave(reader(encodeHave(t, complete))); err != nil || got.Fetching != nil {
		t.Errorf("readHave(encoded complete, all false Fetching) = %+v, %v, want nil Fetching", got, err)
	}
}

func TestWriteHaveInvalid(t *testing.T) {
	t.Parallel()
	good := newHave(make([]byte, 3*chunk.MinSize), chunk.MinSize, nil)
	tests := []struct {
		name string
		edit func(h *chunk.Have)
	}{
		{name: "small chunk size", edit: func(h *chunk.Have) { h.ChunkSize = chunk.MinSize - 1 }},
		{name: "large chunk size", edit: func(h *chunk.Have) { h.ChunkSize = chunk.MaxSize + 1 }},
		{name: "negative size", edit: func(h *chunk.Have) { h.Size = -1 }},
		{name: "too many chunks", edit: func(h *chunk.Have) { h.Size = chunk.MinSize*chunk.MaxCount + 1 }},
		{name: "short bitmap", edit: func(h *chunk.Have) { h.Chunks = h.Chunks[:2] }},
		{name: "short chunk list", edit: func(h *chunk.Have) { h.ChunkList = h.ChunkList[:2] }},
		{name: "list with missing chunk", edit: func(h *chunk.Have) { h.Chunks[1] = false }},
		{name: "list of sha512", edit: func(h *chunk.Have) { h.ChunkList[0] = testDigest512 }},
		{name: "list with junk", edit: func(h *chunk.Have) { h.ChunkList[0] = "sha256:zz" }},
		{name: "short fetching bitmap", edit: func(h *chunk.Have) { h.ChunkList = nil; h.Chunks[1] = false; h.Fetching = []bool{false, true} }},
		{name: "long fetching bitmap", edit: func(h *chunk.Have) { h.ChunkList = nil; h.Fetching = make([]bool, 4) }},
		{name: "held and fetching", edit: func(h *chunk.Have) { h.ChunkList = nil; h.Chunks[1] = false; h.Fetching = []bool{true, true, false} }},
		{name: "list and fetching", edit: func(h *chunk.Have) { h.Fetching = []bool{false, false, true} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := good
			h.Chunks = slices.Clone(good.Chunks)
			h.ChunkList = slices.Clone(good.ChunkList)
			tt.edit(&h)
			if err := writeHave(bufio.NewWriter(io.Discard), h); err == nil {
				t.Errorf("writeHave(%s) = nil, want an error", tt.name)
			}
		})
	}
}

func TestReadHaveInvalid(t *testing.T) {
	t.Parallel()
	header := func(size, chunkSize uint64) []byte {
		b := binary.AppendUvarint([]byte{statusOK}, size)
		return binary.AppendUvarint(b, chunkSize)
	}
	three := header(3*chunk.MinSize, chunk.MinSize) // three chunks, one bitmap byte
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{name: "empty", in: nil, want: chunk.ErrProtocol},
		{name: "not held", in: []byte{statusNotHeld}, want: chunk.ErrNotHeld},
		{name: "busy", in: []byte{statusBusy}, want: chunk.ErrBusy},
		{name: "error", in: []byte{statusError}, want: ErrRemote},
		{name: "unknown status", in: []byte{42}, want: chunk.ErrProtocol},
		{name: "size overflows int64", in: header(1<<63, chunk.MinSize), want: chunk.ErrProtocol},
		{name: "small chunk size", in: append(header(10, chunk.MinSize-1), 0xff, 0), want: chunk.ErrProtocol},
		{name: "large chunk size", in: header(10, chunk.MaxSize+1), want: chunk.ErrProtocol},
		{name: "too many chunks", in: header(chunk.MinSize*chunk.MaxCount+1, chunk.MinSize), want: chunk.ErrProtocol},
		{name: "missing bitmap", in: three, want: chunk.ErrProtocol},
		{name: "bits past the end", in: append(slices.Clone(three), 0x0f, 0), want: chunk.ErrProtocol},
		{name: "missing flags", in: append(slices.Clone(three), 0x07), want: chunk.ErrProtocol},
		{name: "unknown flag", in: append(slices.Clone(three), 0x07, 8), want: chunk.ErrProtocol},
		{name: "high flag", in: append(slices.Clone(three), 0x03, 0x80), want: chunk.ErrProtocol},
		{name: "list and fetching", in: append(append(slices.Clone(three), 0x07, 3), make([]byte, 96)...), want: chunk.ErrProtocol},
		{name: "list and fetching bitmap", in: append(append(slices.Clone(three), 0x03, 3, 0x04), make([]byte, 96)...), want: chunk.ErrProtocol},
		{name: "list with missing chunk", in: append(append(slices.Clone(three), 0x05, 1), make([]byte, 96)...), want: chunk.ErrProtocol},
		{name: "short list", in: append(append(slices.Clone(three), 0x07, 1), make([]byte, 95)...), want: chunk.ErrProtocol},
		{name: "trailing data", in: append(slices.Clone(three), 0x07, 0, 0), want: chunk.ErrProtocol},
		{name: "missing fetching bitmap", in: append(slices.Clone(three), 0x03, 2), want: chunk.ErrProtocol},
		{name: "fetching a held chunk", in: append(slices.Clone(three), 0x03, 2, 0x06), want: chunk.ErrProtocol},
		{name: "fetching bits past the end", in: append(slices.Clone(three), 0x03, 2, 0x0c), want: chunk.ErrProtocol},
		{name: "fetching nothing", in: append(slices.Clone(three), 0x03, 2, 0x00), want: chunk.ErrProtocol},
		{name: "fetching in an empty blob", in: append(header(0, chunk.MinSize), 2), want: chunk.ErrProtocol},
		{name: "trailing data after fetching", in: append(slices.Clone(three), 0x03, 2, 0x04, 0), want: chunk.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readHave(reader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Errorf("readHave(%x) = %+v, %v, want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestHavePeers checks what a HAVE body names of its peers: the valid ones, at most
// maxReferrals, as the sender has them, and that a malformed list is an error.
func TestHavePeers(t *testing.T) {
	t.Parallel()
	h := newHave(make([]byte, 3*chunk.MinSize), chunk.MinSize, []int{1})
	var ids []peer.ID
	for range maxReferrals + 2 {
		ids = append(ids, testPeerID(t))
	}
	many := withPeers(h, ids...)
	many.Peers = append([]string{"not a peer ID"}, many.Peers...)
	got, err := readHave(reader(encodeHave(t, many)))
	if want := withPeers(h, ids[:maxReferrals]...); err != nil || !equalHave(got, want) {
		t.Errorf("readHave(encoded %d peers and junk) = %+v, %v, want %+v", len(ids), got, err, want)
	}
	if got := encodeHave(t, withPeers(h)); !bytes.Equal(got, encodeHave(t, h)) {
		t.Errorf("writeHave(no peers) = %x, want it without the peers flag", got)
	}

	body := encodeHave(t, h) // status, size, chunk size, bitmap, flags
	flagged := slices.Clone(body)
	flagged[len(flagged)-1] |= flagPeers
	id := []byte(ids[0])
	for name, peers := range map[string][]byte{
		"missing":          nil,
		"count 0":          {0},
		"too many":         {maxReferrals + 1},
		"empty ID":         {1, 0},
		"truncated ID":     append([]byte{1, byte(len(id) + 1)}, id...),
		"not a peer ID":    {1, 3, 'a', 'b', 'c'},
		"bytes after them": append(append([]byte{1, byte(len(id))}, id...), 0),
	} {
		in := append(slices.Clone(flagged), peers...)
		if got, err := readHave(reader(in)); !errors.Is(err, chunk.ErrProtocol) {
			t.Errorf("peers %s: readHave = %+v, %v, want %v", name, got, err, chunk.ErrProtocol)
		}
	}
}

func chunkResponse(announced uint64, data []byte) []byte {
	b := binary.AppendUvarint([]byte{statusOK}, announced)
	return append(b, data...)
}

func TestReadChunk(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("chunk"), 30000)
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{name: "ok", in: chunkResponse(uint64(len(data)), data), want: data},
		{name: "one byte", in: chunkResponse(1, []byte{7}), want: []byte{7}},
		{name: "not held", in: []byte{statusNotHeld}, err: chunk.ErrNotHeld},
		{name: "busy", in: []byte{statusBusy}, err: chunk.ErrBusy},
		{name: "short", in: chunkResponse(uint64(len(data))+1, data), err: chunk.ErrProtocol},
		{name: "long", in: chunkResponse(uint64(len(data))-1, data), err: chunk.ErrProtocol},
		{name: "empty chunk", in: chunkResponse(0, nil), err: chunk.ErrProtocol},
		{name: "oversized", in: chunkResponse(chunk.MaxSize+1, data), err: chunk.ErrProtocol},
		{name: "no length", in: []byte{statusOK}, err: chunk.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got bytes.Buffer
			n, err := readChunk(reader(tt.in), &got)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Errorf("readChunk(%s) = %d, %v, want %v", tt.name, n, err, tt.err)
				}
				return
			}
			if err != nil || n != int64(len(tt.want)) || !bytes.Equal(got.Bytes(), tt.want) {
				t.Errorf("readChunk(%s) = %d, %v, want %d bytes", tt.name, n, err, len(tt.want))
			}
		})
	}
}

// TestReadHaveClaimsCostNothing checks that a peer claiming the largest blob
// but sending a few bytes makes the decoder allocate little. It measures the
// process's allocations, so it does not run in parallel.
func TestReadHaveClaimsCostNothing(t *testing.T) {
	header := binary.AppendUvarint([]byte{statusOK}, chunk.MaxSize*chunk.MaxCount)
	header = binary.AppendUvarint(header, chunk.MaxSize)
	fullBitmap := append(bytes.Repeat([]byte{0xff}, chunk.MaxCount/8), flagChunkList)
	emptyBitmap := append(make([]byte, chunk.MaxCount/8), flagFetching)
	tests := []struct {
		name     string
		in       []byte
		maxAlloc uint64
	}{
		{name: "short bitmap", in: append(slices.Clone(header), 0xff, 0xff), maxAlloc: 256 << 10},
		// The bitmap itself costs a byte per chunk; the 32 MiB list it
		// announces must not be reserved up front.
		{name: "short chunk list", in: append(append(slices.Clone(header), fullBitmap...), make([]byte, 100)...), maxAlloc: 8 << 20},
		// As for the bitmap: the second bitmap costs only what arrives of it.
		{name: "short fetching bitmap", in: append(append(slices.Clone(header), emptyBitmap...), 0xff, 0xff), maxAlloc: 8 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			alloc := allocated(func() { _, err = readHave(reader(tt.in)) })
			if !errors.Is(err, chunk.ErrProtocol) {
				t.Errorf("readHave(%s) = %v, want %v", tt.name, err, chunk.ErrProtocol)
			}
			if alloc > tt.maxAlloc {
				t.Errorf("readHave(%s) allocated %d bytes, want at most %d", tt.name, alloc, tt.maxAlloc)
			}
		})
	}
}

func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// checkAllocs fails a fuzz input that makes f allocate out of proportion to
// its length. It measures only while fuzzing, when nothing else runs in the
// process; the seed corpus runs alongside parallel tests.
func checkAllocs(t *testing.T, in []byte, f func()) {
	t.Helper()
	if fl := flag.Lookup("test.fuzz"); fl == nil || fl.Value.String() == "" {
		f()
		return
	}
	limit := uint64(64*len(in) + 1<<20)
	if alloc := allocated(f); alloc > limit {
		t.Errorf("decoding %d bytes allocated %d, want at most %d", len(in), alloc, limit)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, req := range []request{
		{typ: msgHave, digest: testDigest},
		{typ: msgGet, digest: testDigest512, index: 77},
		{typ: msgGet, digest: "sha256:zz", index: chunk.MaxCount - 1},
		{typ: msgFetch, digest: testDigest, registry: "docker.io", repo: "library/app"},
	} {
		b, err := appendRequest(nil, req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{msgGet, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		var req request
		var err error
		checkAllocs(t, in, func() { req, err = decodeRequest(reader(in)) })
		if err != nil {
			if !errors.Is(err, chunk.ErrProtocol) {
				t.Fatalf("decodeRequest(%x) = %v, want only %v errors", in, err, chunk.ErrProtocol)
			}
			return
		}
		b, err := appendRequest(nil, req)
		if err != nil {
			t.Fatalf("appendRequest(decodeRequest(%x)) = %v", in, err)
		}
		again, err := decodeRequest(reader(b))
		if err != nil || again != req {
			t.Fatalf("request %+v does not round trip: %+v, %v", req, again, err)
		}
	})
}

func FuzzReadHave(f *testing.F) {
	data := make([]byte, 5*chunk.MinSize/2)
	f.Add(encodeHave(f, newHave(data, chunk.MinSize, nil)))
	f.Add(encodeHave(f, newHave(data, chunk.MinSize, []int{1})))
	f.Add(encodeHave(f, newHave(nil, chunk.MaxSize, nil)))
	f.Add(encodeHave(f, withFetching(newHave(data, chunk.MinSize, []int{0}), 2)))
	f.Add(encodeHave(f, withFetching(newHave(make([]byte, 17*chunk.MinSize), chunk.MinSize, []int{}), 3, 8, 16)))
	// Three chunks, chunk 0 held, with invalid flags and fetching bitmaps.
	three := binary.AppendUvarint(binary.AppendUvarint([]byte{statusOK}, 3*chunk.MinSize), chunk.MinSize)
	f.Add(append(slices.Clone(three), 0x01, flagChunkList|flagFetching, 0x06))
	f.Add(append(slices.Clone(three), 0x01, flagFetching, 0x03))
	f.Add([]byte{statusBusy})
	big := binary.AppendUvarint([]byte{statusOK}, chunk.MaxSize*chunk.MaxCount)
	f.Add(binary.AppendUvarint(big, chunk.MaxSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		var h chunk.Have
		var err error
		checkAllocs(t, in, func() { h, err = readHave(reader(in)) })
		if err != nil {
			return
		}
		if err := checkHave(h); err != nil {
			t.Fatalf("readHave(%x) accepted an invalid Have: %v", in, err)
		}
		if got := encodeHave(t, h); !bytes.Equal(got, in) {
			t.Fatalf("readHave(%x) re-encodes to %x", in, got)
		}
	})
}

func FuzzReadChunk(f *testing.F) {
	f.Add(chunkResponse(5, []byte("hello")))
	f.Add(chunkResponse(6, []byte("hello")))
	f.Add(chunkResponse(chunk.MaxSize, []byte("hello")))
	f.Add([]byte{statusNotHeld})
	f.Fuzz(func(t *testing.T, in []byte) {
		h := sha256.New()
		var n int64
		var err error
		checkAllocs(t, in, func() { n, err = readChunk(reader(in), h) })
		if err != nil {
			return
		}
		if n <= 0 || n > int64(len(in)) {
			t.Fatalf("readChunk(%x) = %d bytes, want 1..%d", in, n, len(in))
		}
	})
}

// TestBusyReferrals: the peers a busy answer names come back as peer IDs; a busy answer with
// none is plain ErrBusy (as an older node sends it); malformed ones break the protocol.
func TestBusyReferrals(t *testing.T) {
	t.Parallel()
	a, b := testPeerID(t), testPeerID(t)
	msg, err := appendReferrals([]byte{statusBusy}, []string{string(a), string(b)})
	if err != nil {
		t.Fatalf("appendReferrals = %v", err)
	}
	_, err = readChunk(reader(msg), io.Discard)
	var busy *chunk.BusyError
	if !errors.As(err, &busy) || !slices.Equal(busy.Others, []string{a.String(), b.String()}) {
		t.Fatalf("readChunk = %v, want busy naming %s and %s", err, a, b)
	}
	if _, err := readChunk(reader([]byte{statusBusy}), io.Discard); err != chunk.ErrBusy {
		t.Errorf("busy alone: readChunk = %v, want %v", err, chunk.ErrBusy)
	}
	id := []byte(a)
	for name, in := range map[string][]byte{
		"count 0":          {statusBusy, 0},
		"too many":         {statusBusy, maxReferrals + 1},
		"empty ID":         append([]byte{statusBusy, 1, 0}, id...),
		"truncated ID":     append([]byte{statusBusy, 1, byte(len(id) + 1)}, id...),
		"not a peer ID":    {statusBusy, 1, 3, 'a', 'b', 'c'},
		"bytes after them": append(append([]byte{statusBusy, 1, byte(len(id))}, id...), 0),
	} {
		if _, err := readChunk(reader(in), io.Discard); !errors.Is(err, chunk.ErrProtocol) {
			t.Errorf("%s: readChunk = %v, want %v", name, err, chunk.ErrProtocol)
		}
	}
}

// testPeerID is a fresh Ed25519 peer ID.
func testPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
