package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/chunk"
)

// ChunkProtocol is the libp2p protocol through which nodes ask each other
// what they hold of a blob and fetch its chunks. message.go has the format.
// chunkProtocolV1 is its first version, without the peers of a HAVE answer:
// a node serves both and asks in the newer one its peer takes, so nodes of
// both versions work together while a fleet is upgraded.
const (
	ChunkProtocol   protocol.ID = "/shoal/chunk/1.1.0"
	chunkProtocolV1 protocol.ID = "/shoal/chunk/1.0.0"
)

// Defaults of ExchangeOptions.
const (
	// DefaultMaxStreams lets a peer fetch several blobs (an image's layers) at once with a
	// few chunks in flight each.
	DefaultMaxStreams = 16
	// DefaultMaxUploads is the upload slots of a node: as many chunks as one peer may ask
	// at once.
	DefaultMaxUploads      = 16
	DefaultExchangeTimeout = 30 * time.Second
)

// uploadBurst is the most bytes written between two waits on the upload
// limiter, and the limiter's burst, so a limit holds over short spans too.
const uploadBurst = 64 << 10

var (
	// ErrRemote reports that a peer failed a request it understood, or
	// rejected it as invalid.
	ErrRemote = errors.New("peer failed the request")
)

// ChunkStore is what an Exchange serves from.
type ChunkStore interface {
	// Have reports what the node has of d; false when it has nothing. The
	// chunk list is wanted only for HAVE answers: a GET needs the bitmap
	// alone, and a list costs a read per request.
	Have(d digest.Digest, withList bool) (chunk.Have, bool)
	// ReadChunk writes exactly the bytes of chunk index of d to w. It
	// returns an error wrapping chunk.ErrNotHeld if the chunk is gone.
	ReadChunk(ctx context.Context, d digest.Digest, index int, w io.Writer) (int64, error)
}

// ExchangeOptions configure NewExchange. Zero fields take the defaults.
type ExchangeOptions struct {
	// Store serves inbound requests. Without one the exchange only fetches until Serve is
	// called: a node builds its network before the parts that hold its chunks.
	Store ChunkStore
	// MaxStreams is how many inbound requests one peer may have in flight;
	// more are answered busy at once rather than queued.
	MaxStreams int
	// MaxUploads is how many chunks the node sends at once, to all peers together; more
	// requests are answered busy at once, so the askers take the chunk from another
	// holder (as BitTorrent's upload slots make a swarm a tree, not a star around the
	// first holders). 0 means DefaultMaxUploads.
	MaxUploads int
	// MaxRepeats is how many times the node sends one chunk within RepeatWindow; more
	// requests for it are answered busy (see RepeatLimit). 0 means DefaultMaxRepeats, -1
	// no limit.
	MaxRepeats int
	// MaxWatches is how many WATCH streams the node serves at once, to all peers together
	// (each peer up to MaxStreams besides its requests); 0 means DefaultMaxWatches.
	MaxWatches int
	// UploadLimit caps the chunk bytes per second sent to all peers
	// together; 0 means unlimited.
	UploadLimit float64
	// Timeout bounds every request, inbound and outbound.
	Timeout time.Duration
	// Logger receives per-request messages; nil discards them.
	Logger *slog.Logger
	// OnHave, if set (here or by Serve), is called with the remote peer's ID for every
	// well-formed inbound HAVE request (valid frame and digest, whether or
	// not the blob is held) before it is answered, so the node learns which
	// peers are after a blob it is downloading too. It runs on the
	// request's goroutine and must not block: the answer waits for it.
	OnHave func(peerID string, d digest.Digest)
}

