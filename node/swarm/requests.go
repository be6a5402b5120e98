package swarm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/chunk"
)

// This file is the bookkeeping of requests: what the policy is shown, what a finished
// request tells of its source (rates, failures, bans).

// chunkReq is one outstanding request for a chunk.
type chunkReq struct {
	id       uint64
	chunk    int
	peer     string // "" is the origin
	start    time.Time
	buffered bool // an endgame duplicate: the chunk is written only if it wins
	cancel   context.CancelFunc
	// leaseGiveUp: lease requests have failed for leaseGiveUp; fetch without one if this
	// one fails too.
	leaseGiveUp bool
}

// schedule starts the requests the policy asks for, then gives up on a download that
// cannot go on.
func (e *engine) schedule(ctx context.Context, have []bool) error {
	inflight := make(map[int]int, len(e.reqs))
	for r := range e.reqs {
		inflight[r.chunk]++
	}
	for _, r := range e.policy.Next(e.snapshot(have)) {
		dup := inflight[r.Chunk] > 0
		inflight[r.Chunk]++
		e.start(ctx, r, dup)
	}

	if e.clock.Since(e.progress) > stallTimeout {
		e.logStall(have)
		return fmt.Errorf("no progress for %v", stallTimeout)
	}
	if e.originFails >= e.dl.opts.Attempts && !e.peersCanFinish(have) {
		return e.originErr
	}
	return nil
}

