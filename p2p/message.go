package p2p

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

// The chunk protocol carries one request per stream. The client writes the
// request and closes its write side; the server answers and closes the stream.
// Integers are unsigned varints (encoding/binary) in their shortest form,
// each read with a cap. Statuses: statusOK 0, statusNotHeld 1, statusBusy 2,
// statusError 3 (the request was invalid or the store failed). A server
// resets the stream on a malformed request, and when it fails after the first
// byte of a chunk, so a truncated chunk is never mistaken for a whole one.
//
// Request:
//
//	type    byte     msgHave (1), msgGet (2), msgFetch (3) or msgWatch (4)
//	dlen    uvarint  length of the digest string, 1..maxDigestLen
//	digest  dlen bytes, e.g. "sha256:0123..."; only sha256 and sha512
//	index   uvarint  chunk index, < chunk.MaxCount; always 0 but for msgGet
//	rlen    uvarint  msgFetch only: length of the registry, 1..maxNameLen
//	reg     rlen bytes, the registry the blob comes from, as in the ns parameter
//	plen    uvarint  msgFetch only: length of the repository, 1..maxNameLen
//	repo    plen bytes, the repository in that registry
//
// A FETCH asks a seed of the blob to fetch it; statusOK (it is fetching it, or holds it)
// has no body, statusNotHeld refuses (the node is not a seed of it, or does not serve that
// registry), statusBusy asks again later.
//
// A WATCH is a HAVE answered again and again on the same stream: a HAVE response at once,
// then another each time what the node holds of the blob changes, and the last one
// repeated when nothing changed for WatchKeepalive, so a silent stream is a frozen peer.
// Every response carries the first one's size and chunk size. The stream ends, closed by
// the server, after a response that is not statusOK, after one with every chunk held
// (with its chunk list), and after WatchLifetime, when a watcher that still wants news
// asks again. A node that does not know WATCH resets the stream unanswered; its peers poll
// it with HAVE instead.
//
// Response: a status byte. Only statusOK has a body, and nothing may follow
// the body; except that statusBusy to a GET may be followed by referrals, the
// peers the server sent that chunk to just now (a node that does not send them
// closes the stream after the status, and one that does not read them ignores
// them):
//
//	count   uvarint  1..maxReferrals
//	idlen   uvarint  count times, 1..maxPeerIDLen, each followed by
//	id      idlen bytes, a libp2p peer ID in its binary form
//
// HAVE body:
//
//	size       uvarint  blob size in bytes, <= math.MaxInt64
//	chunkSize  uvarint  chunk.MinSize..chunk.MaxSize
//	bitmap     ceil(count/8) bytes, count = ceil(size/chunkSize) <= chunk.MaxCount;
//	           bit i (byte i/8, bit i%8 from the least significant) set when
//	           chunk i can be served; unused high bits of the last byte are 0
//	flags      byte     bit 0 (flagChunkList) when chunkList follows, bit 1
//	           (flagFetching) when fetching follows, bit 2 (flagPeers) when
//	           peers follows; any other bit, or the first two together (a
//	           complete holder fetches nothing), is an error
//	fetching   ceil(count/8) bytes, only with flagFetching, laid out like
//	           bitmap: bit i set when the node is fetching chunk i from the
//	           origin registry now; never set for a chunk set in bitmap, and
//	           at least one bit set, since no bit set is said by leaving
//	           flagFetching clear
//	chunkList  count*32 bytes, only with flagChunkList (every bit of bitmap
//	           set): the raw SHA-256 of every chunk in order
//	peers      only with flagPeers, and only over ChunkProtocol (1.1.0, not
//	           1.0.0): the peers that asked the node about the blob lately,
//	           newest first, laid out as a busy answer's referrals
//
// GET body:
//
//	length  uvarint  chunk length, 1..chunk.MaxSize
//	data    exactly length bytes
const (
	msgHave  byte = 1
	msgGet   byte = 2
	msgFetch byte = 3
	msgWatch byte = 4
)

// Bits of the HAVE body's flags byte.
const (
	flagChunkList byte = 1 << 0
	flagFetching  byte = 1 << 1
	flagPeers     byte = 1 << 2
)

