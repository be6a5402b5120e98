package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/tracker"
	trackerclient "github.com/shoal-dev/shoal/tracker/client"
)

var _ Announcer = (*Tracker)(nil)

// AddrBook keeps the addrs of peers learned outside the DHT so they can be dialled;
// p2p.Network is one.
type AddrBook interface {
	AddAddrs(peerID string, addrs []string)
}

// Options configure New.
type Options struct {
	// Client talks to the trackers; required. Close closes it.
	Client *trackerclient.Client
	// Peers receives the addrs of the members the trackers answer; required.
	Peers AddrBook
	// ChunkSize is the chunk size of the blobs the node holds.
	ChunkSize int64
	Logger    *slog.Logger
}

// Tracker is the node's side of its trackers: it announces the running
// downloads every tracker.AnnounceDownload (or as much longer as the trackers ask, which
// they do while many nodes download at once) and the held blobs every tracker.AnnounceHolding,
// a download's start, commit, failure or eviction at once, and keeps the members the
// trackers answer so downloads find each other without waiting for the DHT. Trackers are an
// aid only: when none answers, the node goes on with the DHT alone, and no client sees an
// error for it.
type Tracker struct {
	client *trackerclient.Client
	peers  AddrBook
	cs     int64
	log    *slog.Logger
	kick   chan struct{}
	flight singleflight.Group // announces of one download running now

	mu       sync.Mutex
	looping  bool                                // Run is announcing
	next     *pass                               // the pass that will carry what is pending, if anyone waits for it
	current  *pass                               // the pass under way, if any
	pending  map[digest.Digest]blobEvent         // to announce at the next pass
	running  map[digest.Digest]bool              // downloads announced as running
	answered map[digest.Digest]time.Time         // the last answer about each running download
	last     map[digest.Digest]tracker.BlobState // each running download as last announced
}

// pass is one announce of the running downloads: an announceNow of a blob it carries waits
// for it rather than sending one more request, so a download's start (its announce, its
// first lookup, its fetchers) costs the tracker one request, not three.
type pass struct {
	done  chan struct{} // closed when it is answered, or failed
	err   error
	blobs map[digest.Digest]bool
}

func newPass() *pass { return &pass{done: make(chan struct{})} }

// blobEvent is what happened to a blob that the trackers hear of at once.
type blobEvent int

const (
	blobStarted blobEvent = iota + 1
	blobCommitted
	blobGone
)

// New returns the announcer of o.Client's trackers; Run announces.
func New(o Options) *Tracker {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{
		client: o.Client, peers: o.Peers, cs: o.ChunkSize, log: log,
		kick:     make(chan struct{}, 1),
		pending:  make(map[digest.Digest]blobEvent),
		running:  make(map[digest.Digest]bool),
		answered: make(map[digest.Digest]time.Time),
		last:     make(map[digest.Digest]tracker.BlobState),
	}
}

// Close stops the client's lease renewals and background requests.
func (t *Tracker) Close() { t.client.Close() }

// Started, Committed and Gone queue what happened to d for the next announce.
func (t *Tracker) Started(d digest.Digest)   { t.event(d, blobStarted) }
func (t *Tracker) Committed(d digest.Digest) { t.event(d, blobCommitted) }
func (t *Tracker) Gone(d digest.Digest)      { t.event(d, blobGone) }

// event queues e about d for the next announce, which it starts at once; it never blocks.
func (t *Tracker) event(d digest.Digest, e blobEvent) {
	t.mu.Lock()
	if e != blobStarted || t.pending[d] == 0 {
		t.pending[d] = e
	}
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Run announces to the trackers what held holds and running fetches, until ctx ends.
func (t *Tracker) Run(ctx context.Context, held Held, running Running) error {
	downloads := time.NewTicker(tracker.AnnounceDownload)
	defer downloads.Stop()
	holding := time.NewTicker(tracker.AnnounceHolding)
	defer holding.Stop()
	// After a failed announce (the trackers down, or one just restarted and busy) the held
	// blobs are announced again soon rather than at the next tick, until a tracker takes
	// them: a tracker that comes back is not left without the holders for a minute, nor
	// without the commits and evictions the failed announce carried.
	var retry <-chan time.Time
	announceHeld := func() {
		retry = nil
		if !t.announceHeld(ctx, held) {
			retry = time.After(heldRetry)
		}
	}
	announceRunning := func() {
		if !t.announceRunning(ctx, held, running) && retry == nil {
			retry = time.After(heldRetry)
		}
	}
	t.mu.Lock()
	t.looping = true
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.looping = false
		t.mu.Unlock()
	}()
	announceHeld()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.kick:
			announceRunning()
			downloads.Reset(t.client.Interval())
		case <-downloads.C:
			announceRunning()
			downloads.Reset(t.client.Interval())
		case <-holding.C:
			announceHeld()
		case <-retry:
			announceHeld()
		case <-t.client.Restarted():
			announceHeld()
			announceRunning()
		}
	}
}

