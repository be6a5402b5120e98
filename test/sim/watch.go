package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/p2p"
)

// A node serves the watches of one blob from one loop (a watchHub) that makes each watch's
// decisions with p2p.WatchServer, the exchange's own, instead of a loop per watch as
// p2p.ServeWatch runs: a fleet of 10,000 nodes holds over a million watches, and a watcher
// waiting in a shallow frame costs about half the stack of one inside ServeWatch.

// watchHub serves every watch of one blob at one node. Each round it looks only at the
// watches due: new ones, those whose deadline (keepalive or end) came, and, once the blob
// changed, those whose last answer is timing.Every old. A change counts for a watch if it
// came after the watch's last look (epoch).
type watchHub struct {
	n    *node
	d    digest.Digest
	lat  time.Duration // one way, for each answer
	poke chan struct{} // a watch was added or cancelled

	mu     sync.Mutex
	count  int         // watches held
	added  []*watchSub // not looked at yet
	gone   []*watchSub // cancelled by their watchers
	epoch  uint64      // changes seen
	clean  bool        // some watch was looked at since the last change
	ready  map[*watchSub]struct{}
	early  subHeap // by change time: answered less than every ago
	late   subHeap // by deadline: every watch
	rounds uint64
}

// watchSub is one watch.
type watchSub struct {
	ctx    context.Context // the watcher's
	hub    *watchHub
	fn     func(chunk.Have)
	srv    *p2p.WatchServer
	seen   uint64         // the hub's epoch at the last look
	ver    int            // bumped at each look: heap entries of an older one are stale
	round  uint64         // the last round it was due in
	over   bool           // ended
	err    error          // why it ended, once over
	silent bool           // the node died: the watcher hears nothing more, then errUnreachable
	wg     sync.WaitGroup // answers on their way
	after  func()         // run in a goroutine of its own once the watch ended
}

// subEntry is one watch's place in a subHeap, as of its version ver.
type subEntry struct {
	at  time.Time
	s   *watchSub
	ver int
}

type subHeap []subEntry

