package announce

import (
	"context"
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
// downloads every tracker.AnnounceDownload and the held blobs every tracker.AnnounceHolding,
// a download's start, commit, failure or eviction at once, and keeps the members the
// trackers answer so downloads find each other without waiting for the DHT. Trackers are an
// aid only: when none answers, the node goes on with the DHT alone, and no client sees an
// error for it.
type Tracker struct {
	client *trackerclient.Client
	peers  AddrBook
	dl     *swarm.Downloader // set by Follow
	store  *store.Store      // set by Follow
	cs     int64
	log    *slog.Logger
	kick   chan struct{}
	flight singleflight.Group // announces of one download running now

	mu       sync.Mutex
	pending  map[digest.Digest]blobEvent // to announce at the next pass
	running  map[digest.Digest]bool      // downloads announced as running
	answered map[digest.Digest]time.Time // the last answer about each running download
}

// blobEvent is what happened to a blob that the trackers hear of at once.
type blobEvent int

const (
	blobStarted blobEvent = iota + 1
	blobCommitted
	blobGone
)

// New returns the announcer of o.Client's trackers; call Follow, then Run.
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
	}
}

// Follow sets the store and the downloader whose blobs are announced.
func (t *Tracker) Follow(s *store.Store, dl *swarm.Downloader) { t.store, t.dl = s, dl }

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

// Run announces to the trackers until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	downloads := time.NewTicker(tracker.AnnounceDownload)
	defer downloads.Stop()
	holding := time.NewTicker(tracker.AnnounceHolding)
	defer holding.Stop()
	// After a failed announce (the trackers down, or one just restarted and busy) the held
	// blobs are announced again soon rather than at the next tick, until a tracker takes
	// them: a tracker that comes back is not left without the holders for a minute, nor
	// without the commits and evictions the failed announce carried.
	var retry <-chan time.Time
	held := func() {
		retry = nil
		if !t.announceHeld(ctx) {
			retry = time.After(heldRetry)
		}
	}
	running := func() {
		if !t.announceRunning(ctx) && retry == nil {
			retry = time.After(heldRetry)
		}
	}
	held()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.kick:
			running()
		case <-downloads.C:
			running()
		case <-holding.C:
			held()
		case <-retry:
			held()
		case <-t.client.Restarted():
			held()
			running()
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

// held is d's BlobState when the store holds it, or false.
func (t *Tracker) held(d digest.Digest) (tracker.BlobState, bool) {
	info, err := t.store.Stat(d)
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
func (t *Tracker) announceRunning(ctx context.Context) bool {
	now := make(map[digest.Digest]tracker.BlobState)
	for _, s := range t.dl.Downloads() {
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
			if b, ok := t.held(d); ok {
				blobs = append(blobs, b)
			}
		case blobGone:
			if _, ok := now[d]; ok {
				continue // evicted, yet downloading again already
			}
			blobs = append(blobs, tracker.BlobState{Digest: d, Gone: true})
		}
		delete(t.running, d)
		delete(t.answered, d)
	}
	for d := range t.running {
		if _, ok := now[d]; ok || pending[d] != 0 {
			continue
		}
		// The download ended: committed (its commit may not have been queued yet) or failed.
		if b, ok := t.held(d); ok {
			blobs = append(blobs, b)
		} else {
			blobs = append(blobs, tracker.BlobState{Digest: d, Gone: true})
		}
		delete(t.running, d)
		delete(t.answered, d)
	}
	for d, b := range now {
		t.running[d] = true
		blobs = append(blobs, b)
	}
	t.mu.Unlock()
	for _, b := range blobs {
		if b.Complete || b.Gone {
			t.client.Forget(b.Digest)
		}
	}
	_, err := t.announce(ctx, blobs) // counted in the metrics; the DHT carries on
	return err == nil
}

// announceHeld announces every blob in the store; it reports whether a tracker took it (or
// there was nothing to announce).
func (t *Tracker) announceHeld(ctx context.Context) bool {
	var blobs []tracker.BlobState
	t.store.Walk(func(info store.Info) bool {
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

// announceNow announces the download of d alone, unless another announce of it is under
// way (then it waits for that one), and returns the members of its swarm.
func (t *Tracker) announceNow(ctx context.Context, d digest.Digest) []tracker.Member {
	ch := t.flight.DoChan(d.String(), func() (any, error) {
		t.mu.Lock()
		t.running[d] = true
		t.mu.Unlock()
		b := tracker.BlobState{Digest: d}
		if s, ok := t.dl.Status(d); ok {
			b = t.state(s)
		}
		swarms, _ := t.announce(ctx, []tracker.BlobState{b}) // on failure: nobody, the DHT carries on
		return swarms[d], nil
	})
	select {
	case r := <-ch:
		members, _ := r.Val.([]tracker.Member)
		return members
	case <-ctx.Done():
		return t.client.Members(d)
	}
}

// fresh reports whether the trackers answered about d's download within the last announce
// period.
func (t *Tracker) fresh(d digest.Digest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.answered[d]
	return ok && time.Since(at) < tracker.AnnounceDownload
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
			members = t.announceNow(ctx, d)
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
// naming the holder hints the download to it.
func (t *Tracker) Lease(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (func(bool), bool, error) {
	t.mu.Lock()
	_, announced := t.answered[d]
	t.mu.Unlock()
	if !announced {
		// The tracker leases only to members of the swarm.
		t.announceNow(ctx, d)
	}
	lease, holder, err := t.client.Lease(ctx, d, size, chunkSize, index)
	if err != nil {
		return nil, false, err
	}
	if lease == nil {
		if holder != "" {
			t.dl.Hint(holder, d)
		}
		return nil, false, nil
	}
	return lease.Release, true, nil
}
