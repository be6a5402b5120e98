package swarm

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

// This file is how a download finds its peers and learns what they hold: the announce, the
// lookups, the HAVE polls and the peers' vote on the blob's size.

// peerState is what one download knows of one peer.
type peerState struct {
	id        string
	have      chunk.Have // the last answer; Chunks is nil before the first
	complete  bool
	polling   bool
	watching  bool      // a watch of the peer is open (Watcher): its answers come unasked
	noWatch   bool      // a watch of the peer failed before its first answer: it is polled
	watchBusy time.Time // until then the peer is polled: it refused a watch as busy
	lastPoll  time.Time // when the last poll or watch began
	fails     int
	active    int
	answered  time.Time // the last answer showing the peer's download running (or held)
	asked     bool      // a seed this download asked to fetch the blob
	asking    bool      // that request is still out
	rate      float64   // bytes per second, smoothed
	busyUntil time.Time
	busy      int       // busy answers in a row
	idleSince time.Time // first answer in a row showing nothing fetched from the origin
	found     time.Time // when this download learned of the peer
	seed      bool      // one of the blob's seeds, as last looked up
}

// observe records a peer's answer.
func (p *peerState) observe(h chunk.Have, now time.Time) {
	p.have = h
	p.complete = !slices.Contains(h.Chunks, false)
	p.fails = 0
	p.answered = now
	switch {
	case slices.Contains(h.Fetching, true):
		p.idleSince = time.Time{}
	case p.idleSince.IsZero():
		p.idleSince = now
	}
}

// heard is when the peer was last heard from: now while a watch of it that has answered
// runs, since it would have said if anything changed (and the watch ends when the peer is
// silent for p2p.WatchSilence). A watch that has not answered yet says nothing: a frozen or
// dead peer takes a new stream, and only the request's timeout ends it. (A watch begins at
// lastPoll; an answer since then is one of its own.)
func (p *peerState) heard(now time.Time) time.Time {
	if p.watching && p.have.Chunks != nil && !p.answered.Before(p.lastPoll) {
		return now
	}
	return p.answered
}

// discover announces the download, finds the peers holding or fetching the blob, and learns
// its size: from a peer when one knows it, else from the origin. It applies the events of its
// own requests as they come, like loop after it.
func (e *engine) discover(ctx context.Context) (int64, error) {
	hctx, stopHead := context.WithCancel(ctx)
	defer stopHead()
	e.spawn(func() event {
		size, err := e.dl.opts.Origin.HeadBlob(hctx, e.job.registry, e.job.repo, e.job.digest)
		return headDone{size: size, err: err}
	})
	headIn := func() bool { return e.head != nil }

	if e.fleet != nil && e.fleet.Connected() {
		start := e.clock.Now()
		// The announce runs alongside the first lookup: nodes starting together that miss
		// each other in it meet in the second, or when one asks the other what it holds.
		e.spawn(func() event {
			pctx, cancel := e.clock.WithTimeout(ctx, provideTimeout)
			defer cancel()
			if err := e.fleet.Provide(pctx, e.job.digest); err != nil && ctx.Err() == nil {
				e.log.Debug("announce failed", "err", err)
			}
			return provided{}
		})
		if e.seeder != nil {
			e.seedsSince = e.clock.Now()
			e.findSeeds(ctx, 0)
		}
		if err := e.findNow(ctx); err != nil {
			return 0, err
		}
		if e.seeder != nil {
			// The first origin request waits for the seeds: a node that is not one leaves
			// the origin to them.
			if err := e.awaitFor(ctx, func() bool { return e.seedsKnown }, seedsTimeout); err != nil {
				return 0, err
			}
		}
		// A lookup that could not answer (a loaded fleet, or one whose members are slow) is
		// no word that nobody holds the blob: it is made again, for lookupPatience at most,
		// before the origin is taken to be the only source.
		for tries := 0; !e.anyPeer() && (tries == 0 || e.findFail && e.clock.Since(start) < lookupPatience); tries++ {
			// The first waits out the settle since the download began, later ones as long
			// again.
			from := start
			if tries > 0 {
				from = e.clock.Now()
			}
			if err := e.awaitFor(ctx, func() bool { return false }, from.Add(settle).Sub(e.clock.Now())); err != nil {
				return 0, err
			}
			if err := e.findNow(ctx); err != nil {
				return 0, err
			}
		}
	}
	if size, votes, ok := e.peerSize(); ok {
		// A peer's word on the size is taken only when the origin cannot confirm it soon: a
		// lying peer must not size the partial file (and evict the cache for it).
		if err := e.awaitFor(ctx, headIn, headGrace); err != nil {
			return 0, err
		}
		var headErr error
		if e.head != nil {
			if e.head.err == nil {
				return e.head.size, nil
			}
			headErr = e.head.err
		}
		if e.trustPeerSize(size, votes) {
			e.log.Debug("origin cannot confirm the size, taking the peers'", "size", size, "peers", votes)
			return size, nil
		}
		if headErr != nil {
			return 0, fmt.Errorf("size of %s: one peer says %d bytes, too many to take on its word, and the origin: %w", e.job.digest, size, headErr)
		}
		e.log.Warn("one peer's size for the blob is too large to take on its word; waiting for the origin", "size", size)
	}
	if err := e.await(ctx, headIn, nil); err != nil {
		return 0, err
	}
	if e.head.err != nil {
		return 0, e.head.err
	}
	return e.head.size, nil
}