// heldRetry is how soon a failed announce of the held blobs is tried again.
const heldRetry = 3 * time.Second

// state is d's BlobState from a running download's status.
func (t *Tracker) state(s swarm.DownloadStatus) tracker.BlobState {
	b := tracker.BlobState{Digest: s.Digest, Done: s.Done, FromOrigin: s.FromOrigin, FromPeers: s.FromPeers}
	if s.Size >= 0 {
		b.Size, b.ChunkSize = s.Size, s.ChunkSize
	}
	return b
}

// holding is d's BlobState when held holds it, or false.
func (t *Tracker) holding(held Held, d digest.Digest) (tracker.BlobState, bool) {
	info, err := held.Stat(d)
	if err != nil {
		return tracker.BlobState{}, false
	}
	return t.complete(info), true
}

// complete is the BlobState of a blob the store holds.
func (t *Tracker) complete(info store.Info) tracker.BlobState {
	return tracker.BlobState{Digest: info.Digest, Size: info.Size, ChunkSize: t.cs, Done: info.Size, Complete: true}
}

// announceRunning announces the running downloads with their progress, and what happened
// since the last pass: downloads started, blobs committed, evicted, or whose download ended
// without a commit (gone). It reports false when there was something to announce and no
// tracker took it.
func (t *Tracker) announceRunning(ctx context.Context, held Held, running Running) bool {
	now := make(map[digest.Digest]tracker.BlobState)
	for _, s := range running.Downloads() {
		now[s.Digest] = t.state(s)
	}
	t.mu.Lock()
	pending := t.pending
	t.pending = make(map[digest.Digest]blobEvent)
	var blobs []tracker.BlobState
	for d, e := range pending {
		if _, ok := now[d]; ok && e != blobGone {
			continue // announced with its progress below
		}
		switch e {
		case blobStarted:
			blobs = append(blobs, tracker.BlobState{Digest: d})
			t.running[d] = true
			continue
		case blobCommitted:
			if b, ok := t.holding(held, d); ok {
				blobs = append(blobs, b)
			}
		case blobGone:
			if _, ok := now[d]; ok {
				continue // evicted, yet downloading again already
			}
			blobs = append(blobs, tracker.BlobState{Digest: d, Gone: true})
		}
		t.stopped(d)
	}
	for d := range t.running {
		if _, ok := now[d]; ok || pending[d] != 0 {
			continue
		}
		// The download ended: committed (its commit may not have been queued yet) or failed.
		if b, ok := t.holding(held, d); ok {
			blobs = append(blobs, b)
		} else {
			blobs = append(blobs, tracker.BlobState{Digest: d, Gone: true})
		}
		t.stopped(d)
	}
	for d, b := range now {
		t.running[d] = true
		t.last[d] = b
		blobs = append(blobs, b)
	}
	p := t.next
	if p == nil {
		p = newPass()
	}
	t.next = nil
	p.blobs = make(map[digest.Digest]bool, len(blobs))
	for _, b := range blobs {
		p.blobs[b.Digest] = true
	}
	t.current = p
	t.mu.Unlock()
	for _, b := range blobs {
		if b.Complete || b.Gone {
			t.client.Forget(b.Digest)
		}
	}
	_, err := t.announce(ctx, blobs) // counted in the metrics; the DHT carries on
	t.mu.Lock()
	p.err = err
	close(p.done)
	t.current = nil
	t.mu.Unlock()
	return err == nil
}

// stopped forgets a download that is no longer running. Callers hold mu.
func (t *Tracker) stopped(d digest.Digest) {
	delete(t.running, d)
	delete(t.answered, d)
	delete(t.last, d)
}

// announceHeld announces every blob held holds; it reports whether a tracker took it (or
// there was nothing to announce).
func (t *Tracker) announceHeld(ctx context.Context, held Held) bool {
	var blobs []tracker.BlobState
	held.Walk(func(info store.Info) bool {
		blobs = append(blobs, t.complete(info))
		return ctx.Err() == nil
	})
	_, err := t.announce(ctx, blobs)
	return err == nil
}

// announce sends blobs to the trackers and takes in the members they answer.
func (t *Tracker) announce(ctx context.Context, blobs []tracker.BlobState) (map[digest.Digest][]tracker.Member, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	swarms, err := t.client.Announce(ctx, blobs)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	t.mu.Lock()
	for d := range swarms {
		if t.running[d] {
			t.answered[d] = at
		}
	}
	t.mu.Unlock()
	for _, members := range swarms {
		for _, m := range members {
			t.peers.AddAddrs(m.Peer, m.Addrs)
		}
	}
	return swarms, nil
}