const (
	statusOK      byte = 0
	statusNotHeld byte = 1
	statusBusy    byte = 2
	statusError   byte = 3
)

// Limits of the wire format. Every length read from a peer is checked
// against them before it is used.
const (
	// maxDigestLen is the length of the longest digest accepted:
	// "sha512:" and 128 hex digits.
	maxDigestLen = 7 + 128
	// maxNameLen bounds a FETCH's registry and repository: the distribution
	// spec's 255 characters for a repository name.
	maxNameLen = 255
	// maxRequestLen is the longest valid request: type, digest length,
	// digest and index, and a FETCH's two names.
	maxRequestLen = 1 + binary.MaxVarintLen64 + maxDigestLen + binary.MaxVarintLen64 + 2*(binary.MaxVarintLen64+maxNameLen)
	// readBatch is how much of a bitmap or chunk list is read at a time, so
	// memory grows with the bytes a peer actually sends, not with the counts
	// it claims.
	readBatch = 4 << 10
	// maxReferrals bounds the peers a busy answer names; maxPeerIDLen a binary peer ID
	// (a multihash of at most a SHA-512 digest, or an identity hash of a small key).
	maxReferrals = 8
	maxPeerIDLen = 128
)

// byteReader is what the decoders read from: a bufio.Reader in practice.
type byteReader interface {
	io.Reader
	io.ByteScanner
}

// request is one chunk protocol request.
type request struct {
	typ    byte
	digest digest.Digest
	index  int
	// registry and repo are a FETCH's source.
	registry, repo string
}

// checkDigest accepts only digests that have a DHT key: valid sha256 or sha512.
func checkDigest(d digest.Digest) error {
	if len(d) > maxDigestLen {
		return fmt.Errorf("%w: digest of %d bytes", ErrInvalidDigest, len(d))
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidDigest, err)
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return fmt.Errorf("%w: algorithm %s", ErrInvalidDigest, a)
	}
	return nil
}

// appendRequest encodes req. It checks only what the wire format needs;
// the digest's validity is the caller's concern, so that tests can send
// invalid ones.
func appendRequest(b []byte, req request) ([]byte, error) {
	if req.typ < msgHave || req.typ > msgWatch {
		return nil, fmt.Errorf("encode request: unknown type %d", req.typ)
	}
	if len(req.digest) == 0 || len(req.digest) > maxDigestLen {
		return nil, fmt.Errorf("encode request: digest of %d bytes", len(req.digest))
	}
	if req.index < 0 || req.index >= chunk.MaxCount || (req.typ != msgGet && req.index != 0) {
		return nil, fmt.Errorf("encode request: chunk index %d", req.index)
	}
	b = append(b, req.typ)
	b = binary.AppendUvarint(b, uint64(len(req.digest)))
	b = append(b, req.digest...)
	b = binary.AppendUvarint(b, uint64(req.index))
	if req.typ == msgFetch {
		for _, name := range []string{req.registry, req.repo} {
			if len(name) == 0 || len(name) > maxNameLen {
				return nil, fmt.Errorf("encode request: name of %d bytes", len(name))
			}
			b = binary.AppendUvarint(b, uint64(len(name)))
			b = append(b, name...)
		}
	}
	return b, nil
}

