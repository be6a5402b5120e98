package swarm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/shoal-dev/shoal/node/store"
)

// This file is the engine's life: discovery, then the loop that owns every piece of its
// state, then verification and commit.

// engine runs one download: it finds holders, keeps their bitmaps fresh, asks the policy for
// the next requests and carries them out, until every chunk is written. Its state belongs to
// the goroutine running run; the goroutines it starts report through events.
type engine struct {
	dl     *Downloader
	job    *Download
	log    *slog.Logger
	clock  clock.Clock
	fleet  Fleet // nil: origin only
	cs     int64
	policy Policy

	events    chan report
	running   int // goroutines that will still send their last report
	peers     map[string]*peerState
	sorted    []*peerState // peers by ID, nil when it must be made again (peerList)
	reqs      map[*chunkReq]struct{}
	nextID    uint64
	finding   bool
	findFail  bool // the last discovery lookup failed and found no one (see lookupPatience)
	lastFind  time.Time
	findWait  time.Duration // between lookups: findEvery, longer while they find no one new
	progress  time.Time     // when a byte last arrived
	written   int64         // bytes written when last looked
	suppliers map[string]bool

	// Discovery: the origin's answer on the size once in, and the HAVE requests still out.
	head    *headDone
	probing int

	originFails   int
	originErr     error
	originRetryAt time.Time
	// originAnswered is set once the origin answered one of this download's requests: until
	// then only one is in flight, so the first (a waiting client's) is not slowed by others.
	originAnswered bool

	// leaser, when the fleet has a tracker, hands out origin leases; leasedElsewhere holds the
	// chunks whose lease another node had when last asked, until when to leave them to it.
	leaser          OriginLeaser
	leasedElsewhere map[int]time.Time
	// leaseFailSince is when lease requests began to fail in a row (zero: the last one was
	// answered).
	leaseFailSince time.Time

	// seeder names the blob's seeds (with trackers, their fetchers): once known, seeds holds
	// them and seeding says this node is one; they are looked up again every seedsRecheck
	// (the answer changes as a swarm's first members join, or when a seed leaves).
	// seedsKnown is set by the first lookup's end, even a failed one (which is tried again);
	// seedsSince is when the first began, seedsAt when the seeds last changed; seedsLooking
	// is set while a lookup (or its retry) is pending.
	seeder       Seeder
	watcher      Watcher // nil: peers are polled
	seeds        []string
	seedsKnown   bool
	seeding      bool
	seedsLooking bool
	seedsSince   time.Time
	seedsAt      time.Time
	seedsChecked time.Time // when the last lookup ended
}

func newEngine(dl *Downloader, job *Download, log *slog.Logger) *engine {
	e := &engine{
		dl:        dl,
		job:       job,
		log:       log,
		clock:     dl.clock,
		fleet:     dl.opts.Fleet,
		cs:        dl.opts.ChunkSize,
		policy:    dl.opts.Policy,
		events:    make(chan report),
		peers:     make(map[string]*peerState),
		reqs:      make(map[*chunkReq]struct{}),
		suppliers: make(map[string]bool),
		findWait:  findEvery,

		leasedElsewhere: make(map[int]time.Time),
	}
	if l, ok := e.fleet.(OriginLeaser); ok {
		e.leaser = l
	}
	if sd, ok := e.fleet.(Seeder); ok {
		e.seeder = sd
	}
	if w, ok := e.fleet.(Watcher); ok {
		e.watcher = w
	}
	return e
}

// spawn runs fn in a goroutine whose result is its last report to the engine. fn does I/O
// only: it touches no state of the engine's.
func (e *engine) spawn(fn func() event) {
	e.running++
	go func() { e.events <- report{ev: fn(), last: true} }()
}

// notify reports ev from a goroutine the engine started, which goes on.
func (e *engine) notify(ev event) {
	e.events <- report{ev: ev}
}

// receive applies one report.
func (e *engine) receive(ctx context.Context, r report) {
	if r.last {
		e.running--
	}
	r.ev.apply(ctx, e)
}

// await applies events until done reports true, timeout fires (nil: never) or ctx ends.
func (e *engine) await(ctx context.Context, done func() bool, timeout <-chan time.Time) error {
	for !done() {
		select {
		case r := <-e.events:
			e.receive(ctx, r)
		case <-timeout:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// drain waits for every spawned goroutine; the caller has cancelled their context. Of what
// they report only the requests' ends matter now: each gives back what its request held.
func (e *engine) drain() {
	for e.running > 0 {
		r := <-e.events
		if r.last {
			e.running--
		}
		if done, ok := r.ev.(requestDone); ok {
			e.finishRequest(done.req, done.n, done.err)
		}
	}
}

// run fetches, verifies and commits one blob.
func (e *engine) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		e.drain()
	}()
	d := e.job.digest
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
		e.job.startCommitted(blob)
		return nil
	}
	if err != nil {
		return fmt.Errorf("create partial %s: %w", d, err)
	}
	e.job.start(partial)

	// The verifier follows the written bytes in order; it ends with the download.
	abort := make(chan struct{})
	verified := make(chan error, 1)
	listSize := int64(0)
	if e.fleet != nil {
		listSize = e.cs
	}
	go func() { verified <- e.job.verify(abort, listSize) }()

	if err := e.loop(ctx); err != nil {
		// Readers learn why before the file goes away under them.
		e.job.fail(err)
		close(abort)
		// The verifier stops at the abort, most often with the download's own error.
		if verr := <-verified; verr != nil && !errors.Is(verr, err) && !errors.Is(verr, errReaderClosed) {
			e.log.Debug("verifier stopped", "err", verr)
		}
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
		e.job.fail(err)
		if aerr := partial.Abort(); aerr != nil {
			e.log.Warn("discard partial", "err", aerr)
		}
		return err
	}
	// Clients may finish now; making the file durable need not hold them up.
	e.job.markVerified()
	blob, err := partial.Commit("")
	if err != nil {
		err = fmt.Errorf("commit %s: %w", d, err)
		e.job.fail(err)
		if aerr := partial.Abort(); aerr != nil {
			e.log.Warn("discard partial", "err", aerr)
		}
		return err
	}
	if list := e.job.chunkList(); list != nil && e.dl.opts.OnChunkList != nil {
		e.dl.opts.OnChunkList(d, e.cs, list)
	}
	e.job.commit(blob)
	if e.dl.opts.OnCommit != nil {
		e.dl.opts.OnCommit(d)
	}
	return nil
}

