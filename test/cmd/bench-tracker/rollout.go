package main

import (
	"container/heap"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/tracker"
	"github.com/shoal-dev/shoal/tracker/client"
)

// The image each step rolls out: 1 GiB in 4 layers, 256 chunks of 4 MiB, as in the
// simulator's rollouts.
const (
	layers        = 4
	chunkSize     = 4 << 20
	layerBytes    = 256 << 20
	chunksPerBlob = layerBytes / chunkSize
	imageChunks   = layers * chunksPerBlob
)

// How one node pulls, in timings that give about the simulator's per-node request rates
// (20-25 lease requests and 1.3 announces per node-second while pulling): a node fetches
// fetchSlots chunks at a time, each taking fetchTime from the origin (under a lease) or from
// a peer that has it; a chunk leased to a node still fetching it is left to that node for
// leaseRecheck (as node/swarm does) while the slot asks for another; a request that failed
// is tried again after retryWait.
const (
	fetchSlots   = 4
	fetchTime    = 200 * time.Millisecond
	leaseRecheck = time.Second
	retryWait    = time.Second
)

// identity is one node: its Ed25519 key and its own HTTP transport, kept for the whole run
// (a node keeps its connections to the trackers).
type identity struct {
	signer    *p2p.Signer
	addrs     []string
	transport *timed
}

func newIdentities(n int, m *meter) ([]*identity, error) {
	out := make([]*identity, n)
	for i := range out {
		s, err := p2p.GenerateSigner(rand.Reader)
		if err != nil {
			return nil, err
		}
		out[i] = &identity{
			signer:    s,
			addrs:     []string{"/ip4/127.0.0.1/tcp/5091/p2p/" + s.ID()},
			transport: m.transport().(*timed),
		}
	}
	return out, nil
}

// client is a node's tracker client, built as the node builds it but for its transport and,
// unless checkMembers, the check of the members the trackers answer: the node parses every
// member's peer ID and multiaddrs (p2p.PeerAddrs), which would take the load generator
// more CPU than the trackers' work takes them, and changes no request.
func (id *identity) client(urls []string, checkMembers bool) (*client.Client, error) {
	peerAddrs := trustAddrs
	if checkMembers {
		peerAddrs = p2p.PeerAddrs
	}
	return client.New(client.Options{
		URLs:       urls,
		Signer:     id.signer,
		PeerAddrs:  peerAddrs,
		Addrs:      func() []string { return id.addrs },
		HTTPClient: &http.Client{Transport: id.transport},
	})
}

// trustAddrs takes a member as the trackers name it; they name only peers that signed.
func trustAddrs(id string, addrs []string) ([]string, error) {
	if id == "" {
		return nil, errors.New("no peer ID")
	}
	return addrs, nil
}

// image is the blobs of one rollout.
type image [layers]digest.Digest

func newImage(name string) image {
	var im image
	for i := range im {
		im[i] = digest.FromString(fmt.Sprintf("shoal bench-tracker %s layer %d", name, i))
	}
	return im
}

// puller is one identity pulling the image. The rollout's lock guards it.
type puller struct {
	id     *identity
	client *client.Client
	todo   []int // chunks (blob*chunksPerBlob + index) to ask for, the next last
	fetch  int   // chunks being asked for or fetched
	parked int   // chunks left to the node leasing them, for leaseRecheck
	done   [layers]int
	origin [layers]int // chunks of each blob fetched from the origin
	leases map[int]*client.Lease

	started  time.Time
	ended    time.Time // when the trackers took the announce of the whole image
	requests int       // operations made, for the rate of one pulling node

	finalQueued bool // the announce of the whole image is due
	finished    bool // that announce was taken
	// What the trackers were last told, for the check of their state.
	announcedAt time.Time
	announced   [layers]bool // complete
}

func (p *puller) states(im image) []tracker.BlobState {
	out := make([]tracker.BlobState, layers)
	for i := range out {
		out[i] = tracker.BlobState{
			Digest: im[i], Size: layerBytes, ChunkSize: chunkSize,
			Done:       int64(p.done[i]) * chunkSize,
			Complete:   p.done[i] == chunksPerBlob,
			FromOrigin: int64(p.origin[i]) * chunkSize,
			FromPeers:  int64(p.done[i]-p.origin[i]) * chunkSize,
		}
	}
	return out
}

func (p *puller) complete() bool {
	for _, d := range p.done {
		if d < chunksPerBlob {
			return false
		}
	}
	return true
}

// What a due event does: a request (announce, lease, release), or without a request a
// chunk arriving from a peer or a chunk left to another node to ask for again.
type eventKind int