// snapshot describes the download's swarm to the policy.
func (e *engine) snapshot(have []bool) Snapshot {
	now := e.clock.Now()
	snap := Snapshot{
		Have: have, Readers: e.job.readerChunks(e.cs), Salt: e.job.digest.String(),
		Leased:          e.leasedChunks(now, len(have)),
		OriginSlowStart: !e.originAnswered,
		MaxDuplicates:   int(max(1, e.dl.opts.MaxBuffered/e.cs)),
	}
	if e.fleet != nil {
		snap.Self = e.fleet.Self()
	}
	if wait := e.originRetryAt.Sub(now); wait > 0 {
		snap.OriginBackoff = wait
	}
	// A seed splits the origin's work with the other seeds; any other node leaves it to them
	// while one is live, and fends for itself when none is. While the seeds are still
	// being looked up, the origin is left to whoever they turn out to be.
	switch {
	case e.seeding || e.seeds != nil && e.seedLive(now):
		snap.Fetchers = e.seeds
	case e.awaitingSeeds(now):
		snap.Fetchers = []string{}
	}
	snap.Inflight = make([]Inflight, 0, len(e.reqs))
	snap.Peers = make([]PeerView, 0, len(e.peers))
	for r := range e.reqs {
		snap.Inflight = append(snap.Inflight, Inflight{Chunk: r.chunk, Peer: r.peer, Age: now.Sub(r.start), Duplicate: r.buffered})
	}
	for _, p := range e.peerList() {
		if e.dl.Banned(p.id) {
			continue
		}
		if p.have.Chunks == nil {
			// Announced the blob but cannot say what it has yet: most likely it is starting
			// to download it too. For a moment it counts as a member, so nodes starting
			// together split the origin's work from their first request. A fellow seed
			// counts as one for longer: it is there to fetch, and a loaded one answers late.
			if now.Sub(p.found) < memberGrace || e.seeding && p.seed && now.Sub(p.found) < seedLive {
				snap.Peers = append(snap.Peers, PeerView{ID: p.id, Member: true})
			}
			continue
		}
		pv := PeerView{
			ID: p.id, Has: p.have.Chunks, Fetching: p.have.Fetching, Active: p.active, Rate: p.rate,
			Busy: now.Before(p.busyUntil), SlowStart: p.rate == 0, Member: !p.complete,
			Complete: p.complete, Seed: p.seed,
		}
		if !p.idleSince.IsZero() {
			// Between answers, not up to now: a peer too loaded to answer lately is not
			// known to be idle, and taking its share would fetch those chunks twice. One
			// that stopped answering is forgotten after peerFailures, and its share with it.
			pv.OriginIdle = p.heard(now).Sub(p.idleSince)
		}
		snap.Peers = append(snap.Peers, pv)
	}
	// In the order of their IDs (peerList): the policy breaks some ties by order.
	return snap
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

// endRequest releases what a finished request held.
func (e *engine) endRequest(req *chunkReq) {
	req.cancel()
	delete(e.reqs, req)
	if req.peer == "" {
		e.job.setFetching(req.chunk, false)
	} else if p := e.peers[req.peer]; p != nil {
		p.active--
	}
	if !req.buffered {
		e.job.unclaim(req.chunk, req.id)
	}
}

// finishRequest accounts for a finished request: rates, suppliers, failures and bans.
func (e *engine) finishRequest(req *chunkReq, n int64, err error) {
	e.endRequest(req)
	if n > 0 {
		e.progress = e.clock.Now()
	}
	if req.peer == "" {
		switch {
		case err == nil:
			e.originFails = 0
			e.leaseFailSince = time.Time{}
		case errors.Is(err, errLeasedElsewhere):
			e.leasedElsewhere[req.chunk] = e.clock.Now().Add(leaseRecheck)
			e.leaseFailSince = time.Time{}
		case errors.Is(err, errLeaseUnknown):
			// Not a grant: asked again after leaseRecheck, meanwhile left to the peers.
			e.leasedElsewhere[req.chunk] = e.clock.Now().Add(leaseRecheck)
			if e.leaseFailSince.IsZero() {
				e.leaseFailSince = req.start
			}
			e.log.Debug("no answer on the origin lease, asking again later", "chunk", req.chunk, "err", err)
		case errors.Is(err, errSuperseded) || errors.Is(err, context.Canceled):
		default:
			// A transfer that moved bytes resumes at once; one that did not backs off.
			if n > 0 {
				e.originFails = 0
			}
			e.originFails++
			e.originErr = err
			e.originRetryAt = e.clock.Now().Add(originBackoff.Delay(e.originFails))
			e.dl.chunkFailure("origin")
			e.log.Debug("origin request failed", "chunk", req.chunk, "bytes", n, "err", err)
		}
		return
	}
	p := e.peers[req.peer]
	if err == nil {
		e.dl.Fetched("peer", int(n))
		e.job.fromPeers.Add(int64(n))
		e.suppliers[req.peer] = true
		if p != nil {
			p.fails, p.busy = 0, 0
			if secs := e.clock.Since(req.start).Seconds(); secs > 0 {
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
			// Its upload slots are full: the longer it stays so, the longer it is left alone,
			// so a swarm of many askers does not poll its busiest holders.
			p.busy++
			p.busyUntil = e.clock.Now().Add(busyBackoff.Delay(p.busy))
		}
		var referred *chunk.BusyError
		if errors.As(err, &referred) {
			e.referred(req.chunk, referred.Others)
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

// referred follows a busy answer that named the peers a chunk was sent to just now: each
// is taken to hold it (a request that comes too early is answered "not held", which
// unmarks it) and is asked what it holds ahead of the other peers due. Those it does not
// know yet it starts tracking. Without this, the swarm learns of a chunk's new holders only
// as fast as its budgeted polls, and meanwhile keeps asking the first holders.
func (e *engine) referred(c int, ids []string) {
	for _, id := range ids {
		if p := e.peers[id]; p != nil {
			if c < len(p.have.Chunks) {
				p.have.Chunks[c] = true // a banned peer is left out of every snapshot
			}
			p.lastPoll = time.Time{}
			continue
		}
		e.admit(id)
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

// logStall says where a download that stopped making progress stands, for the operator: what
// is missing, who could supply it and what is asked.
func (e *engine) logStall(have []bool) {
	missing, held, leased := 0, 0, 0
	now := e.clock.Now()
	for c, h := range have {
		if h {
			continue
		}
		missing++
		for _, p := range e.peers {
			if c < len(p.have.Chunks) && p.have.Chunks[c] {
				held++
				break
			}
		}
		if until, ok := e.leasedElsewhere[c]; ok && now.Before(until) {
			leased++
		}
	}
	known := 0
	for _, p := range e.peers {
		if p.have.Chunks != nil {
			known++
		}
	}
	e.log.Warn("download stalled", "missing", missing, "missingHeldByPeers", held, "missingLeasedElsewhere", leased,
		"requests", len(e.reqs), "peers", len(e.peers), "peersAnswering", known, "originFails", e.originFails,
		"seeds", len(e.seeds), "seeding", e.seeding)
}