// awaitFor is await for at most d of the download's clock (nothing if d <= 0).
func (e *engine) awaitFor(ctx context.Context, done func() bool, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := e.clock.Timer(d)
	defer t.Stop()
	return e.await(ctx, done, t.C)
}

// findSeeds looks up the blob's seeds after delay; seedsFound takes the answer in.
func (e *engine) findSeeds(ctx context.Context, delay time.Duration) {
	e.seedsLooking = true
	e.spawn(func() event {
		if delay > 0 {
			t := e.clock.Timer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return seedsFound{err: ctx.Err()}
			}
		}
		sctx, cancel := e.clock.WithTimeout(ctx, seedsLookupTimeout)
		defer cancel()
		seeds, err := e.seeder.Seeds(sctx, e.job.digest)
		return seedsFound{seeds: seeds, err: err}
	})
}

// askSeed asks seed p to fetch the blob, once per download: it answered that it holds
// nothing of it.
func (e *engine) askSeed(ctx context.Context, p *peerState) {
	if p.asked {
		return
	}
	p.asked, p.asking = true, true
	id := p.id
	e.spawn(func() event {
		actx, cancel := e.clock.WithTimeout(ctx, seedsTimeout)
		defer cancel()
		return seedAsked{peer: id, err: e.seeder.AskSeed(actx, id, e.job.registry, e.job.repo, e.job.digest)}
	})
}

// seedLive reports whether some seed other than this node answered lately that it runs the
// download, or took the request to, or is being asked: while one is, the origin is left to
// the seeds.
func (e *engine) seedLive(now time.Time) bool {
	for _, id := range e.seeds {
		p := e.peers[id]
		switch {
		case p == nil: // this node, or one not tracked
		case p.asking, !p.answered.IsZero() && now.Sub(later(p.heard(now), e.progress)) < seedLive:
			// Asked, or heard from lately, or at least once while bytes still arrive.
			return true
		case p.answered.IsZero() && !p.asked && now.Sub(later(e.seedsAt, e.progress)) < seedLive:
			// Not heard from yet: a loaded seed answers late, which is no reason to
			// fetch what it is there for while bytes still arrive.
			return true
		}
	}
	return false
}

