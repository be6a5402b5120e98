package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
)

// errUnreachable is what a request to a node that died gets once its deadline passed: a
// machine that is gone answers nothing, so requests to it hang until then (the exchange's
// timeout at most).
var errUnreachable = errors.New("peer unreachable")

// dht holds the provider records of every blob, as the DHT's closest peers to the blob's
// key hold them: a record is visible once its provide has gone through.
type dht struct {
	mu      sync.Mutex
	records map[digest.Digest]*providers
}

// providers are one blob's records in the order they become visible, which is the order
// they are added while every provide takes the same time.
type providers struct {
	ids   []string
	at    []time.Time // when ids[i] became visible, ascending
	index map[string]int
}

func (t *dht) add(d digest.Digest, id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.records == nil {
		t.records = make(map[digest.Digest]*providers)
	}
	r := t.records[d]
	if r == nil {
		r = &providers{index: make(map[string]int)}
		t.records[d] = r
	}
	if i, ok := r.index[id]; ok {
		if !at.Before(r.at[i]) {
			return
		}
		// Sooner than before: out of order, so take it out and put it back in its place.
		r.ids, r.at = slices.Delete(r.ids, i, i+1), slices.Delete(r.at, i, i+1)
	}
	i, _ := slices.BinarySearchFunc(r.at, at, func(a, b time.Time) int { return a.Compare(b) })
	for i < len(r.at) && !r.at[i].After(at) {
		i++
	}
	r.ids, r.at = slices.Insert(r.ids, i, id), slices.Insert(r.at, i, at)
	if i == len(r.ids)-1 {
		r.index[id] = i
		return
	}
	for j := i; j < len(r.ids); j++ {
		r.index[r.ids[j]] = j
	}
}

// find returns what the real router returns for a lookup by self: up to pool visible
// records, of which a random sample of max, self left out. The sample is drawn from all the
// visible records: which pool of them a lookup meets first is as random as the sample.
func (t *dht) find(d digest.Digest, self string, pool, max int, rng *rand.Rand) []string {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.records[d]
	if r == nil {
		return nil
	}
	visible, _ := slices.BinarySearchFunc(r.at, now, func(a, b time.Time) int { return a.Compare(b) })
	for visible < len(r.at) && !r.at[visible].After(now) {
		visible++
	}
	skip := -1 // self's place among the visible, if it is one
	if i, ok := r.index[self]; ok && i < visible {
		skip = i
	}
	avail := visible
	if skip >= 0 {
		avail--
	}
	want := min(avail, pool, max)
	if want <= 0 {
		return nil
	}
	if avail <= 2*want {
		// Few to choose from: shuffle them all.
		ids := make([]string, 0, avail)
		for i := range visible {
			if i != skip {
				ids = append(ids, r.ids[i])
			}
		}
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		return ids[:want]
	}
	// Many: draw distinct places until there are enough.
	ids := make([]string, 0, want)
	taken := make(map[int]bool, want)
	for len(ids) < want {
		i := rng.IntN(visible)
		if i == skip || taken[i] {
			continue
		}
		taken[i] = true
		ids = append(ids, r.ids[i])
	}
	return ids
}

// member is one node's side of the simulated fleet: the swarm.Fleet its downloader uses.
type member struct {
	w *world
	n *node

	mu    sync.Mutex
	rng   *rand.Rand
	cache map[digest.Digest]cached // the router's cache of non-empty lookups
}

type cached struct {
	ids     []string
	expires time.Time
}

var _ swarm.Fleet = (*member)(nil)

// seedingMember is a member of a fleet without a tracker that names its blobs' seeds.
type seedingMember struct{ *member }

var _ swarm.Seeder = seedingMember{}

// Seeds returns the nodes whose IDs are closest to d's key, as a DHT lookup of the closest
// peers does: every node gets the same answer, dead nodes included (the DHT learns late).
func (s seedingMember) Seeds(ctx context.Context, d digest.Digest) ([]string, error) {
	if err := sleep(ctx, s.w.cfg.LookupTime); err != nil {
		return nil, err
	}
	return s.w.seedsOf(d), nil
}

func (s seedingMember) AskSeed(ctx context.Context, seed, registry, repo string, d digest.Digest) error {
	s.n.stats.SeedAsks.Add(1)
	p, err := s.reach(ctx, seed)
	if err != nil {
		return err
	}
	err = p.dl.Fetch(ctx, registry, repo, d)
	if serr := sleep(ctx, s.w.cfg.Latency); serr != nil {
		return serr
	}
	return err
}

// leasingMember is a member whose fleet has a tracker: downloads ask it for origin leases,
// and their seeds are the fetchers the tracker names.
type leasingMember struct{ *member }

var (
	_ swarm.OriginLeaser = leasingMember{}
	_ swarm.Seeder       = leasingMember{}
)

func (l leasingMember) Seeds(ctx context.Context, d digest.Digest) ([]string, error) {
	return l.n.tracker.Fetchers(ctx, d)
}

// AskSeed asks a fetcher whether it runs the download, as a real node with trackers
// answers a FETCH.
func (l leasingMember) AskSeed(ctx context.Context, seed, _, _ string, d digest.Digest) error {
	l.n.stats.SeedAsks.Add(1)
	p, err := l.reach(ctx, seed)
	if err != nil {
		return err
	}
	_, running := p.dl.Status(d)
	if running {
		p.dl.Hint(l.n.id, d)
	}
	if err := sleep(ctx, l.w.cfg.Latency); err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("%s is not downloading %s", seed, d)
	}
	return nil
}

func (m *member) Self() string    { return m.n.id }
func (m *member) Connected() bool { return true }