// decodeRequest reads a request. It checks the frame only; the server
// validates the digest itself so that it can answer statusError.
func decodeRequest(r byteReader) (request, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return request{}, truncated("request type", err)
	}
	if typ < msgHave || typ > msgWatch {
		return request{}, fmt.Errorf("%w: request type %d", chunk.ErrProtocol, typ)
	}
	n, err := readUvarint(r, "digest length", maxDigestLen)
	if err != nil {
		return request{}, err
	}
	if n == 0 {
		return request{}, fmt.Errorf("%w: empty digest", chunk.ErrProtocol)
	}
	var buf [maxDigestLen]byte
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return request{}, truncated("digest", err)
	}
	index, err := readUvarint(r, "chunk index", chunk.MaxCount-1)
	if err != nil {
		return request{}, err
	}
	if typ != msgGet && index != 0 {
		return request{}, fmt.Errorf("%w: request type %d with chunk index %d", chunk.ErrProtocol, typ, index)
	}
	req := request{typ: typ, digest: digest.Digest(buf[:n]), index: int(index)}
	if typ == msgFetch {
		var names [2]string
		for i, what := range []string{"registry", "repository"} {
			l, err := readUvarint(r, what+" length", maxNameLen)
			if err != nil {
				return request{}, err
			}
			if l == 0 {
				return request{}, fmt.Errorf("%w: empty %s", chunk.ErrProtocol, what)
			}
			name := make([]byte, l)
			if _, err := io.ReadFull(r, name); err != nil {
				return request{}, truncated(what, err)
			}
			names[i] = string(name)
		}
		req.registry, req.repo = names[0], names[1]
	}
	return req, nil
}

// readStatus reads a response that is a status alone.
func readStatus(r byteReader) error {
	if err := decodeStatus(r); err != nil {
		return err
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bytes after a status-only response", chunk.ErrProtocol)
	}
	return nil
}

// chunkCount is the number of chunks of a blob, or an error when the
// size and chunk size are out of the wire format's bounds.
func chunkCount(size, chunkSize int64) (int, error) {
	if size < 0 {
		return 0, fmt.Errorf("size %d", size)
	}
	if chunkSize < chunk.MinSize || chunkSize > chunk.MaxSize {
		return 0, fmt.Errorf("chunk size %d, want %d..%d", chunkSize, chunk.MinSize, chunk.MaxSize)
	}
	count := size / chunkSize
	if size%chunkSize != 0 {
		count++
	}
	if count > chunk.MaxCount {
		return 0, fmt.Errorf("%d chunks, want at most %d", count, chunk.MaxCount)
	}
	return int(count), nil
}

// checkHave reports whether h is something the wire format can carry.
func checkHave(h chunk.Have) error {
	count, err := chunkCount(h.Size, h.ChunkSize)
	if err != nil {
		return err
	}
	if len(h.Chunks) != count {
		return fmt.Errorf("bitmap of %d chunks, want %d", len(h.Chunks), count)
	}
	if h.Fetching != nil {
		if len(h.Fetching) != count {
			return fmt.Errorf("fetching bitmap of %d chunks, want %d", len(h.Fetching), count)
		}
		for i, fetching := range h.Fetching {
			if fetching && h.Chunks[i] {
				return fmt.Errorf("chunk %d both held and fetching", i)
			}
		}
	}
	if h.ChunkList == nil {
		return nil
	}
	if len(h.ChunkList) != count {
		return fmt.Errorf("chunk list of %d digests, want %d", len(h.ChunkList), count)
	}
	for i, held := range h.Chunks {
		if !held {
			return fmt.Errorf("chunk list without chunk %d", i)
		}
	}
	for i, d := range h.ChunkList {
		if d.Algorithm() != digest.SHA256 || d.Validate() != nil {
			return fmt.Errorf("chunk list entry %d: %q is not a sha256 digest", i, d)
		}
	}
	return nil
}

// writeHave writes a HAVE body. A chunk list can reach 32 MiB, so it is
// streamed through w rather than built in memory.
func writeHave(w *bufio.Writer, h chunk.Have) error {
	if err := checkHave(h); err != nil {
		return fmt.Errorf("encode have: %w", err)
	}
	var b []byte
	b = binary.AppendUvarint(b, uint64(h.Size))
	b = binary.AppendUvarint(b, uint64(h.ChunkSize))
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := writeBitmap(w, h.Chunks); err != nil {
		return err
	}
	// A chunk list means every chunk is held, and checkHave rejects a chunk
	// both held and fetching, so at most one flag is set.
	var flags byte
	if h.ChunkList != nil {
		flags |= flagChunkList
	}
	if slices.Contains(h.Fetching, true) {
		flags |= flagFetching
	}
	peers, err := appendReferrals(nil, binaryPeerIDs(h.Peers))
	if err != nil {
		return fmt.Errorf("encode have: %w", err)
	}
	if len(peers) > 0 {
		flags |= flagPeers
	}
	if err := w.WriteByte(flags); err != nil {
		return err
	}
	if flags&flagFetching != 0 {
		if err := writeBitmap(w, h.Fetching); err != nil {
			return err
		}
	}
	var raw [32]byte
	for _, d := range h.ChunkList {
		// checkHave validated the hex, so this cannot fail.
		if _, err := hex.Decode(raw[:], []byte(d.Encoded())); err != nil {
			return fmt.Errorf("encode have: %w", err)
		}
		if _, err := w.Write(raw[:]); err != nil {
			return err
		}
	}
	_, err = w.Write(peers)
	return err
}