// Exchange serves a node's chunks to peers over ChunkProtocol and fetches
// chunks from them. It moves bytes only: callers verify what they receive.
type Exchange struct {
	h          host.Host
	maxStreams int
	maxUploads int
	maxWatches int
	repeats    *RepeatLimit  // nil when unlimited
	limiter    *rate.Limiter // nil when unlimited
	timeout    time.Duration
	log        *slog.Logger

	mu      sync.Mutex
	store   ChunkStore                           // nil until Serve
	onHave  func(peerID string, d digest.Digest) // nil when unset
	fetch   FetchFunc                            // nil: FETCH requests are refused
	closed  bool
	perPeer map[peer.ID]int
	uploads int // GET requests being answered
	watches int // WATCH streams open
	// peerWatches is each peer's open WATCH streams, which perPeer does not count.
	peerWatches map[peer.ID]int
	inflight    map[network.Stream]context.CancelFunc
	wg          sync.WaitGroup
}

// NewExchange returns an exchange on h that serves o.Store, when given, at once. The
// caller keeps ownership of h and closes it after Exchange.Close.
func NewExchange(h host.Host, o ExchangeOptions) (*Exchange, error) {
	if o.UploadLimit < 0 {
		return nil, fmt.Errorf("new exchange: upload limit %v", o.UploadLimit)
	}
	e := &Exchange{
		h:          h,
		maxStreams: o.MaxStreams,
		timeout:    o.Timeout,
		log:        o.Logger,
		perPeer:    make(map[peer.ID]int),
		inflight:   make(map[network.Stream]context.CancelFunc),

		peerWatches: make(map[peer.ID]int),
	}
	if e.maxStreams <= 0 {
		e.maxStreams = DefaultMaxStreams
	}
	if e.maxUploads = o.MaxUploads; e.maxUploads <= 0 {
		e.maxUploads = DefaultMaxUploads
	}
	if e.maxWatches = o.MaxWatches; e.maxWatches <= 0 {
		e.maxWatches = DefaultMaxWatches
	}
	if e.timeout <= 0 {
		e.timeout = DefaultExchangeTimeout
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.MaxRepeats == 0:
		e.repeats = NewRepeatLimit(DefaultMaxRepeats, RepeatWindow)
	case o.MaxRepeats > 0:
		e.repeats = NewRepeatLimit(o.MaxRepeats, RepeatWindow)
	}
	if o.UploadLimit > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(o.UploadLimit), uploadBurst)
	}
	if o.Store != nil {
		if err := e.Serve(o.Store, o.OnHave); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Serve starts answering peers from store, telling onHave (nil: no one) of every HAVE
// request as ExchangeOptions.OnHave describes. Until then the node asks peers but answers
// none: it has no chunk protocol handler. It may be called once.
func (e *Exchange) Serve(store ChunkStore, onHave func(peerID string, d digest.Digest)) error {
	if store == nil {
		return errors.New("serve chunks: no chunk store")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return errors.New("serve chunks: exchange closed")
	case e.store != nil:
		return errors.New("serve chunks: already serving")
	}
	e.store, e.onHave = store, onHave
	e.h.SetStreamHandler(ChunkProtocol, e.handle)
	e.h.SetStreamHandler(chunkProtocolV1, e.handle)
	return nil
}

// FetchFunc starts fetching blob d from repo at registry because peer asked, a seed's answer
// to a FETCH. It returns an error wrapping chunk.ErrNotHeld to refuse (the node is not a
// seed of d, or does not serve that registry) and chunk.ErrBusy to have the peer ask again
// later.
type FetchFunc func(peerID string, d digest.Digest, registry, repo string) error

// ServeFetch answers FETCH requests with fn; until it is called they are refused.
func (e *Exchange) ServeFetch(fn FetchFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fetch = fn
}

// Fetch asks peerID, a seed of d, to fetch d from repo at registry. It returns an error
// wrapping chunk.ErrNotHeld when the peer refuses, chunk.ErrBusy when it asks for later.
func (e *Exchange) Fetch(ctx context.Context, peerID string, d digest.Digest, registry, repo string) error {
	err := e.request(ctx, peerID, request{typ: msgFetch, digest: d, registry: registry, repo: repo}, readStatus)
	if err != nil {
		return fmt.Errorf("ask %s to fetch %s: %w", peerID, d, err)
	}
	return nil
}

// Close removes the handler, aborts the requests being served and waits for
// their handlers to return. Outbound requests are not affected.
func (e *Exchange) Close() error {
	e.h.RemoveStreamHandler(ChunkProtocol)
	e.h.RemoveStreamHandler(chunkProtocolV1)
	e.mu.Lock()
	e.closed = true
	for s, cancel := range e.inflight {
		cancel()
		s.Reset()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

// Have asks peerID what it has of d. It returns chunk.ErrNotHeld when the peer has
// nothing of it.
func (e *Exchange) Have(ctx context.Context, peerID string, d digest.Digest) (chunk.Have, error) {
	var h chunk.Have
	err := e.request(ctx, peerID, request{typ: msgHave, digest: d}, func(r byteReader) error {
		var err error
		h, err = readHave(r)
		return err
	})
	if err != nil {
		return chunk.Have{}, fmt.Errorf("have %s from %s: %w", d, peerID, err)
	}
	return h, nil
}

// GetChunk fetches chunk index of d from peerID and writes it to w as it
// arrives. It returns the bytes written. On error w may have received part
// of the chunk, which the caller must discard.
func (e *Exchange) GetChunk(ctx context.Context, peerID string, d digest.Digest, index int, w io.Writer) (int64, error) {
	var n int64
	err := e.request(ctx, peerID, request{typ: msgGet, digest: d, index: index}, func(r byteReader) error {
		var err error
		n, err = readChunk(r, w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("fetch chunk %d of %s from %s: %w", index, d, peerID, err)
	}
	return n, nil
}

// request sends req to peerID on a fresh stream and hands the response to
// read. The stream is reset when ctx ends, so read never outlives it.
func (e *Exchange) request(ctx context.Context, peerID string, req request, read func(byteReader) error) error {
	return e.requestStream(ctx, peerID, req, func(_ network.Stream, r byteReader) error { return read(r) })
}

// requestStream is request with read given the stream too.
func (e *Exchange) requestStream(ctx context.Context, peerID string, req request, read func(network.Stream, byteReader) error) (err error) {
	if err := checkDigest(req.digest); err != nil {
		return err
	}
	if req.index < 0 || req.index >= chunk.MaxCount {
		return fmt.Errorf("chunk index %d out of range", req.index)
	}
	pid, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("peer id: %w", err)
	}
	msg, err := appendRequest(nil, req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		// Failures are the caller's to log.
		if err == nil {
			e.log.Debug("chunk request", "digest", req.digest, "peer", peerID, "index", req.index,
				"duration", time.Since(start))
		}
	}()

	s, err := e.h.NewStream(ctx, pid, ChunkProtocol, chunkProtocolV1)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("open stream: %w", cerr)
		}
		return fmt.Errorf("open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		if err := s.SetDeadline(dl); err != nil {
			s.Reset()
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	if err := e.exchange(s, msg, read); err != nil {
		s.Reset()
		// A reset caused by ctx surfaces as a stream error; report the cause.
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		// The stream deadline is ctx's and may fire first.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		return err
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("close stream: %w", err)
	}
	return nil
}

func (e *Exchange) exchange(s network.Stream, msg []byte, read func(network.Stream, byteReader) error) error {
	if _, err := s.Write(msg); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	return read(s, bufio.NewReader(s))
}

// handle serves one inbound request. Every path ends by closing or
// resetting s.
func (e *Exchange) handle(s network.Stream) {
	remote := s.Conn().RemotePeer()
	ctx, ok := e.begin(s, remote)
	if !ok {
		return
	}
	defer e.end(s, remote)
	start := time.Now()
	req, n, err := e.serve(ctx, s, remote)
	var rf *refusal
	switch {
	case errors.As(err, &rf):
		// The peer has its answer; the stream ends cleanly.
		if cerr := s.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	case err != nil:
		s.Reset()
	default:
		err = s.Close()
	}
	e.log.Debug("chunk served", "digest", req.digest, "peer", remote.String(), "index", req.index,
		"bytes", n, "duration", time.Since(start), "err", err)
}

// begin admits s: it returns false, having answered or reset s, when the
// exchange is closed or remote has too many requests in flight.
func (e *Exchange) begin(s network.Stream, remote peer.ID) (context.Context, bool) {
	e.mu.Lock()
	closed, busy := e.closed, e.perPeer[remote] >= e.maxStreams
	var ctx context.Context
	if !closed && !busy {
		e.perPeer[remote]++
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), e.timeout)
		e.inflight[s] = cancel
		e.wg.Add(1)
	}
	e.mu.Unlock()

	switch {
	case closed:
		s.Reset()
		return nil, false
	case busy:
		e.log.Debug("chunk request refused", "peer", remote.String())
		// Refused at once: the stream is not tied up waiting for a slot.
		if err := s.SetDeadline(time.Now().Add(e.timeout)); err != nil {
			s.Reset()
			return nil, false
		}
		if _, err := s.Write([]byte{statusBusy}); err != nil {
			s.Reset()
			return nil, false
		}
		s.Close()
		return nil, false
	}
	if err := s.SetDeadline(time.Now().Add(e.timeout)); err != nil {
		s.Reset()
		e.end(s, remote)
		return nil, false
	}
	return ctx, true
}

func (e *Exchange) end(s network.Stream, remote peer.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight[s]()
	delete(e.inflight, s)
	if e.perPeer[remote]--; e.perPeer[remote] <= 0 {
		delete(e.perPeer, remote)
	}
	e.wg.Done()
}

// serve reads the request and writes the response. An error other than a
// *refusal means s must be reset: the response is incomplete.
func (e *Exchange) serve(ctx context.Context, s network.Stream, remote peer.ID) (request, int64, error) {
	req, err := decodeRequest(bufio.NewReaderSize(io.LimitReader(s, maxRequestLen), maxRequestLen))
	if err != nil {
		return req, 0, err
	}
	if err := checkDigest(req.digest); err != nil {
		return req, 0, refuse(s, statusError, err)
	}
	e.mu.Lock()
	store, onHave, fetch := e.store, e.onHave, e.fetch
	e.mu.Unlock()
	if req.typ == msgFetch {
		return req, 0, e.serveFetch(s, remote, req, fetch)
	}
	if (req.typ == msgHave || req.typ == msgWatch) && onHave != nil {
		onHave(remote.String(), req.digest)
	}
	if req.typ == msgWatch {
		return req, 0, e.serveWatch(ctx, s, remote, req, store)
	}
	have, ok := store.Have(req.digest, req.typ == msgHave)
	if !ok {
		return req, 0, refuse(s, statusNotHeld, nil)
	}
	if err := checkHave(have); err != nil {
		return req, 0, refuse(s, statusError, fmt.Errorf("store: %w", err))
	}
	w := bufio.NewWriter(s)
	if req.typ == msgHave {
		if err := w.WriteByte(statusOK); err != nil {
			return req, 0, err
		}
		if err := writeHave(w, peersFor(s, remote, have)); err != nil {
			return req, 0, err
		}
		return req, 0, w.Flush()
	}
	if req.index >= len(have.Chunks) || !have.Chunks[req.index] {
		return req, 0, refuse(s, statusNotHeld, nil)
	}
	if !e.takeUpload() {
		return req, 0, refuse(s, statusBusy, nil)
	}
	defer e.endUpload()
	if e.repeats != nil {
		if ok, others := e.repeats.Take(req.digest, req.index, string(remote)); !ok {
			return req, 0, refuseReferring(s, others)
		}
	}
	cw := &chunkWriter{
		ctx:     ctx,
		w:       w,
		limiter: e.limiter,
		left:    chunk.Len(have.Size, have.ChunkSize, req.index),
	}
	n, err := store.ReadChunk(ctx, req.digest, req.index, cw)
	if err == nil && cw.left != 0 {
		err = fmt.Errorf("store wrote %d bytes of chunk %d, %d short", n, req.index, cw.left)
	}
	if err != nil {
		if cw.started {
			return req, cw.sent, fmt.Errorf("read chunk %d: %w", req.index, err)
		}
		if errors.Is(err, chunk.ErrNotHeld) {
			return req, 0, refuse(s, statusNotHeld, nil)
		}
		return req, 0, refuse(s, statusError, fmt.Errorf("read chunk %d: %w", req.index, err))
	}
	return req, cw.sent, w.Flush()
}

// serveFetch answers a FETCH with fn's word.
func (e *Exchange) serveFetch(s network.Stream, remote peer.ID, req request, fn FetchFunc) error {
	if fn == nil {
		return refuse(s, statusNotHeld, errors.New("not serving FETCH"))
	}
	switch err := fn(remote.String(), req.digest, req.registry, req.repo); {
	case errors.Is(err, chunk.ErrNotHeld):
		return refuse(s, statusNotHeld, err)
	case errors.Is(err, chunk.ErrBusy):
		return refuse(s, statusBusy, err)
	case err != nil:
		return refuse(s, statusError, err)
	}
	_, err := s.Write([]byte{statusOK})
	return err
}

// errRepeated is why a request for a chunk sent often lately is answered busy.
var errRepeated = errors.New("chunk sent to others just now")

// takeUpload takes one of the upload slots, if one is free.
func (e *Exchange) takeUpload() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.uploads >= e.maxUploads {
		return false
	}
	e.uploads++
	return true
}

func (e *Exchange) endUpload() {
	e.mu.Lock()
	e.uploads--
	e.mu.Unlock()
}

// refusal is a request answered with a status other than statusOK.
type refusal struct {
	status byte
	cause  error // why, when it is more than the status says
}

func (r *refusal) Error() string {
	msg := fmt.Sprintf("refused with status %d", r.status)
	if r.cause != nil {
		msg += ": " + r.cause.Error()
	}
	return msg
}

func (r *refusal) Unwrap() error { return r.cause }

// refuse answers s with status. It returns a *refusal carrying cause, or
// the write error when the answer could not be sent.
func refuse(s network.Stream, status byte, cause error) error {
	return refuseWith(s, []byte{status}, cause)
}

// refuseWith is refuse with msg, a status and what may follow it.
func refuseWith(s network.Stream, msg []byte, cause error) error {
	if _, err := s.Write(msg); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return &refusal{status: msg[0], cause: cause}
}

// peersFor is h as sent to remote on s: without remote among its peers, and without any
// peers over chunkProtocolV1, which does not carry them.
func peersFor(s network.Stream, remote peer.ID, h chunk.Have) chunk.Have {
	if s.Protocol() != ChunkProtocol {
		h.Peers = nil
		return h
	}
	self := remote.String()
	if slices.Contains(h.Peers, self) {
		h.Peers = slices.DeleteFunc(slices.Clone(h.Peers), func(id string) bool { return id == self })
	}
	return h
}

// refuseReferring answers busy to a GET of a chunk sent to others just now, naming them.
func refuseReferring(s network.Stream, others []string) error {
	msg, err := appendReferrals([]byte{statusBusy}, others)
	if err != nil {
		msg = []byte{statusBusy} // busy alone is still a valid answer
	}
	return refuseWith(s, msg, errRepeated)
}

// chunkWriter frames a chunk for the wire. The header goes out with the
// first byte, so a store that fails before writing anything can still be
// answered with a status. It refuses bytes past the chunk's end and paces
// writes by the upload limiter.
type chunkWriter struct {
	ctx     context.Context
	w       *bufio.Writer
	limiter *rate.Limiter
	left    int64 // bytes still expected from the store
	sent    int64
	started bool
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("chunk longer than its %d bytes", c.sent+c.left)
	}
	if !c.started && len(p) > 0 {
		c.started = true
		if err := c.w.WriteByte(statusOK); err != nil {
			return 0, err
		}
		var b [10]byte
		if _, err := c.w.Write(binary.AppendUvarint(b[:0], uint64(c.left))); err != nil {
			return 0, err
		}
	}
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), uploadBurst)]
		if c.limiter != nil {
			if err := c.limiter.WaitN(c.ctx, len(piece)); err != nil {
				return written, err
			}
		}
		n, err := c.w.Write(piece)
		written += n
		c.sent += int64(n)
		c.left -= int64(n)
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