// announceNow announces the download of d alone, with its progress as of the last pass,
// unless another announce of it is under way (then it waits for that one), and returns the
// members of its swarm.
func (t *Tracker) announceNow(ctx context.Context, d digest.Digest) ([]tracker.Member, error) {
	t.mu.Lock()
	var p *pass
	switch {
	case !t.looping:
	case t.current != nil && t.current.blobs[d]:
		p = t.current
	case t.pending[d] == blobStarted:
		// Run announces it at once: wait for that.
		if t.next == nil {
			t.next = newPass()
		}
		p = t.next
	}
	t.mu.Unlock()
	if p != nil {
		select {
		case <-p.done:
			return t.client.Members(d), p.err
		case <-ctx.Done():
			return t.client.Members(d), ctx.Err()
		}
	}
	ch := t.flight.DoChan(d.String(), func() (any, error) {
		t.mu.Lock()
		t.running[d] = true
		b, ok := t.last[d]
		t.mu.Unlock()
		if !ok {
			b = tracker.BlobState{Digest: d}
		}
		swarms, err := t.announce(ctx, []tracker.BlobState{b}) // on failure: nobody, the DHT carries on
		return swarms[d], err
	})
	select {
	case r := <-ch:
		members, _ := r.Val.([]tracker.Member)
		return members, r.Err
	case <-ctx.Done():
		return t.client.Members(d), ctx.Err()
	}
}

// Fetchers returns the origin fetchers the trackers name for d's swarm (see
// tracker.Swarm.Fetchers), announcing the download now if no tracker has answered about it
// yet. With every tracker unreachable it returns none and no error: each node then fetches
// its share, as in a fleet whose trackers are down. A tracker that is only slow to answer
// is an error, and the download asks again: a loaded tracker is not a dead one.
func (t *Tracker) Fetchers(ctx context.Context, d digest.Digest) ([]string, error) {
	if f, ok := t.client.Fetchers(d); ok {
		return f, nil
	}
	_, err := t.announceNow(ctx, d)
	if f, ok := t.client.Fetchers(d); ok {
		return f, nil
	}
	if errors.Is(err, trackerclient.ErrUnavailable) && !errors.Is(err, trackerclient.ErrSlow) {
		return []string{}, nil
	}
	if err == nil {
		err = fmt.Errorf("no tracker answered about %s", d)
	}
	return nil, err
}

// fresh reports whether the trackers answered about d's download within the last announce
// period.
func (t *Tracker) fresh(d digest.Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.answered[d]
	return ok && time.Since(at) < t.client.Interval()
}

// Providers merges the trackers' members of d's swarm with dht's answer, members first.
// fresh asks the trackers now unless they answered about d within the last announce period:
// that answer is what makes a download's start fast, while the DHT lookup runs alongside.
func (t *Tracker) Providers(ctx context.Context, d digest.Digest, fresh bool, dht func(context.Context) ([]string, error)) ([]string, error) {
	var members []tracker.Member
	done := make(chan struct{})
	go func() {
		defer close(done)
		if fresh && !t.fresh(d) {
			members, _ = t.announceNow(ctx, d)
			return
		}
		members = t.client.Members(d)
	}()
	ids, err := dht(ctx)
	<-done
	if len(members) == 0 {
		return ids, err
	}
	out := make([]string, 0, len(members)+len(ids))
	seen := make(map[string]bool, len(members)+len(ids))
	for _, m := range members {
		seen[m.Peer] = true
		out = append(out, m.Peer)
	}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// Bootstrap returns the peers the trackers give to join the fleet through.
func (t *Tracker) Bootstrap(ctx context.Context) ([]string, error) { return t.client.Bootstrap(ctx) }

// Lease asks the trackers for the lease on a chunk; see the tracker client's Lease. A refusal
// names the holder when the tracker does.
func (t *Tracker) Lease(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (func(bool), string, bool, error) {
	t.mu.Lock()
	_, announced := t.answered[d]
	t.mu.Unlock()
	if !announced {
		// The tracker leases only to members of the swarm.
		_, _ = t.announceNow(ctx, d) // a failure shows in the lease request
	}
	lease, holder, err := t.client.Lease(ctx, d, size, chunkSize, index)
	if errors.Is(err, trackerclient.ErrUnavailable) && !errors.Is(err, trackerclient.ErrSlow) {
		// Every tracker is unreachable. One that is only slow (ErrSlow) is left to the
		// download's patience: it asks again, and fetches without a lease only later.
		return nil, "", false, fmt.Errorf("%w: %w", swarm.ErrNoTracker, err)
	}
	if err != nil {
		return nil, "", false, err
	}
	if lease == nil {
		return nil, holder, false, nil
	}
	return lease.Release, "", true, nil
}