const (
	evAnnounce eventKind = iota
	evLease
	evRelease
	evFetched
	evRecheck
)

type event struct {
	at    time.Time
	kind  eventKind
	p     *puller
	chunk int
}

type eventHeap []event

func (h eventHeap) Len() int           { return len(h) }
func (h eventHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h eventHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)        { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// opCounts are what the node-side operations came to.
type opCounts struct {
	Announces int64            `json:"announces"`
	LeaseAsks int64            `json:"lease_asks"`
	Granted   int64            `json:"granted"`
	Held      int64            `json:"held"` // refused: leased to or held by another member
	Reasks    int64            `json:"reasks"`
	Releases  int64            `json:"releases"`
	FromPeers int64            `json:"chunks_from_peers"`
	Started   int64            `json:"pullers_started"`
	Completed int64            `json:"pullers_completed"`
	Failed    map[string]int64 `json:"failed,omitempty"` // operations that failed, by kind
	Exhausted bool             `json:"identities_exhausted,omitempty"`
	// Of the pulls completed: their mean duration, and the operations a pulling node made
	// per second.
	PullSeconds      float64 `json:"pull_seconds,omitempty"`
	OpsPerNodeSecond float64 `json:"ops_per_node_second,omitempty"`
}

// rollout is one image pulled by identities joining as the offered load calls for them:
// whenever a request slot finds no request due, the next identity starts its pull. Every
// request is made by that identity's tracker client.
type rollout struct {
	urls   []string
	checks bool // the members' addresses, as a node does
	ids    []*identity
	im     image
	rng    *mrand.Rand

	mu      sync.Mutex
	events  eventHeap
	next    int // the next identity to start
	pullers []*puller
	done    [imageChunks]bool // a member released the chunk as done
	ops     opCounts
}

func newRollout(urls []string, checks bool, ids []*identity, im image, seed uint64) *rollout {
	return &rollout{urls: urls, checks: checks, ids: ids, im: im, rng: mrand.New(mrand.NewPCG(seed, 1)), ops: opCounts{Failed: map[string]int64{}}}
}

func (r *rollout) push(e event) { heap.Push(&r.events, e) }

// take returns the next request to make: the earliest due, else the start of a new pull.
// ok is false when nothing is due and every identity has started.
func (r *rollout) take(now time.Time) (event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.events) > 0 && !r.events[0].at.After(now) {
		e := heap.Pop(&r.events).(event)
		switch {
		case e.kind == evFetched:
			r.ops.FromPeers++
			r.chunkDone(now, e.p, e.chunk)
			continue
		case e.kind == evRecheck:
			e.p.parked--
			e.p.todo = append(e.p.todo, e.chunk)
			r.fill(now, e.p)
			continue
		case e.kind == evAnnounce && e.p.finished:
			continue
		}
		return e, true
	}
	if r.next == len(r.ids) {
		r.ops.Exhausted = true
		return event{}, false
	}
	p := &puller{id: r.ids[r.next], todo: r.rng.Perm(imageChunks), leases: make(map[int]*client.Lease), started: now}
	r.next++
	c, err := p.id.client(r.urls, r.checks)
	if err != nil {
		panic(err) // the options are fixed: a failure is a bug here
	}
	p.client = c
	r.pullers = append(r.pullers, p)
	r.ops.Started++
	return event{at: now, kind: evAnnounce, p: p}, true
}

// chunkDone records that chunk arrived at p and starts the next, or announces the whole
// image.
func (r *rollout) chunkDone(now time.Time, p *puller, chunk int) {
	p.fetch--
	p.done[chunk/chunksPerBlob]++
	r.fill(now, p)
	if p.fetch == 0 && p.parked == 0 && len(p.todo) == 0 && !p.finalQueued {
		p.finalQueued = true
		r.push(event{at: now, kind: evAnnounce, p: p})
	}
}

// fill asks for chunks until p has fetchSlots on the way.
func (r *rollout) fill(now time.Time, p *puller) {
	for p.fetch < fetchSlots && len(p.todo) > 0 {
		c := p.todo[len(p.todo)-1]
		p.todo = p.todo[:len(p.todo)-1]
		p.fetch++
		r.push(event{at: now, kind: evLease, p: p, chunk: c})
	}
}

func (r *rollout) fail(op string, err error) {
	kind := op + ": refused by the tracker"
	if errors.Is(err, client.ErrUnavailable) {
		kind = op + ": no tracker available"
	}
	r.ops.Failed[kind]++
}