// binaryPeerIDs returns the binary form of the peer IDs ids (as peer.ID.String gives
// them), at most maxReferrals, leaving out any that does not parse.
func binaryPeerIDs(ids []string) []string {
	var out []string
	for _, s := range ids {
		if len(out) == maxReferrals {
			break
		}
		if id, err := peer.Decode(s); err == nil && len(id) <= maxPeerIDLen {
			out = append(out, string(id))
		}
	}
	return out
}

// decodeHave reads a HAVE body up to the end of the stream.
func decodeHave(r byteReader) (chunk.Have, error) {
	h, err := decodeHaveBody(r)
	if err != nil {
		return chunk.Have{}, err
	}
	if err := expectEOF(r); err != nil {
		return chunk.Have{}, err
	}
	return h, nil
}

// decodeHaveBody is decodeHave up to the body's end, for a WATCH, whose answers follow
// each other.
func decodeHaveBody(r byteReader) (chunk.Have, error) {
	size, err := readUvarint(r, "size", math.MaxInt64)
	if err != nil {
		return chunk.Have{}, err
	}
	chunkSize, err := readUvarint(r, "chunk size", chunk.MaxSize)
	if err != nil {
		return chunk.Have{}, err
	}
	count, err := chunkCount(int64(size), int64(chunkSize))
	if err != nil {
		return chunk.Have{}, fmt.Errorf("%w: %w", chunk.ErrProtocol, err)
	}
	h := chunk.Have{Size: int64(size), ChunkSize: int64(chunkSize)}

	if h.Chunks, err = readBitmap(r, count, "bitmap"); err != nil {
		return chunk.Have{}, err
	}

	flags, err := r.ReadByte()
	if err != nil {
		return chunk.Have{}, truncated("flags", err)
	}
	switch {
	case flags&^(flagChunkList|flagFetching|flagPeers) != 0:
		return chunk.Have{}, fmt.Errorf("%w: flags %#02x", chunk.ErrProtocol, flags)
	case flags&(flagChunkList|flagFetching) == flagChunkList|flagFetching:
		return chunk.Have{}, fmt.Errorf("%w: chunk list and fetching bitmap together", chunk.ErrProtocol)
	}
	if flags&flagFetching != 0 {
		if h.Fetching, err = readBitmap(r, count, "fetching bitmap"); err != nil {
			return chunk.Have{}, err
		}
		for i, fetching := range h.Fetching {
			if fetching && h.Chunks[i] {
				return chunk.Have{}, fmt.Errorf("%w: chunk %d both held and fetching", chunk.ErrProtocol, i)
			}
		}
		// One encoding per value: nothing fetching has no bitmap.
		if !slices.Contains(h.Fetching, true) {
			return chunk.Have{}, fmt.Errorf("%w: fetching bitmap without a chunk", chunk.ErrProtocol)
		}
	}
	if flags&flagChunkList != 0 {
		for i, held := range h.Chunks {
			if !held {
				return chunk.Have{}, fmt.Errorf("%w: chunk list but chunk %d not held", chunk.ErrProtocol, i)
			}
		}
		h.ChunkList = make([]digest.Digest, 0, min(count, readBatch/32))
		var raw [32]byte
		for range count {
			if _, err := io.ReadFull(r, raw[:]); err != nil {
				return chunk.Have{}, truncated("chunk list", err)
			}
			h.ChunkList = append(h.ChunkList, digest.NewDigestFromBytes(digest.SHA256, raw[:]))
		}
	}
	if flags&flagPeers != 0 {
		if h.Peers, err = readPeers(r); err != nil {
			return chunk.Have{}, err
		}
	}
	return h, nil
}