// awaitingSeeds reports whether the blob's seeds are still being looked up, and not for
// so long that this node should fend for itself: seedLive since the lookups began, or until
// the lookup running then ends (a loaded fleet answers late, and a lookup about to answer is
// worth its wait). Bytes from peers do not extend it: with no seeds known, a peer sending
// them may be a node that fends for itself, fetching only its share of the origin's chunks.
func (e *engine) awaitingSeeds(now time.Time) bool {
	return e.seeder != nil && e.seeds == nil && !e.seedsSince.IsZero() && (e.seedsLooking || now.Sub(e.seedsSince) < seedLive)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// isSeed reports whether peer id is one of the blob's seeds.
func (e *engine) isSeed(id string) bool { return slices.Contains(e.seeds, id) }

// findNow looks the blob up and asks every peer found, and every peer that asked us, what
// it holds, waiting for the answers.
func (e *engine) findNow(ctx context.Context) error {
	e.finding = true
	e.spawn(func() event {
		found, err := e.fleet.FindProviders(ctx, e.job.digest, true)
		return discovered{found: found, err: err}
	})
	if err := e.await(ctx, func() bool { return !e.finding && e.probing == 0 }, nil); err != nil {
		return err
	}
	e.lastFind = e.clock.Now()
	for id, p := range e.peers {
		if p.have.Chunks != nil && !e.usable(p.have, -1) {
			e.dropPeer(id)
		}
	}
	return nil
}

// probe asks peer id what it holds, for discovery.
func (e *engine) probe(ctx context.Context, id string) {
	e.probing++
	e.spawn(func() event {
		hctx, cancel := e.clock.WithTimeout(ctx, haveTimeout)
		defer cancel()
		h, err := e.fleet.Have(hctx, id, e.job.digest)
		return probed{peer: id, have: h, err: err}
	})
}

func (e *engine) takeHints() []string {
	var out []string
	for {
		select {
		case id := <-e.job.hints:
			out = append(out, id)
		default:
			return out
		}
	}
}

// admit starts tracking peer id, unless it is us, banned, known already or one too many.
func (e *engine) admit(id string) bool {
	// The seeds are always tracked: they are where the blob comes from first.
	full := len(e.peers) >= maxPeers && !e.isSeed(id)
	if id == "" || e.fleet == nil || id == e.fleet.Self() || e.peers[id] != nil || full || e.dl.Banned(id) {
		return false
	}
	e.peers[id] = &peerState{id: id, found: e.clock.Now(), seed: e.isSeed(id)}
	e.sorted = nil
	return true
}

// admitAll admits the peers a peer named as asking about the blob lately (chunk.Have.Peers):
// most likely downloading it now, they are asked what they hold at the next tick.
func (e *engine) admitAll(ids []string) {
	for _, id := range ids {
		e.admit(id)
	}
}

// dropPeer stops tracking peer id.
func (e *engine) dropPeer(id string) {
	delete(e.peers, id)
	e.sorted = nil
}

// peerList is the peers tracked, in the order of their IDs.
func (e *engine) peerList() []*peerState {
	if e.sorted == nil {
		e.sorted = make([]*peerState, 0, len(e.peers))
		for _, p := range e.peers {
			e.sorted = append(e.sorted, p)
		}
		slices.SortFunc(e.sorted, func(a, b *peerState) int { return cmp.Compare(a.id, b.id) })
	}
	return e.sorted
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

// ask learns what peer p holds now, while the download runs: with a watch if the fleet and
// the peer take them, else with a poll.
func (e *engine) ask(ctx context.Context, p *peerState) {
	if e.watcher == nil || p.noWatch || e.clock.Now().Before(p.watchBusy) {
		e.poll(ctx, p)
		return
	}
	p.watching = true
	p.lastPoll = e.clock.Now()
	id := p.id
	// Counted from the watch's goroutines, read at its end.
	var answers atomic.Int64
	e.running++
	startWatch(e.watcher).StartWatch(ctx, id, e.job.digest, func(h chunk.Have) {
		answers.Add(1)
		e.notify(haveAnswer{peer: id, have: h})
	}, func(err error) {
		e.events <- report{ev: watchEnded{peer: id, answers: int(answers.Load()), err: err}, last: true}
	})
}

// startWatch is w as a WatchStarter: itself if it is one, else each watch in a goroutine of
// its own.
func startWatch(w Watcher) WatchStarter {
	if ws, ok := w.(WatchStarter); ok {
		return ws
	}
	return blockingWatcher{w}
}

type blockingWatcher struct{ Watcher }

func (w blockingWatcher) StartWatch(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have), end func(error)) {
	go func() { end(w.WatchHave(ctx, peer, d, fn)) }()
}

// poll asks peer p what it holds now, while the download runs.
func (e *engine) poll(ctx context.Context, p *peerState) {
	p.polling = true
	p.lastPoll = e.clock.Now()
	id := p.id
	e.spawn(func() event {
		hctx, cancel := e.clock.WithTimeout(ctx, haveTimeout)
		defer cancel()
		h, err := e.fleet.Have(hctx, id, e.job.digest)
		return haveAnswer{peer: id, have: h, err: err}
	})
}

// forget stops using a peer; a later lookup may bring it back.
func (e *engine) forget(p *peerState) {
	if p.active == 0 && !p.polling && !p.watching {
		e.dropPeer(p.id)
		return
	}
	p.have = chunk.Have{}
	p.complete = false
}
