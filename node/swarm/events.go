package swarm

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/chunk"
)

// This file is the engine's events. One goroutine, the one running the engine, owns all of
// its state; the goroutines it starts only do I/O and report back with an event, which the
// owner applies. So a download's decisions are made in one place, in the order events came.

// event is something that happened to a download, applied to its engine by the goroutine
// that owns it.
type event interface {
	apply(ctx context.Context, e *engine)
}

// urgent reports whether ev calls for the policy at once: a request ended (its slot is free)
// or the origin answered its first. Other events wait for the engine's next tick.
func urgent(ev event) bool {
	switch ev.(type) {
	case requestDone, originAnswered:
		return true
	}
	return false
}

// report carries an event from a goroutine the engine started; last is set on its final
// report, after which the goroutine has ended (or is about to).
type report struct {
	ev   event
	last bool
}

// provided: the announce at the start finished.
type provided struct{}

func (provided) apply(context.Context, *engine) {}

// headDone is the origin's answer to the size asked at the start.
type headDone struct {
	size int64
	err  error
}

func (ev headDone) apply(_ context.Context, e *engine) { e.head = &ev }

// discovered is the result of a lookup during discovery: every peer found, and every peer
// that asked us meanwhile, is asked what it holds before the size is decided.
type discovered struct {
	found []string
	err   error
}

func (ev discovered) apply(ctx context.Context, e *engine) {
	e.finding = false
	e.findFail = ev.err != nil && len(ev.found) == 0
	if ev.err != nil {
		e.log.Debug("lookup failed", "err", ev.err)
	}
	for _, id := range append(ev.found, e.takeHints()...) {
		e.admit(id)
	}
	for _, p := range e.peers {
		if p.have.Chunks == nil {
			e.probe(ctx, p.id)
		}
	}
}

// probed is a peer's answer to what it holds, asked during discovery.
type probed struct {
	peer string
	have chunk.Have
	err  error
}

func (ev probed) apply(ctx context.Context, e *engine) {
	e.probing--
	p := e.peers[ev.peer]
	if p == nil {
		return
	}
	p.lastPoll = e.clock.Now()
	switch {
	case ev.err == nil:
		p.observe(ev.have, p.lastPoll)
		e.admitAll(ev.have.Peers)
	case errors.Is(ev.err, chunk.ErrNotHeld) && p.seed && !e.seeding:
		e.askSeed(ctx, p)
	}
}

// seedsFound is the answer on the blob's seeds. A node that is not one tracks them, and
// asks each that holds nothing of the blob yet to fetch it.
type seedsFound struct {
	seeds []string
	err   error
}

func (ev seedsFound) apply(ctx context.Context, e *engine) {
	e.seedsKnown, e.seedsLooking = true, false
	e.seedsChecked = e.clock.Now()
	if ev.err != nil {
		if ctx.Err() != nil {
			return
		}
		e.log.Debug("no seeds found", "err", ev.err)
		if e.awaitingSeeds(e.clock.Now()) {
			e.findSeeds(ctx, seedsRetry)
		}
		return
	}
	if e.seeds != nil && slices.Equal(ev.seeds, e.seeds) {
		return // a check that found them as they were
	}
	e.seeds, e.seedsAt = ev.seeds, e.clock.Now()
	e.seeding = slices.Contains(ev.seeds, e.fleet.Self())
	for _, p := range e.peers {
		p.seed = e.isSeed(p.id)
	}
	for _, id := range ev.seeds {
		if e.admit(id) {
			e.probe(ctx, id)
		}
	}
}

// seedAsked: a seed was asked to fetch the blob.
type seedAsked struct {
	peer string
	err  error
}

func (ev seedAsked) apply(_ context.Context, e *engine) {
	p := e.peers[ev.peer]
	if p != nil {
		p.asking = false
	}
	if ev.err != nil {
		e.log.Debug("seed refused or did not answer", "peer", ev.peer, "err", ev.err)
		return
	}
	if p != nil {
		// It gets seedLive to start before the others stop waiting for it.
		p.answered = e.clock.Now()
	}
}

// lookupDone is the result of a lookup while the download runs.
type lookupDone struct {
	found []string
}

