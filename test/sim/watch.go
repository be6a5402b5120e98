package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/p2p"
)

// A node serves the watches of one blob from one loop (a watchHub) that makes each watch's
// decisions with p2p.WatchServer, the exchange's own, instead of a loop per watch as
// p2p.ServeWatch runs: a fleet of 10,000 nodes holds over a million watches, and a watcher
// waiting in a shallow frame costs a quarter of the stack of one inside ServeWatch.

// watchHub serves every watch of one blob at one node.
type watchHub struct {
	n     *node
	d     digest.Digest
	every time.Duration // p2p.WatchTiming.Every
	lat   time.Duration // one way, for each answer
	poke  chan struct{} // a watch was added or cancelled

	mu   sync.Mutex
	subs []*watchSub
}

// watchSub is one watch.
type watchSub struct {
	ctx    context.Context // the watcher's
	hub    *watchHub
	fn     func(chunk.Have)
	srv    *p2p.WatchServer
	dirty  bool // the blob may have changed since the last look (or none yet)
	gone   bool // the watcher cancelled it
	ended  chan struct{}
	err    error // why it ended, once ended is closed
	silent bool  // the node died: the watcher hears nothing more, then errUnreachable
	sent   int
	wg     sync.WaitGroup // answers on their way
}

// watch adds a watch of d at n for a watcher whose context is ctx, calling fn with each
// answer, and returns it.
func (n *node) watch(ctx context.Context, d digest.Digest, every, lat time.Duration, fn func(chunk.Have)) *watchSub {
	s := &watchSub{ctx: ctx, fn: fn, srv: p2p.NewWatchServer(p2p.WatchTiming{Every: every}, time.Now()), dirty: true, ended: make(chan struct{})}
	n.hubsMu.Lock()
	h := n.hubs[d]
	if h == nil {
		h = &watchHub{n: n, d: d, every: every, lat: lat, poke: make(chan struct{}, 1)}
		if n.hubs == nil {
			n.hubs = make(map[digest.Digest]*watchHub)
		}
		n.hubs[d] = h
		go h.run()
	}
	s.hub = h
	h.mu.Lock()
	h.subs = append(h.subs, s)
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
	s.gone = true
	s.hub.mu.Unlock()
	s.hub.wake()
}

// run serves the hub's watches until none is left, as p2p.ServeWatch serves one: the
// change channel is taken before each round of looks, so no change falls between them.
func (h *watchHub) run() {
	notifier, _ := h.n.serve.(p2p.ChangeNotifier)
	have := func(list bool) (chunk.Have, bool) { return h.n.serve.Have(h.d, list) }
	for {
		var changed <-chan struct{}
		if notifier != nil {
			changed = notifier.Changes(h.d)
		}
		now := time.Now()
		wait, anyClean, left := h.look(now, have)
		if !left && h.close() {
			return
		}
		if !anyClean {
			// Every watch has a change pending already: only its time can come.
			changed = nil
		}
		timer := time.NewTimer(time.Until(wait))
		select {
		case <-changed:
			h.mu.Lock()
			for _, s := range h.subs {
				s.dirty = true
			}
			h.mu.Unlock()
		case <-timer.C:
		case <-h.poke:
		}
		timer.Stop()
	}
}

// look makes the decisions due at now for each watch and ends those that are over. It
// returns when the next is due if nothing changes, whether some watch would take a change
// now, and whether any watch is left.
func (h *watchHub) look(now time.Time, have func(bool) (chunk.Have, bool)) (wait time.Time, anyClean, left bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := h.subs[:0]
	for _, s := range h.subs {
		if s.gone {
			h.end(s, context.Canceled)
			continue
		}
		change, deadline := s.srv.Next()
		if s.sent > 0 && now.Before(deadline) && (!s.dirty || now.Before(change)) {
			// Nothing to look at yet.
		} else {
			if h.n.dead.Load() {
				s.silent = true
				h.end(s, fmt.Errorf("peer %s: %w", h.n.id, errUnreachable))
				continue
			}
			if done, err := h.decide(s, now, have); done {
				h.end(s, err)
				continue
			}
			change, deadline = s.srv.Next()
		}
		kept = append(kept, s)
		next := deadline
		if s.dirty && change.Before(next) {
			next = change
		}
		if wait.IsZero() || next.Before(wait) {
			wait = next
		}
		anyClean = anyClean || !s.dirty
	}
	clear(h.subs[len(kept):])
	h.subs = kept
	return wait, anyClean, len(kept) > 0
}

// decide looks at the blob for s and sends the answer due, if any, after a link latency;
// it reports whether s is over, and why if not by its own end.
func (h *watchHub) decide(s *watchSub, now time.Time, have func(bool) (chunk.Have, bool)) (done bool, err error) {
	a, answer, done, err := s.srv.Look(now, have)
	s.dirty = false
	if err != nil {
		return true, fmt.Errorf("watch %s: %w", h.d, err)
	}
	if answer {
		s.sent++
		s.srv.Sent(a, now.Add(h.lat))
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
	s.err = err
	close(s.ended)
}

// close removes the hub from its node if it still has no watch, and reports whether it did.
func (h *watchHub) close() bool {
	h.n.hubsMu.Lock()
	defer h.n.hubsMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) > 0 {
		return false
	}
	delete(h.n.hubs, h.d)
	return true
}

// serveWatch runs a watch of d at p for m until it ends, as member.WatchHave's exchange.
func (m *member) serveWatch(ctx context.Context, p *node, peer string, d digest.Digest, fn func(chunk.Have)) error {
	answers := 0
	s := p.watch(ctx, d, m.w.cfg.WatchEvery, m.w.cfg.Latency, func(h chunk.Have) {
		answers++
		m.n.stats.WatchAnswers.Add(1)
		fn(h)
	})
	var err error
	select {
	case <-s.ended:
		err = s.err
	case <-ctx.Done():
		s.cancel()
		<-s.ended
		err = ctx.Err()
	}
	s.wg.Wait()
	if s.silent {
		_ = sleep(ctx, p2p.WatchSilence)
	}
	if errors.Is(err, chunk.ErrNotHeld) && answers > 0 {
		return nil // gone since the last answer: the watcher learns it by asking again
	}
	if err != nil {
		return fmt.Errorf("watch %s at %s: %w", d, peer, err)
	}
	return nil
}