// loop runs requests until every chunk is written.
func (e *engine) loop(ctx context.Context) error {
	e.progress = e.clock.Now()
	for id, p := range e.peers {
		if p.have.Chunks != nil && !e.usable(p.have, e.job.size) {
			e.log.Debug("peer disagrees on the blob's size, ignored", "peer", id, "size", p.have.Size)
			e.dropPeer(id)
		}
	}
	// This node's own order of origin fetches, so nodes fetching at once rarely collide.
	e.policy.Rank = rand.Perm(len(e.job.haveChunks()))
	e.policy.WholeAtOnce = int(max(1, wholeInFlight/e.cs))
	tick := e.clock.Ticker(tickEvery)
	defer tick.Stop()
	// The policy is asked at once when a request ends or a reader waits; news of the peers
	// (answers, lookups, hints) waits for the next tick, so a burst of answers costs one
	// decision, not one each; and with no news, the rules that go by time alone are applied
	// every rescheduleEvery.
	now, dirty, last := true, false, time.Time{}
	for {
		have := e.job.haveChunks()
		if !slices.Contains(have, false) {
			return nil
		}
		if now {
			if err := e.schedule(ctx, have); err != nil {
				return err
			}
			now, dirty, last = false, false, e.clock.Now()
		}
		select {
		case r := <-e.events:
			e.receive(ctx, r)
			if urgent(r.ev) {
				now = true
			} else {
				dirty = true
			}
		case id := <-e.job.hints:
			hint{peer: id}.apply(ctx, e)
			dirty = true
		case <-e.job.wake:
			now = true
		case <-tick.C:
			e.maintain(ctx)
			now = dirty || e.clock.Since(last) >= rescheduleEvery
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pollDue polls the peers still downloading whose last answer is pollEvery old, oldest
// first (peers never asked come first), as far as the node's budget allows: however large
// the swarm, the node sends at most pollBudget HAVEs a second over all its downloads, and
// one a seedPollEvery to each of a blob's few seeds.
func (e *engine) pollDue(ctx context.Context, now time.Time) {
	// Peers past due beyond what the budget allows now wait for the next tick, so they are
	// not even listed when it allows none: this runs at every tick of every download.
	budget := int(e.dl.polls.TokensAt(now))
	var due []*peerState
	for _, p := range e.peerList() {
		switch {
		case p.polling || p.watching || p.complete:
		case p.seed:
			// Outside the budget: while the seeds answer, the others leave the origin to
			// them, so they must be heard from every seedPollEvery; and a seed splits the
			// origin's work with the other seeds by what they fetch, so it asks them as
			// often as any peer.
			// One whose watches are full is watched by most of the fleet, and polled by
			// the rest less often: enough to hear it within seedLive.
			every := seedPollEvery
			switch {
			case e.seeding:
				every = pollEvery
			case now.Before(p.watchBusy):
				every = seedBusyPollEvery
			}
			if now.Sub(p.lastPoll) >= every {
				e.ask(ctx, p)
			}
		case budget > 0 && now.Sub(p.lastPoll) >= pollEvery:
			due = append(due, p)
		}
	}
	if len(due) > budget {
		slices.SortFunc(due, func(a, b *peerState) int { return cmp.Or(a.lastPoll.Compare(b.lastPoll), cmp.Compare(a.id, b.id)) })
	}
	for _, p := range due {
		if !e.dl.polls.AllowN(now, 1) {
			return
		}
		e.ask(ctx, p)
	}
}

// maintain polls peers still downloading, looks for new holders now and then, and gives up
// on a download in which nothing arrives any more.
func (e *engine) maintain(ctx context.Context) {
	now := e.clock.Now()
	if written := e.job.written(); written != e.written {
		e.written = written
		e.progress = now
	}
	e.pollDue(ctx, now)
	if e.seeds != nil && !e.seedsLooking && now.Sub(e.seedsChecked) >= seedsRecheck {
		e.findSeeds(ctx, 0)
	}
	if e.fleet != nil && !e.finding && now.Sub(e.lastFind) >= e.findWait && e.fleet.Connected() {
		e.finding = true
		e.spawn(func() event {
			found, err := e.fleet.FindProviders(ctx, e.job.digest, true)
			if err != nil && ctx.Err() == nil {
				e.log.Debug("lookup failed", "err", err)
			}
			return lookupDone{found: found}
		})
	}
}