// do makes e's request and books what follows from the answer.
func (r *rollout) do(ctx context.Context, e event) {
	p := e.p
	switch e.kind {
	case evAnnounce:
		r.mu.Lock()
		states := p.states(r.im)
		final := p.complete()
		r.ops.Announces++
		p.requests++
		r.mu.Unlock()
		_, err := p.client.Announce(ctx, states)
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			r.fail("announce", err)
			if final {
				p.finalQueued = true
			}
			r.push(event{at: now.Add(retryWait), kind: evAnnounce, p: p})
			return
		}
		first := p.announcedAt.IsZero()
		p.announcedAt = now
		for i, s := range states {
			p.announced[i] = s.Complete
		}
		switch {
		case final:
			if !p.finished { // a periodic announce may have carried the whole image too
				p.finished = true
				r.ops.Completed++
				p.ended = now
			}
		case first:
			// The tracker leases only to members: the first chunks wait for the first announce.
			r.fill(now, p)
			fallthrough
		default:
			r.push(event{at: now.Add(tracker.AnnounceDownload), kind: evAnnounce, p: p})
		}

	case evLease:
		blob, index := e.chunk/chunksPerBlob, e.chunk%chunksPerBlob
		r.mu.Lock()
		r.ops.LeaseAsks++
		p.requests++
		r.mu.Unlock()
		l, _, err := p.client.Lease(ctx, r.im[blob], layerBytes, chunkSize, index)
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case err != nil:
			r.fail("lease", err)
			r.push(event{at: now.Add(retryWait), kind: evLease, p: p, chunk: e.chunk})
		case l != nil:
			r.ops.Granted++
			p.leases[e.chunk] = l
			r.push(event{at: now.Add(fetchTime), kind: evRelease, p: p, chunk: e.chunk})
		case r.done[e.chunk]:
			r.ops.Held++
			r.push(event{at: now.Add(fetchTime), kind: evFetched, p: p, chunk: e.chunk})
		default:
			// Leased to a member still fetching it: left to it for a while, the slot takes
			// another chunk.
			r.ops.Held++
			r.ops.Reasks++
			p.fetch--
			p.parked++
			r.push(event{at: now.Add(leaseRecheck), kind: evRecheck, p: p, chunk: e.chunk})
			r.fill(now, p)
		}

	case evRelease:
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ops.Releases++
		p.requests++
		p.leases[e.chunk].Release(true) // sent in the background, timed by the transport
		delete(p.leases, e.chunk)
		r.done[e.chunk] = true
		p.origin[e.chunk/chunksPerBlob]++
		r.chunkDone(time.Now(), p, e.chunk)
	}
}

// close stops every puller's client: renewals end, leases left run out on the trackers.
func (r *rollout) close() {
	r.mu.Lock()
	ps := r.pullers
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(p.client.Close)
	}
	wg.Wait()
}

// counts returns the operations so far; pulls not complete count as pulling until now.
func (r *rollout) counts(now time.Time) opCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.ops
	var complete, pulling, ops float64
	for _, p := range r.pullers {
		end := now
		if !p.ended.IsZero() {
			end = p.ended
			complete += end.Sub(p.started).Seconds()
		}
		pulling += end.Sub(p.started).Seconds()
		ops += float64(p.requests)
	}
	if c.Completed > 0 {
		c.PullSeconds = complete / float64(c.Completed)
	}
	if pulling > 0 {
		c.OpsPerNodeSecond = ops / pulling
	}
	c.Failed = make(map[string]int64, len(r.ops.Failed))
	for k, v := range r.ops.Failed {
		c.Failed[k] = v
	}
	return c
}

// expected is what a tracker should hold of the image now, given what the pullers were
// told: for each blob, bounds on its live members and the number of them complete. A
// member close to its expiry may or may not be live, so members are a range.
type expected struct {
	MembersMin, MembersMax [layers]int
	Complete               [layers]int
}

func (r *rollout) expect(now time.Time) expected {
	r.mu.Lock()
	defer r.mu.Unlock()
	var x expected
	const margin = 2 * time.Second
	for _, p := range r.pullers {
		if p.announcedAt.IsZero() {
			continue
		}
		age := now.Sub(p.announcedAt)
		for i := range layers {
			ttl := tracker.DownloadTTL
			if p.announced[i] {
				ttl = tracker.HolderTTL
			}
			if age < ttl-margin {
				x.MembersMin[i]++
				if p.announced[i] {
					x.Complete[i]++
				}
			}
			if age < ttl+margin {
				x.MembersMax[i]++
			}
		}
	}
	return x
}
