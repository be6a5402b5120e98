package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/internal/backoff"
)

// A WATCH pushes what a node holds of a blob to a peer downloading it, instead of the peer
// asking again every few hundred milliseconds: one stream carries every change for
// WatchLifetime, and a node sends nothing while nothing changes but a keepalive.
const (
	// WatchEvery is the least time between two answers on one watch: changes in between
	// go out together.
	WatchEvery = 250 * time.Millisecond
	// WatchKeepalive is the longest a watch is silent; WatchSilence how long a watcher
	// waits for the next answer before it takes the peer to be frozen.
	WatchKeepalive = 2 * time.Second
	WatchSilence   = 2*WatchKeepalive + time.Second
	// WatchLifetime is how long one watch lasts at most, and at most half the exchange's
	// timeout, which bounds every stream.
	WatchLifetime = 15 * time.Second
	// DefaultMaxWatches is how many watches a node serves at once, to all peers together;
	// each peer may have up to its MaxStreams besides its requests.
	DefaultMaxWatches = 4096
)

// WatchTiming is how a watch is served; zero fields take WatchEvery and WatchLifetime.
type WatchTiming struct {
	Every    time.Duration
	Lifetime time.Duration
}

func (t WatchTiming) withDefaults() WatchTiming {
	if t.Every <= 0 {
		t.Every = WatchEvery
	}
	if t.Lifetime <= 0 {
		t.Lifetime = WatchLifetime
	}
	return t
}

// ErrNoWatch reports that a peer ended a watch before its first answer: a node that does
// not know WATCH resets the stream. Its caller asks with HAVE instead.
var ErrNoWatch = errors.New("peer does not answer WATCH")

// ChangeNotifier may be implemented by a ChunkStore: Changes returns a channel that is
// closed once what Have reports of d may have changed since the call. A store without it
// is looked at again every WatchKeepalive.
type ChangeNotifier interface {
	Changes(d digest.Digest) <-chan struct{}
}

// WatchHave watches what peerID holds of d, calling fn with every answer, from the goroutine
// that called it, until the peer holds the blob whole, the watch ends after its lifetime, or
// ctx ends. It returns nil when the peer ended the watch, chunk.ErrNotHeld when it has
// nothing of d, chunk.ErrBusy when it serves too many watches, and ErrNoWatch, wrapped,
// when the stream failed before its first answer.
func (e *Exchange) WatchHave(ctx context.Context, peerID string, d digest.Digest, fn func(chunk.Have)) error {
	answers := 0
	err := e.requestStream(ctx, peerID, request{typ: msgWatch, digest: d}, func(s network.Stream, r byteReader) error {
		return readWatch(r, func(h chunk.Have) {
			answers++
			fn(h)
		}, func() error {
			// A frozen peer keeps its stream open: each answer has WatchSilence to come.
			return s.SetReadDeadline(time.Now().Add(WatchSilence))
		})
	})
	switch {
	case err == nil, errors.Is(err, chunk.ErrNotHeld), errors.Is(err, chunk.ErrBusy), ctx.Err() != nil:
	case answers == 0:
		err = fmt.Errorf("%w: %w", ErrNoWatch, err)
	}
	if err != nil {
		return fmt.Errorf("watch %s at %s: %w", d, peerID, err)
	}
	return nil
}

// readWatch reads a WATCH's answers, calling fn with each, until the server closes the
// stream. before is called before each answer is read.
func readWatch(r byteReader, fn func(chunk.Have), before func() error) error {
	var first chunk.Have
	for n := 0; ; n++ {
		if err := before(); err != nil {
			return err
		}
		if _, err := r.ReadByte(); err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return nil
			}
			return truncated("status", err)
		}
		if err := r.UnreadByte(); err != nil {
			return err
		}
		if err := decodeStatus(r); err != nil {
			return err
		}
		h, err := decodeHaveBody(r)
		if err != nil {
			return err
		}
		if n == 0 {
			first = h
		} else if h.Size != first.Size || h.ChunkSize != first.ChunkSize {
			return fmt.Errorf("%w: watch answer of size %d in chunks of %d after %d in chunks of %d",
				chunk.ErrProtocol, h.Size, h.ChunkSize, first.Size, first.ChunkSize)
		}
		fn(h)
		if !slices.Contains(h.Chunks, false) {
			return expectEOF(r)
		}
	}
}