func (h subHeap) Len() int           { return len(h) }
func (h subHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h subHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *subHeap) Push(x any)        { *h = append(*h, x.(subEntry)) }
func (h *subHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// top returns the earliest entry still current, dropping stale ones.
func (h *subHeap) top() (subEntry, bool) {
	for h.Len() > 0 {
		e := (*h)[0]
		if !e.s.over && e.ver == e.s.ver {
			return e, true
		}
		heap.Pop(h)
	}
	return subEntry{}, false
}

// watch adds a watch of d at n for a watcher whose context is ctx, calling fn with each
// answer and after once it ended, and returns it; nil when n serves p2p.DefaultMaxWatches
// already, as the exchange refuses a watch past its limit.
func (n *node) watch(ctx context.Context, d digest.Digest, every, lat time.Duration, fn func(chunk.Have), after func(*watchSub)) *watchSub {
	if n.watches.Add(1) > p2p.DefaultMaxWatches {
		n.watches.Add(-1)
		return nil
	}
	s := &watchSub{ctx: ctx, fn: fn, srv: p2p.NewWatchServer(p2p.WatchTiming{Every: every}, time.Now())}
	s.after = func() { after(s) }
	n.hubsMu.Lock()
	h := n.hubs[d]
	if h == nil {
		h = &watchHub{n: n, d: d, lat: lat, poke: make(chan struct{}, 1), ready: make(map[*watchSub]struct{})}
		if n.hubs == nil {
			n.hubs = make(map[digest.Digest]*watchHub)
		}
		n.hubs[d] = h
		go h.run()
	}
	s.hub = h
	h.mu.Lock()
	h.added = append(h.added, s)
	h.count++
	h.mu.Unlock()
	n.hubsMu.Unlock()
	h.wake()
	return s
}

func (h *watchHub) wake() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// cancel ends s for its watcher.
func (s *watchSub) cancel() {
	s.hub.mu.Lock()
	s.hub.gone = append(s.hub.gone, s)
	s.hub.mu.Unlock()
	s.hub.wake()
}

// run serves the hub's watches until none is left, as p2p.ServeWatch serves one: the
// change channel is taken before each round of looks, so no change falls between them.
func (h *watchHub) run() {
	notifier, _ := h.n.serve.(p2p.ChangeNotifier)
	changed := false
	for {
		var ch <-chan struct{}
		if notifier != nil {
			ch = notifier.Changes(h.d)
		}
		wait, listen, left := h.round(time.Now(), h.haves(), changed)
		if !left && h.close() {
			return
		}
		if !listen {
			// Every watch has a change to answer already: only its time can come.
			ch = nil
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !wait.IsZero() {
			t = time.NewTimer(time.Until(wait))
			timer = t.C
		}
		changed = false
		select {
		case <-ch:
			changed = true
		case <-timer:
		case <-h.poke:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// haves returns what the node holds of the blob, asked of its chunk server at most once
// each way (with and without the chunk list) for one round of looks.
func (h *watchHub) haves() func(bool) (chunk.Have, bool) {
	type answer struct {
		h    chunk.Have
		ok   bool
		done bool
	}
	var cached [2]answer
	return func(list bool) (chunk.Have, bool) {
		i := 0
		if list {
			i = 1
		}
		if !cached[i].done {
			h, ok := h.n.serve.Have(h.d, list)
			cached[i] = answer{h, ok, true}
		}
		return cached[i].h, cached[i].ok
	}
}

// round makes the decisions due at now (changed: the blob changed since the last round)
// and ends the watches that are over. It returns when the next is due if nothing changes
// (zero: none), whether a change would make one due, and whether any watch is left.
func (h *watchHub) round(now time.Time, have func(bool) (chunk.Have, bool), changed bool) (wait time.Time, listen, left bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rounds++
	var due []*watchSub
	add := func(s *watchSub) {
		if !s.over && s.round != h.rounds {
			s.round = h.rounds
			due = append(due, s)
		}
	}
	for _, s := range h.gone {
		if !s.over {
			h.end(s, context.Canceled)
		}
	}
	h.gone = h.gone[:0]
	if changed {
		h.epoch++
		h.clean = false
		for s := range h.ready {
			add(s)
		}
		clear(h.ready)
	}
	for _, s := range h.added {
		add(s)
	}
	h.added = h.added[:0]
	for {
		e, ok := h.early.top()
		if !ok || e.at.After(now) {
			break
		}
		heap.Pop(&h.early)
		if e.s.seen < h.epoch {
			add(e.s)
		} else {
			h.ready[e.s] = struct{}{}
		}
	}
	for {
		e, ok := h.late.top()
		if !ok || e.at.After(now) {
			break
		}
		heap.Pop(&h.late)
		add(e.s)
	}
	for _, s := range due {
		if h.n.dead.Load() {
			s.silent = true
			h.end(s, fmt.Errorf("peer %s: %w", h.n.id, errUnreachable))
			continue
		}
		if done, err := h.decide(s, now, have); done {
			h.end(s, err)
			continue
		}
		// Looked at: due again at its deadline, or at its change time if the blob changes.
		s.seen, h.clean = h.epoch, true
		s.ver++
		delete(h.ready, s)
		change, deadline := s.srv.Next()
		if change.After(now) {
			heap.Push(&h.early, subEntry{change, s, s.ver})
		} else {
			h.ready[s] = struct{}{}
		}
		heap.Push(&h.late, subEntry{deadline, s, s.ver})
	}
	if e, ok := h.early.top(); ok {
		wait = e.at
	}
	if e, ok := h.late.top(); ok && (wait.IsZero() || e.at.Before(wait)) {
		wait = e.at
	}
	return wait, h.clean, h.count > 0
}

// decide looks at the blob for s and sends the answer due, if any, after a link latency;
// it reports whether s is over, and why if not by its own end.
func (h *watchHub) decide(s *watchSub, now time.Time, have func(bool) (chunk.Have, bool)) (done bool, err error) {
	a, answer, done, err := s.srv.Look(now, have)
	if err != nil {
		return true, fmt.Errorf("watch %s: %w", h.d, err)
	}
	if answer {
		s.srv.Sent(a, now.Add(h.lat))
		// Each watcher gets its own copy, as one decoded from the wire: engines change theirs.
		a := chunk.Have{Size: a.Size, ChunkSize: a.ChunkSize, Chunks: slices.Clone(a.Chunks), Fetching: slices.Clone(a.Fetching), ChunkList: a.ChunkList}
		s.wg.Go(func() {
			if sleep(s.ctx, h.lat) == nil {
				s.fn(a)
			}
		})
	}
	return done, nil
}

// end ends s with err; callers hold h.mu.
func (h *watchHub) end(s *watchSub, err error) {
	s.over, s.err = true, err
	go s.after()
	delete(h.ready, s)
	h.count--
	h.n.watches.Add(-1)
}

// close removes the hub from its node if it still has no watch, and reports whether it did.
func (h *watchHub) close() bool {
	h.n.hubsMu.Lock()
	defer h.n.hubsMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count > 0 {
		return false
	}
	delete(h.n.hubs, h.d)
	return true
}

// serveWatch starts a watch of d at p for m, as member.WatchHave's exchange, calling fn with
// each answer and end with its end. No goroutine waits through the watch: at 10,000 nodes the
// watches are 1.5 million, and their stacks would be most of the simulator's memory.
func (m *member) serveWatch(ctx context.Context, p *node, peer string, d digest.Digest, fn func(chunk.Have), end func(error)) {
	var answers atomic.Int64
	var stop func() bool
	started := make(chan struct{}) // stop is set
	s := p.watch(ctx, d, m.w.cfg.WatchEvery, m.w.cfg.Latency, func(h chunk.Have) {
		answers.Add(1)
		m.n.stats.WatchAnswers.Add(1)
		fn(h)
	}, func(s *watchSub) {
		<-started
		stop()
		err := s.err
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		s.wg.Wait()
		if s.silent {
			_ = sleep(ctx, p2p.WatchSilence)
		}
		switch {
		case errors.Is(err, chunk.ErrNotHeld) && answers.Load() > 0:
			err = nil // gone since the last answer: the watcher learns it by asking again
		case err != nil:
			err = fmt.Errorf("watch %s at %s: %w", d, peer, err)
		}
		end(err)
	})
	if s == nil {
		go func() {
			if err := sleep(ctx, m.w.cfg.Latency); err != nil {
				end(err)
				return
			}
			end(fmt.Errorf("watch %s at %s: %w", d, peer, chunk.ErrBusy))
		}()
		return
	}
	stop = context.AfterFunc(ctx, s.cancel)
	close(started)
}