func (ev lookupDone) apply(_ context.Context, e *engine) {
	e.finding = false
	e.lastFind = e.clock.Now()
	fresh := false
	for _, id := range ev.found {
		// Asked at the next tick, first of the peers due, within the poll budget.
		fresh = e.admit(id) || fresh
	}
	// Once lookups bring no one new, or the download knows peers enough, they are spaced
	// out: the holders are known, and the DHT's cost per node must not grow with the swarm.
	if fresh && len(e.peers) < enoughPeers {
		e.findWait = findEvery
	} else {
		e.findWait = min(2*e.findWait, findMax)
	}
}

// hint: a peer asked us about the blob, so it is most likely fetching it too.
type hint struct {
	peer string
}

func (ev hint) apply(_ context.Context, e *engine) {
	e.admit(ev.peer) // asked at the next tick, first of the peers due
}

// haveAnswer is a peer's answer to what it holds, asked while the download runs.
type haveAnswer struct {
	peer string
	have chunk.Have
	err  error
}

func (ev haveAnswer) apply(ctx context.Context, e *engine) {
	p := e.peers[ev.peer]
	if p == nil {
		return
	}
	p.polling = false
	switch {
	case ev.err == nil && e.usable(ev.have, e.job.size):
		p.observe(ev.have, e.clock.Now())
		e.admitAll(ev.have.Peers)
	case ev.err == nil:
		e.log.Debug("peer disagrees on the blob's size or chunk size, ignored", "peer", p.id, "size", ev.have.Size, "chunkSize", ev.have.ChunkSize)
		e.dropPeer(p.id)
	case errors.Is(ev.err, chunk.ErrBusy):
		// Serving many of our requests already; the next poll asks again.
	case errors.Is(ev.err, chunk.ErrNotHeld):
		// Not started yet, or evicted since: keep asking for a while.
		p.have = chunk.Have{}
		if p.seed && !e.seeding {
			e.askSeed(ctx, p)
		}
		if p.fails++; p.fails >= 4*peerFailures {
			e.forget(p)
		}
	default:
		e.log.Debug("peer did not answer", "peer", p.id, "err", ev.err)
		p.fails++
		switch {
		case p.seed && errors.Is(ev.err, context.DeadlineExceeded) && e.clock.Since(p.answered) < seedLive:
			// A seed that answers late is loaded, not gone: everyone polls it, and its
			// share of the origin's chunks is fetched twice if it is forgotten. One
			// silent for seedLive is.
		case p.fails >= peerFailures:
			e.forget(p)
		}
	}
}

// watchEnded is a watch's end (Watcher) after answers answers.
type watchEnded struct {
	peer    string
	answers int
	err     error
}

func (ev watchEnded) apply(ctx context.Context, e *engine) {
	p := e.peers[ev.peer]
	if p == nil {
		return
	}
	p.watching = false
	// The next watch or poll comes pollEvery after this one's end.
	p.lastPoll = e.clock.Now()
	switch {
	case ev.err == nil:
		return
	case ev.answers == 0 && errors.Is(ev.err, chunk.ErrBusy):
		// It serves all the watches it takes: polled for a while, it is still heard from,
		// and asked at once, as a watch would have answered now.
		p.watchBusy = p.lastPoll.Add(watchBusyWait)
		p.lastPoll = time.Time{}
		return
	case ev.answers == 0 && !errors.Is(ev.err, chunk.ErrNotHeld) && ctx.Err() == nil:
		// Most likely a node that does not take watches: it is polled from now on.
		p.noWatch = true
	}
	haveAnswer{peer: ev.peer, err: ev.err}.apply(ctx, e)
}

// originAnswered: the origin answered the first of this download's requests, so the
// others may start. The request goes on; its end is a requestDone.
type originAnswered struct{}

func (originAnswered) apply(_ context.Context, e *engine) { e.originAnswered = true }

// requestDone is a chunk request's end: n bytes moved, err why it stopped short.
type requestDone struct {
	req *chunkReq
	n   int64
	err error
}

func (ev requestDone) apply(_ context.Context, e *engine) { e.finishRequest(ev.req, ev.n, ev.err) }
