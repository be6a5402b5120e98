package swarm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/store"
)

// Fleet is how a download reaches other nodes; the node implements it over p2p.Network.
type Fleet interface {
	// Self is this node's peer ID.
	Self() string
	// Connected reports whether the node knows any fleet member at all; a lone node does not
	// look for holders.
	Connected() bool
	// Provide announces that this node holds, or is fetching, d.
	Provide(ctx context.Context, d digest.Digest) error
	// FindProviders returns the IDs of other peers that announced d; fresh bypasses any cache.
	FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error)
	// Have asks a peer what it holds of d.
	Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error)
	// GetChunk copies chunk index of d from peer to w as it arrives.
	GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error)
}

// OriginLeaser may be implemented by a Fleet that has a tracker: before a chunk is fetched
// from the origin, the fleet's tracker is asked for a lease on it, so that at most one node
// fetches a given chunk from the origin at a time across the whole fleet (without one, nodes
// split the origin's work among the members they see, which is exact only while every
// member sees every other).
type OriginLeaser interface {
	// LeaseOrigin asks for the lease on chunk index of d (size bytes in chunks of chunkSize).
	// ok false: another node holds the lease or the chunk; get it from peers. An error: no
	// tracker could answer, and the chunk is fetched without a lease. While held, the lease
	// is kept alive; release ends it, done saying the chunk arrived whole.
	LeaseOrigin(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (release func(done bool), ok bool, err error)
}

// Timing of a download's work with peers.
const (
	// settle is how long a download that found no holder waits, at most, before its first
	// origin request when it has fleet peers: nodes that start on the same blob at the same
	// moment find each other in that time instead of all asking the origin for the same bytes.
	settle = 150 * time.Millisecond
	// pollEvery is how often the bitmap of a peer still downloading is asked for again.
	pollEvery = 250 * time.Millisecond
	// findEvery is how often a running download looks for new holders.
	findEvery = time.Second
	// haveTimeout bounds one HAVE request; provideTimeout the announce before discovery.
	haveTimeout    = 2 * time.Second
	provideTimeout = time.Second
	// headGrace is how long the origin may take to confirm a size peers gave.
	headGrace = 500 * time.Millisecond
	// maxPeers is the most peers one download keeps track of.
	maxPeers = 32
	// maxBuffered caps the memory of endgame duplicates, which hold a whole chunk each: at
	// most this many bytes, and at least one chunk.
	maxBuffered = 32 << 20
	// stallTimeout fails a download in which no byte arrived for this long.
	stallTimeout = 2 * time.Minute
	// peerFailures is how many failed requests in a row make a download forget a peer.
	peerFailures = 3
	// memberGrace is how long a peer that announced the blob but has not yet said what it
	// holds is taken to be downloading it too.
	memberGrace = time.Second
	// busyBackoff is how long a peer that answered busy is left alone.
	busyBackoff = 200 * time.Millisecond
)

// peerState is what one download knows of one peer.
type peerState struct {
	id        string
	have      chunk.Have // the last answer; Chunks is nil before the first
	complete  bool
	polling   bool
	lastPoll  time.Time
	fails     int
	active    int
	rate      float64 // bytes per second, smoothed
	busyUntil time.Time
	idleSince time.Time // first answer in a row showing nothing fetched from the origin
	found     time.Time // when this download learned of the peer
}

// observe records a peer's answer.
func (p *peerState) observe(h chunk.Have, now time.Time) {
	p.have = h
	p.complete = !slices.Contains(h.Chunks, false)
	p.fails = 0
	switch {
	case slices.Contains(h.Fetching, true):
		p.idleSince = time.Time{}
	case p.idleSince.IsZero():
		p.idleSince = now
	}
}

// chunkReq is one outstanding request for a chunk.
type chunkReq struct {
	id       uint64
	chunk    int
	peer     string // "" is the origin
	start    time.Time
	buffered bool // an endgame duplicate: the chunk is written only if it wins
	cancel   context.CancelFunc
}

// event is what a goroutine started by the engine reports back, exactly once.
type event struct {
	// The announce at the start finished.
	provided bool
	// A lookup's result.
	lookup bool
	found  []string
	// A HAVE answer.
	peer string
	have chunk.Have
	err  error
	// A finished chunk request.
	req *chunkReq
	n   int64
}

// engine runs one download: it finds holders, keeps their bitmaps fresh, asks the policy for
// the next requests and carries them out, until every chunk is written. Its state belongs to
// the goroutine running loop; request goroutines report through events.
type engine struct {
	dl     *Downloader
	d      *Download
	log    *slog.Logger
	fleet  Fleet // nil: origin only
	cs     int64
	policy Policy

	events    chan event
	running   int // goroutines that will still send an event
	peers     map[string]*peerState
	reqs      map[*chunkReq]struct{}
	nextID    uint64
	finding   bool
	lastFind  time.Time
	progress  time.Time // when a byte last arrived
	written   int64     // bytes written when last looked
	suppliers map[string]bool

	originFails   int
	originErr     error
	originRetryAt time.Time
	// originAnswered is set once the origin answered one of this download's requests: until
	// then only one is in flight, so the first (a waiting client's) is not slowed by others.
	originAnswered atomic.Bool

	// leaser, when the fleet has a tracker, hands out origin leases; leasedElsewhere holds the
	// chunks whose lease another node had when last asked, until when to leave them to it.
	leaser          OriginLeaser
	leasedElsewhere map[int]time.Time
}

// Leases.
const (
	// leaseTimeout bounds asking for a lease; past it the chunk is fetched without one.
	leaseTimeout = time.Second
	// leaseRecheck is how long a chunk leased to another node is left to it before asking
	// again: by then it has usually arrived there and comes from that peer; if that node
	// died, its lease runs out and the next ask gets it.
	leaseRecheck = time.Second
	// leasedView is the name of the view that shows the policy the chunks leased elsewhere
	// as being fetched, so it leaves them to the peers; no peer ID looks like it.
	leasedView = "\x00leased"
)

// errLeasedElsewhere ends an origin request whose chunk another node has the lease on.
var errLeasedElsewhere = errors.New("chunk leased to another node")

func newEngine(dl *Downloader, d *Download, log *slog.Logger) *engine {
	e := &engine{
		dl:        dl,
		d:         d,
		log:       log,
		fleet:     dl.opts.Fleet,
		cs:        dl.opts.ChunkSize,
		policy:    dl.opts.Policy,
		events:    make(chan event),
		peers:     make(map[string]*peerState),
		reqs:      make(map[*chunkReq]struct{}),
		suppliers: make(map[string]bool),

		leasedElsewhere: make(map[int]time.Time),
	}
	if l, ok := e.fleet.(OriginLeaser); ok {
		e.leaser = l
	}
	return e
}

// spawn runs fn in a goroutine that reports its event to the loop.
func (e *engine) spawn(fn func() event) {
	e.running++
	go func() { e.events <- fn() }()
}

// drain waits for every spawned goroutine; the caller has cancelled their context.
func (e *engine) drain() {
	for e.running > 0 {
		ev := <-e.events
		e.running--
		if ev.req != nil {
			e.finishRequest(ev.req, ev.n, ev.err)
		}
	}
}

// discover announces the download, finds the peers holding or fetching the blob, and learns
// its size: from a peer when one knows it, else from the origin.
func (e *engine) discover(ctx context.Context) (int64, error) {
	type headResult struct {
		size int64
		err  error
	}
	head := make(chan headResult, 1)
	hctx, stopHead := context.WithCancel(ctx)
	defer stopHead()
	go func() {
		size, err := e.dl.opts.Origin.HeadBlob(hctx, e.d.registry, e.d.repo, e.d.digest)
		head <- headResult{size, err}
	}()

	if e.fleet != nil && e.fleet.Connected() {
		start := time.Now()
		// The announce runs alongside the first lookup: nodes starting together that miss
		// each other in it meet in the second, or when one asks the other what it holds.
		e.spawn(func() event {
			pctx, cancel := context.WithTimeout(ctx, provideTimeout)
			defer cancel()
			if err := e.fleet.Provide(pctx, e.d.digest); err != nil && ctx.Err() == nil {
				e.log.Debug("announce failed", "err", err)
			}
			return event{provided: true}
		})
		e.findNow(ctx)
		if !e.anyPeer() {
			if err := sleep(ctx, time.Until(start.Add(settle))); err != nil {
				return 0, err
			}
			e.findNow(ctx)
		}
	}
	if size, votes, ok := e.peerSize(); ok {
		// A peer's word on the size is taken only when the origin cannot confirm it soon: a
		// lying peer must not size the partial file (and evict the cache for it).
		t := time.NewTimer(headGrace)
		defer t.Stop()
		var headErr error
		select {
		case r := <-head:
			if r.err == nil {
				return r.size, nil
			}
			headErr = r.err
		case <-t.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if e.trustPeerSize(size, votes) {
			e.log.Debug("origin cannot confirm the size, taking the peers'", "size", size, "peers", votes)
			return size, nil
		}
		if headErr != nil {
			return 0, fmt.Errorf("size of %s: one peer says %d bytes, too many to take on its word, and the origin: %w", e.d.digest, size, headErr)
		}
		e.log.Warn("one peer's size for the blob is too large to take on its word; waiting for the origin", "size", size)
	}
	select {
	case r := <-head:
		if r.err != nil {
			return 0, r.err
		}
		return r.size, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// findNow looks the blob up and asks every peer found, and every peer that asked us, what
// it holds, waiting for the answers.
func (e *engine) findNow(ctx context.Context) {
	found, err := e.fleet.FindProviders(ctx, e.d.digest, true)
	if err != nil {
		e.log.Debug("lookup failed", "err", err)
	}
	found = append(found, e.takeHints()...)
	for _, id := range found {
		e.admit(id)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range e.peers {
		if p.have.Chunks != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hctx, cancel := context.WithTimeout(ctx, haveTimeout)
			defer cancel()
			h, err := e.fleet.Have(hctx, p.id, e.d.digest)
			mu.Lock()
			defer mu.Unlock()
			p.lastPoll = time.Now()
			if err == nil {
				p.observe(h, p.lastPoll)
			}
		}()
	}
	wg.Wait()
	e.lastFind = time.Now()
	for id, p := range e.peers {
		if p.have.Chunks != nil && !e.usable(p.have, -1) {
			delete(e.peers, id)
			continue
		}
	}
}

func (e *engine) takeHints() []string {
	var out []string
	for {
		select {
		case id := <-e.d.hints:
			out = append(out, id)
		default:
			return out
		}
	}
}

// admit starts tracking peer id, unless it is us, banned, known already or one too many.
func (e *engine) admit(id string) bool {
	if id == "" || e.fleet == nil || id == e.fleet.Self() || e.peers[id] != nil || len(e.peers) >= maxPeers || e.dl.Banned(id) {
		return false
	}
	e.peers[id] = &peerState{id: id, found: time.Now()}
	return true
}

func (e *engine) anyPeer() bool {
	for _, p := range e.peers {
		if p.have.Chunks != nil {
			return true
		}
	}
	return false
}

// peerSize is the blob's size as peers report it: the size most of them give, holders of the
// whole blob counting double, and how many peers gave it.
func (e *engine) peerSize() (size int64, votes int, ok bool) {
	weight := make(map[int64]int)
	count := make(map[int64]int)
	for _, p := range e.peers {
		if p.have.Chunks == nil {
			continue
		}
		w := 1
		if p.complete {
			w = 2
		}
		weight[p.have.Size] += w
		count[p.have.Size]++
	}
	best := -1
	for s, w := range weight {
		if w > best || w == best && s < size {
			size, best = s, w
		}
	}
	return size, count[size], best > 0
}

// trustPeerSize reports whether a size only peers vouch for may size the partial file: the
// reservation evicts cached blobs, so one peer alone is believed only for what fits easily.
func (e *engine) trustPeerSize(size int64, votes int) bool {
	capacity := e.dl.opts.Store.Stats().Capacity
	return votes >= 2 || capacity == 0 || size <= capacity/4
}

// usable reports whether a peer's answer fits this download: same chunk size and, once the
// size is known, same size. Peers configured with another chunk size cannot exchange chunks
// with us.
func (e *engine) usable(h chunk.Have, size int64) bool {
	return h.ChunkSize == e.cs && (size < 0 || h.Size == size)
}

// loop runs requests until every chunk is written.
func (e *engine) loop(ctx context.Context) error {
	e.progress = time.Now()
	size := e.d.size
	for id, p := range e.peers {
		if p.have.Chunks != nil && !e.usable(p.have, size) {
			e.log.Debug("peer disagrees on the blob's size, ignored", "peer", id, "size", p.have.Size)
			delete(e.peers, id)
		}
	}
	// This node's own order of origin fetches, so nodes fetching at once rarely collide.
	e.policy.Rank = rand.Perm(len(e.d.haveChunks()))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		have := e.d.haveChunks()
		if !slices.Contains(have, false) {
			return nil
		}
		if err := e.schedule(ctx, have); err != nil {
			return err
		}
		select {
		case ev := <-e.events:
			e.running--
			e.handle(ctx, ev, size)
		case id := <-e.d.hints:
			if e.admit(id) {
				e.poll(ctx, e.peers[id])
			}
		case <-e.d.wake:
		case <-tick.C:
			e.maintain(ctx)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maintain polls peers still downloading, looks for new holders now and then, and gives up
// on a download in which nothing arrives any more.
func (e *engine) maintain(ctx context.Context) {
	now := time.Now()
	if written := e.d.written(); written != e.written {
		e.written = written
		e.progress = now
	}
	for _, p := range e.peers {
		if !p.polling && !p.complete && now.Sub(p.lastPoll) >= pollEvery {
			e.poll(ctx, p)
		}
	}
	if e.fleet != nil && !e.finding && now.Sub(e.lastFind) >= findEvery && e.fleet.Connected() {
		e.finding = true
		e.spawn(func() event {
			found, err := e.fleet.FindProviders(ctx, e.d.digest, true)
			if err != nil && ctx.Err() == nil {
				e.log.Debug("lookup failed", "err", err)
			}
			return event{lookup: true, found: found}
		})
	}
}

func (e *engine) poll(ctx context.Context, p *peerState) {
	p.polling = true
	p.lastPoll = time.Now()
	id := p.id
	e.spawn(func() event {
		hctx, cancel := context.WithTimeout(ctx, haveTimeout)
		defer cancel()
		h, err := e.fleet.Have(hctx, id, e.d.digest)
		return event{peer: id, have: h, err: err}
	})
}

// handle applies one event to the engine's state.
func (e *engine) handle(ctx context.Context, ev event, size int64) {
	switch {
	case ev.provided:
	case ev.lookup:
		e.finding = false
		e.lastFind = time.Now()
		for _, id := range ev.found {
			if e.admit(id) {
				e.poll(ctx, e.peers[id])
			}
		}
	case ev.req != nil:
		e.finishRequest(ev.req, ev.n, ev.err)
	default:
		p := e.peers[ev.peer]
		if p == nil {
			return
		}
		p.polling = false
		switch {
		case ev.err == nil && e.usable(ev.have, size):
			p.observe(ev.have, time.Now())
		case ev.err == nil:
			e.log.Debug("peer disagrees on the blob's size or chunk size, ignored", "peer", p.id, "size", ev.have.Size, "chunkSize", ev.have.ChunkSize)
			delete(e.peers, p.id)
		case errors.Is(ev.err, chunk.ErrBusy):
			// Serving many of our requests already; the next poll asks again.
		case errors.Is(ev.err, chunk.ErrNotHeld):
			// Not started yet, or evicted since: keep asking for a while.
			p.have = chunk.Have{}
			if p.fails++; p.fails >= 4*peerFailures {
				e.forget(p)
			}
		default:
			e.log.Debug("peer did not answer", "peer", p.id, "err", ev.err)
			if p.fails++; p.fails >= peerFailures {
				e.forget(p)
			}
		}
	}
}

// forget stops using a peer; a later lookup may bring it back.
func (e *engine) forget(p *peerState) {
	if p.active == 0 && !p.polling {
		delete(e.peers, p.id)
		return
	}
	p.have = chunk.Have{}
	p.complete = false
}

// schedule asks the policy for the next requests and starts them.
func (e *engine) schedule(ctx context.Context, have []bool) error {
	now := time.Now()
	snap := Snapshot{Have: have, Readers: e.d.readerChunks(e.cs), Salt: e.d.digest.String()}
	if e.fleet != nil {
		snap.Self = e.fleet.Self()
	}
	buffered, originBusy := 0, 0
	inflight := make(map[int]int)
	for r := range e.reqs {
		snap.Inflight = append(snap.Inflight, Inflight{Chunk: r.chunk, Peer: r.peer, Age: now.Sub(r.start)})
		inflight[r.chunk]++
		if r.buffered {
			buffered++
		}
		if r.peer == "" {
			originBusy++
		}
	}
	perPeer := e.policy.withDefaults().PerPeer
	for _, p := range e.peers {
		if e.dl.Banned(p.id) {
			continue
		}
		if p.have.Chunks == nil {
			// Announced the blob but cannot say what it has yet: most likely it is starting
			// to download it too. For a moment it counts as a member, so nodes starting
			// together split the origin's work from their first request.
			if now.Sub(p.found) < memberGrace {
				snap.Peers = append(snap.Peers, PeerView{ID: p.id, Member: true})
			}
			continue
		}
		active := p.active
		switch {
		case now.Before(p.busyUntil):
			active = perPeer
		case p.rate == 0:
			// Slow start: one request to a peer until it has delivered a chunk, so the
			// first chunk (a waiting client's) does not share the peer's link with others.
			active = perPeer - 1 + min(active, 1)
		}
		pv := PeerView{
			ID: p.id, Has: p.have.Chunks, Fetching: p.have.Fetching, Active: active, Rate: p.rate,
			Member: !p.complete,
		}
		if !p.idleSince.IsZero() {
			pv.OriginIdle = now.Sub(p.idleSince)
		}
		snap.Peers = append(snap.Peers, pv)
	}
	if leased := e.leasedChunks(now, len(have)); leased != nil {
		snap.Peers = append(snap.Peers, PeerView{ID: leasedView, Fetching: leased})
	}
	// Map iteration order is random; the policy breaks ties by order, so fix it.
	slices.SortFunc(snap.Peers, func(a, b PeerView) int { return cmp.Compare(a.ID, b.ID) })

	originOK := !now.Before(e.originRetryAt)
	for _, r := range e.policy.Next(snap) {
		dup := inflight[r.Chunk] > 0
		switch {
		case r.Peer == "" && !originOK:
			continue
		case r.Peer == "" && originBusy > 0 && !e.originAnswered.Load():
			continue
		case dup && int64(buffered) >= max(1, maxBuffered/e.cs):
			continue
		}
		if dup {
			buffered++
		}
		if r.Peer == "" {
			originBusy++
		}
		inflight[r.Chunk]++
		e.start(ctx, r, dup)
	}

	if time.Since(e.progress) > stallTimeout {
		return fmt.Errorf("no progress for %v", stallTimeout)
	}
	if e.originFails >= e.dl.opts.Attempts && !e.peersCanFinish(have) {
		return e.originErr
	}
	return nil
}

// leasedChunks marks the chunks still left to the node that holds their lease, or returns
// nil when there are none; expired entries are dropped.
func (e *engine) leasedChunks(now time.Time, n int) []bool {
	var out []bool
	for c, until := range e.leasedElsewhere {
		if !now.Before(until) || c >= n {
			delete(e.leasedElsewhere, c)
			continue
		}
		if out == nil {
			out = make([]bool, n)
		}
		out[c] = true
	}
	return out
}

// peersCanFinish reports whether every missing chunk is held or being fetched by some peer.
func (e *engine) peersCanFinish(have []bool) bool {
	for c, h := range have {
		if h {
			continue
		}
		covered := false
		for _, p := range e.peers {
			if c < len(p.have.Chunks) && p.have.Chunks[c] || c < len(p.have.Fetching) && p.have.Fetching[c] {
				covered = true
				break
			}
		}
		if !covered {
			return false
		}
	}
	return true
}

// start launches one request.
func (e *engine) start(ctx context.Context, r Request, dup bool) {
	e.nextID++
	rctx, cancel := context.WithCancel(ctx)
	req := &chunkReq{id: e.nextID, chunk: r.Chunk, peer: r.Peer, start: time.Now(), buffered: dup, cancel: cancel}
	e.reqs[req] = struct{}{}
	if req.peer == "" {
		e.d.claim(req.chunk, req.id)
		e.d.setFetching(req.chunk, true)
		e.spawn(func() event {
			n, err := e.fetchOrigin(rctx, req)
			return event{req: req, n: n, err: err}
		})
		return
	}
	p := e.peers[req.peer]
	p.active++
	var list digest.Digest
	if req.chunk < len(p.have.ChunkList) {
		list = p.have.ChunkList[req.chunk]
	}
	var keep int64
	if !dup {
		keep = e.d.claim(req.chunk, req.id)
	}
	e.spawn(func() event {
		n, err := e.fetchPeer(rctx, req, list, keep)
		return event{req: req, n: n, err: err}
	})
}

// errChunkVerify means a peer's chunk did not match the hash in that peer's own chunk list.
var errChunkVerify = errors.New("chunk does not match the peer's chunk list")

// fetchPeer gets one chunk from a peer and writes it, checking it against want (the peer's
// chunk list entry) when there is one.
func (e *engine) fetchPeer(ctx context.Context, req *chunkReq, want digest.Digest, keep int64) (int64, error) {
	off := int64(req.chunk) * e.cs
	n := chunk.Len(e.d.size, e.cs, req.chunk)
	w := &chunkWriter{d: e.d, req: req, off: off, end: off + n, keepTo: off + keep}
	if want != "" {
		w.hash = sha256.New()
	}
	if req.buffered {
		w.buf = bytes.NewBuffer(make([]byte, 0, n))
	}
	got, err := e.fleet.GetChunk(ctx, req.peer, e.d.digest, req.chunk, w)
	if err != nil {
		return got, err
	}
	if got != n {
		return got, fmt.Errorf("%w: chunk %d is %d bytes, want %d", chunk.ErrProtocol, req.chunk, got, n)
	}
	var sum digest.Digest
	if w.hash != nil {
		if sum = digest.NewDigest(digest.SHA256, w.hash); sum != want {
			return got, fmt.Errorf("%w: chunk %d", errChunkVerify, req.chunk)
		}
	}
	if w.buf != nil {
		return got, e.d.takeOver(req.chunk, req.id, w.buf.Bytes(), sum)
	}
	if keep > 0 {
		// The prefix in the file is not the bytes just checked.
		sum = ""
	}
	return got, e.d.complete(req.chunk, req.id, sum)
}

// chunkWriter receives a chunk from a peer: into the partial file, at the chunk's place, as
// it arrives, or into memory for an endgame duplicate.
type chunkWriter struct {
	d      *Download
	req    *chunkReq
	off    int64
	end    int64
	keepTo int64 // bytes before this are in the file already and not written again
	hash   hash.Hash
	buf    *bytes.Buffer
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.end-w.off {
		return 0, fmt.Errorf("%w: chunk %d longer than expected", chunk.ErrProtocol, w.req.chunk)
	}
	if w.hash != nil {
		w.hash.Write(p)
	}
	switch {
	case w.buf != nil:
		w.buf.Write(p)
	case w.off+int64(len(p)) <= w.keepTo:
	default:
		skip := max(0, w.keepTo-w.off)
		if err := w.d.writeOwned(w.req.chunk, w.req.id, p[skip:], w.off+skip); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// fetchOrigin streams the missing part of one chunk from the origin into the partial file.
func (e *engine) fetchOrigin(ctx context.Context, req *chunkReq) (_ int64, err error) {
	start := int64(req.chunk) * e.cs
	off := start + e.d.chunkFill(req.chunk)
	end := start + chunk.Len(e.d.size, e.cs, req.chunk)
	if off >= end {
		return 0, nil
	}
	if e.leaser != nil {
		lctx, cancel := context.WithTimeout(ctx, leaseTimeout)
		release, ok, lerr := e.leaser.LeaseOrigin(lctx, e.d.digest, e.d.size, e.cs, req.chunk)
		cancel()
		switch {
		case lerr != nil:
			// No tracker answered: fetch without a lease, as a fleet without one does.
			e.log.Debug("no origin lease, fetching without", "chunk", req.chunk, "err", lerr)
		case !ok:
			return 0, errLeasedElsewhere
		default:
			// Given back when the request ends; done when the chunk arrived whole.
			defer func() { release(err == nil) }()
		}
	}
	body, _, err := e.dl.opts.Origin.GetBlob(ctx, e.d.registry, e.d.repo, e.d.digest, off, end-off)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if !e.originAnswered.Swap(true) {
		// The other origin requests may start now.
		select {
		case e.d.wake <- struct{}{}:
		default:
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		// Whatever has arrived is written at once, so clients and peers see it without
		// waiting for a full buffer from a slow origin.
		n, rerr := body.Read(buf)
		if n > 0 {
			if int64(n) > end-off {
				return total, fmt.Errorf("origin sent more than the %d bytes asked for", end-start)
			}
			done, err := e.d.writeStream(req.chunk, req.id, buf[:n], off)
			if err != nil {
				return total, err
			}
			e.dl.Fetched("origin", n)
			e.d.fromOrigin.Add(int64(n))
			off += int64(n)
			total += int64(n)
			if done {
				return total, nil
			}
		}
		switch {
		case rerr == io.EOF && off == end:
			return total, nil
		case rerr == io.EOF:
			return total, io.ErrUnexpectedEOF
		case rerr != nil:
			return total, rerr
		}
	}
}

// endRequest releases what a finished request held.
func (e *engine) endRequest(req *chunkReq) {
	req.cancel()
	delete(e.reqs, req)
	if req.peer == "" {
		e.d.setFetching(req.chunk, false)
	} else if p := e.peers[req.peer]; p != nil {
		p.active--
	}
	if !req.buffered {
		e.d.unclaim(req.chunk, req.id)
	}
}

// finishRequest accounts for a finished request: rates, suppliers, failures and bans.
func (e *engine) finishRequest(req *chunkReq, n int64, err error) {
	e.endRequest(req)
	if n > 0 {
		e.progress = time.Now()
	}
	if req.peer == "" {
		switch {
		case err == nil:
			e.originFails = 0
		case errors.Is(err, errLeasedElsewhere):
			e.leasedElsewhere[req.chunk] = time.Now().Add(leaseRecheck)
		case errors.Is(err, errSuperseded) || errors.Is(err, context.Canceled):
		default:
			// A transfer that moved bytes resumes at once; one that did not backs off.
			if n > 0 {
				e.originFails = 0
			}
			e.originFails++
			e.originErr = err
			e.originRetryAt = time.Now().Add(backoff(e.originFails))
			e.dl.chunkFailure("origin")
			e.log.Debug("origin request failed", "chunk", req.chunk, "bytes", n, "err", err)
		}
		return
	}
	p := e.peers[req.peer]
	if err == nil {
		e.dl.Fetched("peer", int(n))
		e.d.fromPeers.Add(int64(n))
		e.suppliers[req.peer] = true
		if p != nil {
			p.fails = 0
			if secs := time.Since(req.start).Seconds(); secs > 0 {
				rate := float64(n) / secs
				if p.rate == 0 {
					p.rate = rate
				} else {
					p.rate = 0.7*p.rate + 0.3*rate
				}
			}
		}
		return
	}
	switch {
	case errors.Is(err, errSuperseded) || errors.Is(err, context.Canceled):
		return
	case errors.Is(err, chunk.ErrBusy):
		if p != nil {
			p.busyUntil = time.Now().Add(busyBackoff + rand.N(busyBackoff))
		}
		return
	case errors.Is(err, chunk.ErrNotHeld):
		// Its bitmap was stale: forget that chunk until the next answer.
		e.dl.chunkFailure("not_held")
		if p != nil && req.chunk < len(p.have.Chunks) {
			p.have.Chunks[req.chunk] = false
			p.complete = false
		}
		return
	case errors.Is(err, errChunkVerify):
		e.dl.chunkFailure("verify")
		e.dl.Ban(req.peer, err)
		e.log.Warn("peer sent a chunk that fails its own chunk list; banned", "peer", req.peer, "chunk", req.chunk)
	case errors.Is(err, chunk.ErrProtocol):
		e.dl.chunkFailure("protocol")
		e.dl.Ban(req.peer, err)
		e.log.Warn("peer broke the chunk protocol; banned", "peer", req.peer, "err", err)
	default:
		e.dl.chunkFailure("error")
		e.log.Debug("chunk request failed", "peer", req.peer, "chunk", req.chunk, "err", err)
	}
	if p != nil {
		if p.fails++; p.fails >= peerFailures || e.dl.Banned(p.id) {
			e.forget(p)
		}
	}
}

// supplierList is the peers that supplied chunks, for the ban after a digest mismatch.
func (e *engine) supplierList() []string {
	out := make([]string, 0, len(e.suppliers))
	for id := range e.suppliers {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// run fetches, verifies and commits one blob.
func (e *engine) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		e.drain()
	}()
	d := e.d.digest
	size, err := e.discover(ctx)
	if err != nil {
		return err
	}
	partial, err := e.dl.opts.Store.CreatePartial(d, size, e.cs)
	if errors.Is(err, store.ErrExists) {
		// Committed by another path since the caller looked: serve that copy.
		blob, err := e.dl.opts.Store.Open(d)
		if err != nil {
			return err
		}
		e.d.startCommitted(blob)
		return nil
	}
	if err != nil {
		return fmt.Errorf("create partial %s: %w", d, err)
	}
	e.d.start(partial)

	// The verifier follows the written bytes in order; it ends with the download.
	abort := make(chan struct{})
	verified := make(chan error, 1)
	listSize := int64(0)
	if e.fleet != nil {
		listSize = e.cs
	}
	go func() { verified <- e.d.verify(abort, listSize) }()

	if err := e.loop(ctx); err != nil {
		// Readers learn why before the file goes away under them.
		e.d.fail(err)
		close(abort)
		<-verified
		cancel()
		e.drain()
		// What was written is kept for a resume: a later download checks it all again.
		if cerr := partial.Close(); cerr != nil {
			e.log.Warn("close partial", "err", cerr)
		}
		return err
	}
	cancel()
	e.drain()
	if err := <-verified; err != nil {
		err = fmt.Errorf("verify %s: %w", d, err)
		if errors.Is(err, ErrDigestMismatch) {
			// Which peer lied cannot be told without a chunk list: every supplier is
			// suspect, banned before any reader learns of the failure and asks again.
			// The origin's own bytes are checked again on the next attempt.
			for _, id := range e.supplierList() {
				e.dl.Ban(id, err)
			}
		}
		e.d.fail(err)
		if aerr := partial.Abort(); aerr != nil {
			e.log.Warn("discard partial", "err", aerr)
		}
		return err
	}
	// Clients may finish now; making the file durable need not hold them up.
	e.d.markVerified()
	blob, err := partial.Commit("")
	if err != nil {
		err = fmt.Errorf("commit %s: %w", d, err)
		e.d.fail(err)
		partial.Abort()
		return err
	}
	if list := e.d.chunkList(); list != nil && e.dl.opts.OnChunkList != nil {
		e.dl.opts.OnChunkList(d, e.cs, list)
	}
	e.d.commit(blob)
	if e.dl.opts.OnCommit != nil {
		e.dl.opts.OnCommit(d)
	}
	return nil
}