// serveWatch answers a WATCH on s, within the peer's and the node's watch limits.
func (e *Exchange) serveWatch(ctx context.Context, s network.Stream, remote peer.ID, req request, store ChunkStore) error {
	e.mu.Lock()
	ok := e.watches < e.maxWatches && e.peerWatches[remote] < e.maxStreams
	if ok {
		// A watch takes none of the peer's request slots, but one of its watch slots.
		e.watches++
		e.peerWatches[remote]++
		e.perPeer[remote]--
	}
	e.mu.Unlock()
	if !ok {
		return refuse(s, statusBusy, errors.New("too many watches"))
	}
	defer func() {
		e.mu.Lock()
		e.watches--
		if e.peerWatches[remote]--; e.peerWatches[remote] <= 0 {
			delete(e.peerWatches, remote)
		}
		e.perPeer[remote]++
		e.mu.Unlock()
	}()
	w := bufio.NewWriter(s)
	sent := false
	err := ServeWatch(ctx, store, req.digest, WatchTiming{Lifetime: min(WatchLifetime, e.timeout/2)}, func(h chunk.Have) error {
		if err := checkHave(h); err != nil {
			return fmt.Errorf("%w: %w", errBadHave, err)
		}
		sent = true
		if err := w.WriteByte(statusOK); err != nil {
			return err
		}
		if err := writeHave(w, peersFor(s, remote, h)); err != nil {
			return err
		}
		return w.Flush()
	})
	switch {
	case errors.Is(err, chunk.ErrNotHeld) && !sent:
		return refuse(s, statusNotHeld, nil)
	case errors.Is(err, chunk.ErrNotHeld):
		// Evicted or failed since the last answer: the watcher learns it by asking again.
		return nil
	case errors.Is(err, errBadHave) && !sent:
		return refuse(s, statusError, err)
	}
	return err
}

var errBadHave = errors.New("store's answer cannot be sent")

// ServeWatch is a WATCH's server side, apart from the wire: it calls send with what store
// holds of d now, then again whenever that changes (at most every timing.Every), or when
// nothing did for WatchKeepalive; it returns nil after sending an answer with every chunk
// held, or once timing.Lifetime has passed, and an error wrapping chunk.ErrNotHeld when
// store has nothing of d (before the first answer, or since the last).
func ServeWatch(ctx context.Context, store ChunkStore, d digest.Digest, timing WatchTiming, send func(chunk.Have) error) error {
	notifier, _ := store.(ChangeNotifier)
	w := NewWatchServer(timing, time.Now())
	for {
		var changed <-chan struct{}
		if notifier != nil {
			changed = notifier.Changes(d)
		}
		h, answer, done, err := w.Look(time.Now(), func(list bool) (chunk.Have, bool) { return store.Have(d, list) })
		if err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
		if answer {
			if err := send(h); err != nil {
				return err
			}
			w.Sent(h, time.Now())
		}
		if done {
			return nil
		}
		// Changes within timing.Every of an answer wait for the next one.
		change, deadline := w.Next()
		if err := backoff.Sleep(ctx, time.Until(change)); err != nil {
			return err
		}
		next := time.NewTimer(time.Until(deadline))
		select {
		case <-changed:
		case <-next.C:
		case <-ctx.Done():
			next.Stop()
			return ctx.Err()
		}
		next.Stop()
	}
}

// A WatchServer makes one watch's decisions, as ServeWatch does, for a caller that runs
// the waiting itself (one loop serving many watches): Look at the blob each time it may
// have changed, no sooner than Next's change time, and at Next's deadline at the latest;
// after sending an answer Look gave, report it with Sent.
type WatchServer struct {
	timing   WatchTiming
	start    time.Time
	last     chunk.Have
	lastSent time.Time
}

// NewWatchServer starts a watch's decisions at now.
func NewWatchServer(timing WatchTiming, now time.Time) *WatchServer {
	return &WatchServer{timing: timing.withDefaults(), start: now}
}

// Look decides at now, given have (what the store holds of the blob, with its chunk list
// if list is set), whether an answer h is due and whether the watch is over once it has
// been sent. err wraps chunk.ErrNotHeld when the store has nothing of the blob.
func (w *WatchServer) Look(now time.Time, have func(list bool) (chunk.Have, bool)) (h chunk.Have, answer, done bool, err error) {
	h, ok := have(false)
	if !ok {
		return chunk.Have{}, false, true, chunk.ErrNotHeld
	}
	whole := !slices.Contains(h.Chunks, false)
	if whole {
		// The last answer carries the chunk list, as a HAVE of a complete blob does.
		if h, ok = have(true); !ok {
			return chunk.Have{}, false, true, chunk.ErrNotHeld
		}
	}
	answer = w.lastSent.IsZero() || whole || !sameHave(h, w.last) || now.Sub(w.lastSent) >= WatchKeepalive
	return h, answer, whole || now.Sub(w.start) >= w.timing.Lifetime, nil
}

// Sent records that answer h went out at now.
func (w *WatchServer) Sent(h chunk.Have, now time.Time) { w.last, w.lastSent = h, now }

// Next returns the earliest time a change may be answered, and the time of the next look
// if nothing changes: a keepalive, or the watch's end.
func (w *WatchServer) Next() (change, deadline time.Time) {
	return w.lastSent.Add(w.timing.Every), minTime(w.lastSent.Add(WatchKeepalive), w.start.Add(w.timing.Lifetime))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// sameHave reports whether a and b say the same of which chunks are held and fetched.
func sameHave(a, b chunk.Have) bool {
	return a.Size == b.Size && a.ChunkSize == b.ChunkSize && slices.Equal(a.Chunks, b.Chunks) &&
		slices.Equal(a.Fetching, b.Fetching)
}