// writeBitmap writes bit i of bits as bit i%8 of byte i/8, counting from the
// least significant bit.
func writeBitmap(w *bufio.Writer, bits []bool) error {
	for i := 0; i < len(bits); i += 8 {
		var c byte
		for j := 0; j < 8 && i+j < len(bits); j++ {
			if bits[i+j] {
				c |= 1 << j
			}
		}
		if err := w.WriteByte(c); err != nil {
			return err
		}
	}
	return nil
}

// readBitmap reads a bitmap of count bits written by writeBitmap, rejecting
// set bits past the last. It reads readBatch bytes at a time.
func readBitmap(r io.Reader, count int, what string) ([]bool, error) {
	bits := make([]bool, 0, min(count, 8*readBatch))
	buf := make([]byte, min((count+7)/8, readBatch))
	for len(bits) < count {
		n := min((count-len(bits)+7)/8, len(buf))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, truncated(what, err)
		}
		for _, c := range buf[:n] {
			for j := 0; j < 8; j++ {
				if len(bits) == count {
					if c>>j != 0 {
						return nil, fmt.Errorf("%w: %s has bits past chunk %d", chunk.ErrProtocol, what, count)
					}
					break
				}
				bits = append(bits, c&(1<<j) != 0)
			}
		}
	}
	return bits, nil
}

// decodeStatus reads the status byte and maps the refusals to errors.
func decodeStatus(r byteReader) error {
	s, err := r.ReadByte()
	if err != nil {
		return truncated("status", err)
	}
	switch s {
	case statusOK:
		return nil
	case statusNotHeld:
		return chunk.ErrNotHeld
	case statusBusy:
		return chunk.ErrBusy
	case statusError:
		return ErrRemote
	default:
		return fmt.Errorf("%w: status %d", chunk.ErrProtocol, s)
	}
}

// appendReferrals appends the referrals that follow a busy answer to a GET to b: up to
// maxReferrals of ids, binary peer IDs; nothing when there are none.
func appendReferrals(b []byte, ids []string) ([]byte, error) {
	ids = ids[:min(len(ids), maxReferrals)]
	if len(ids) == 0 {
		return b, nil
	}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		if len(id) == 0 || len(id) > maxPeerIDLen {
			return nil, fmt.Errorf("encode referral: peer ID of %d bytes", len(id))
		}
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
	}
	return b, nil
}

// readReferrals reads what follows a busy answer to a GET: the binary peer IDs it
// names, as peer IDs; none when the stream ends after the status.
func readReferrals(r byteReader) ([][]byte, error) {
	if _, err := r.ReadByte(); err == io.EOF {
		return nil, nil
	} else if err != nil {
		return nil, truncated("referrals", err)
	}
	if err := r.UnreadByte(); err != nil {
		return nil, fmt.Errorf("referrals: %w", err)
	}
	ids, err := readPeerIDs(r, "referral")
	if err != nil {
		return nil, err
	}
	return ids, expectEOF(r)
}