func (m *member) Provide(ctx context.Context, d digest.Digest) error {
	if m.n.tracker != nil {
		m.n.tracker.Started(d)
	}
	m.n.stats.Provides.Add(1)
	// The record is stored at the closest peers when the provide's lookup is through.
	m.w.dht.add(d, m.n.id, time.Now().Add(m.w.cfg.ProvideTime))
	return sleep(ctx, m.w.cfg.ProvideTime)
}

func (m *member) FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error) {
	lookup := func(ctx context.Context) ([]string, error) {
		if !fresh {
			m.mu.Lock()
			c, ok := m.cache[d]
			m.mu.Unlock()
			if ok && time.Now().Before(c.expires) {
				return append([]string(nil), c.ids...), nil
			}
		}
		m.n.stats.Lookups.Add(1)
		if err := sleep(ctx, m.w.cfg.LookupTime); err != nil {
			return nil, err
		}
		m.mu.Lock()
		ids := m.w.dht.find(d, m.n.id, p2p.DefaultMaxProviders*5, p2p.DefaultMaxProviders, m.rng)
		if len(ids) > 0 {
			m.cache[d] = cached{ids: ids, expires: time.Now().Add(p2p.DefaultCacheTTL)}
		} else {
			delete(m.cache, d)
		}
		m.mu.Unlock()
		return append([]string(nil), ids...), nil
	}
	if m.n.tracker != nil {
		return m.n.tracker.Providers(ctx, d, fresh, lookup)
	}
	return lookup(ctx)
}

// reach sends a request to peer: after the one-way latency it returns the peer, or waits
// until ctx ends if the peer is gone.
func (m *member) reach(ctx context.Context, peer string) (*node, error) {
	if err := sleep(ctx, m.w.cfg.Latency); err != nil {
		return nil, err
	}
	p := m.w.byID[peer]
	if p == nil {
		return nil, fmt.Errorf("peer %s: unknown", peer)
	}
	if p.dead.Load() {
		// As the exchange bounds every request, whatever its caller's deadline.
		_ = sleep(ctx, p2p.DefaultExchangeTimeout)
		return nil, fmt.Errorf("peer %s: %w", peer, errUnreachable)
	}
	return p, nil
}

func (m *member) Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error) {
	m.n.stats.Haves.Add(1)
	p, err := m.reach(ctx, peer)
	if err != nil {
		return chunk.Have{}, err
	}
	p.dl.Hint(m.n.id, d)
	h, ok := p.serve.Have(d, true)
	if err := sleep(ctx, m.w.cfg.Latency); err != nil {
		return chunk.Have{}, err
	}
	if !ok {
		return chunk.Have{}, fmt.Errorf("have %s from %s: %w", d, peer, chunk.ErrNotHeld)
	}
	return h, nil
}

// WatchHave serves the watch with the exchange's own decisions (p2p.WatchServer) over p's
// chunk server, from the loop serving all of p's watches of d (watch.go); each answer takes
// a link latency. A peer that dies goes silent, and the watch ends as a real one would,
// after p2p.WatchSilence.
func (m *member) WatchHave(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have)) error {
	done := make(chan error, 1)
	m.StartWatch(ctx, peer, d, fn, func(err error) { done <- err })
	return <-done
}

// StartWatch is WatchHave without the caller's goroutine: only the watch's start, a
// latency long, runs in one.
func (m *member) StartWatch(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have), end func(error)) {
	m.n.stats.Watches.Add(1)
	go func() {
		// As the exchange's watch: its first answer, like every other, has WatchSilence to
		// come.
		rctx, cancel := context.WithTimeout(ctx, p2p.WatchSilence)
		p, err := m.reach(rctx, peer)
		cancel()
		if err != nil {
			end(err)
			return
		}
		p.dl.Hint(m.n.id, d)
		if err := sleep(ctx, m.w.cfg.Latency); err != nil {
			end(err)
			return
		}
		m.serveWatch(ctx, p, peer, d, fn, end)
	}()
}

func (m *member) GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error) {
	m.n.stats.ChunkRequests.Add(1)
	p, err := m.reach(ctx, peer)
	if err != nil {
		return 0, err
	}
	if slots := m.w.cfg.UploadSlots; slots > 0 {
		if p.uploading.Add(1) > int64(slots) {
			p.uploading.Add(-1)
			if err := sleep(ctx, m.w.cfg.Latency); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("chunk %d of %s from %s: %w", index, d, peer, chunk.ErrBusy)
		}
		defer p.uploading.Add(-1)
	}
	if p.repeats != nil {
		if ok, others := p.repeats.Take(d, index, m.n.id); !ok {
			if err := sleep(ctx, m.w.cfg.Latency); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("chunk %d of %s from %s: %w", index, d, peer, &chunk.BusyError{Others: others})
		}
	}
	var buf bytes.Buffer
	if _, err := p.serve.ReadChunk(ctx, d, index, &buf); err != nil {
		if serr := sleep(ctx, m.w.cfg.Latency); serr != nil {
			return 0, serr
		}
		return 0, fmt.Errorf("chunk %d of %s from %s: %w", index, d, peer, err)
	}
	vbytes := int64(buf.Len()) * m.w.scale
	p.uploaded.Add(vbytes)
	if _, ok := p.originChunks.Load(chunkKey{d, index}); ok {
		p.upOrigin.Add(vbytes)
	}
	if err := sleepUntil(ctx, transfer(p.up, m.n.down, vbytes).Add(m.w.cfg.Latency)); err != nil {
		return 0, err
	}
	if p.dead.Load() {
		return 0, fmt.Errorf("chunk %d of %s from %s: %w", index, d, peer, errUnreachable)
	}
	return io.Copy(w, &buf)
}

func (l leasingMember) LeaseOrigin(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (func(bool), string, bool, error) {
	return l.n.tracker.Lease(ctx, d, size, chunkSize, index)
}