// readPeerIDs reads a count and that many binary peer IDs, as a busy answer's referrals
// and a HAVE body's peers carry them; what names them in errors.
func readPeerIDs(r byteReader, what string) ([][]byte, error) {
	count, err := readUvarint(r, what+" count", maxReferrals)
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: %s count 0", chunk.ErrProtocol, what)
	}
	ids := make([][]byte, 0, count)
	for range count {
		n, err := readUvarint(r, what+" length", maxPeerIDLen)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: empty %s", chunk.ErrProtocol, what)
		}
		id := make([]byte, n)
		if _, err := io.ReadFull(r, id); err != nil {
			return nil, truncated(what, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// readPeers reads a HAVE body's peers, as peer IDs in their string form.
func readPeers(r byteReader) ([]string, error) {
	raw, err := readPeerIDs(r, "peer")
	if err != nil {
		return nil, err
	}
	return peerIDStrings(raw, "peer")
}

// peerIDStrings parses binary peer IDs into their string form.
func peerIDStrings(raw [][]byte, what string) ([]string, error) {
	out := make([]string, 0, len(raw))
	for _, b := range raw {
		id, err := peer.IDFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", chunk.ErrProtocol, what, err)
		}
		out = append(out, id.String())
	}
	return out, nil
}

// busyWith is the error of a busy answer to a GET, with the peers it refers to.
func busyWith(r byteReader) error {
	raw, err := readReferrals(r)
	if err != nil {
		return err
	}
	if len(raw) == 0 {
		return chunk.ErrBusy
	}
	others, err := peerIDStrings(raw, "referral")
	if err != nil {
		return err
	}
	return &chunk.BusyError{Others: others}
}

// readHave reads a complete HAVE response.
func readHave(r byteReader) (chunk.Have, error) {
	if err := decodeStatus(r); err != nil {
		return chunk.Have{}, err
	}
	return decodeHave(r)
}

// readChunk reads a complete GET response, copying the chunk to w as it
// arrives. A chunk shorter or longer than announced is an chunk.ErrProtocol.
// On any error w may have received part of the chunk.
func readChunk(r byteReader, w io.Writer) (int64, error) {
	if err := decodeStatus(r); errors.Is(err, chunk.ErrBusy) {
		return 0, busyWith(r)
	} else if err != nil {
		return 0, err
	}
	n, err := readUvarint(r, "chunk length", chunk.MaxSize)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: empty chunk", chunk.ErrProtocol)
	}
	// io.CopyN would not tell the peer's errors from w's.
	buf := make([]byte, min(n, 32<<10))
	var done int64
	for done < int64(n) {
		m, rerr := r.Read(buf[:min(int64(len(buf)), int64(n)-done)])
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return done, fmt.Errorf("write chunk: %w", err)
			}
			done += int64(m)
		}
		if rerr != nil && done < int64(n) {
			return done, truncated(fmt.Sprintf("chunk at byte %d of %d", done, n), rerr)
		}
	}
	if err := expectEOF(r); err != nil {
		return done, err
	}
	return done, nil
}

// readUvarint reads an unsigned varint no larger than limit.
func readUvarint(r io.ByteReader, what string, limit uint64) (uint64, error) {
	rr := &recordingReader{r: r}
	v, err := binary.ReadUvarint(rr)
	switch {
	case rr.err != nil:
		return 0, truncated(what, rr.err)
	case err != nil:
		// Only the varint itself can be wrong here: too long or too large.
		return 0, fmt.Errorf("%w: %s: %w", chunk.ErrProtocol, what, err)
	case rr.n != len(binary.AppendUvarint(nil, v)):
		// One encoding per value keeps messages comparable byte for byte.
		return 0, fmt.Errorf("%w: %s: non-minimal varint", chunk.ErrProtocol, what)
	case v > limit:
		return 0, fmt.Errorf("%w: %s %d exceeds %d", chunk.ErrProtocol, what, v, limit)
	}
	return v, nil
}

// recordingReader keeps the error of the underlying reader, which
// binary.ReadUvarint would otherwise mix with its own overflow error.
type recordingReader struct {
	r   io.ByteReader
	n   int
	err error
}

func (r *recordingReader) ReadByte() (byte, error) {
	c, err := r.r.ReadByte()
	if err != nil {
		r.err = err
		return c, err
	}
	r.n++
	return c, nil
}

// truncated describes a failed read: a message cut short by the peer is a
// protocol violation, anything else (reset, deadline) a transport error.
func truncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s truncated", chunk.ErrProtocol, what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// expectEOF checks that the peer closed the stream after its message.
func expectEOF(r io.ByteReader) error {
	_, err := r.ReadByte()
	switch {
	case err == nil:
		return fmt.Errorf("%w: data after the message", chunk.ErrProtocol)
	case errors.Is(err, io.EOF):
		return nil
	default:
		return fmt.Errorf("read end of message: %w", err)
	}
}
