package server

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/tracker"
)

// Errors of State. The server maps them to HTTP statuses.
var (
	// ErrConflict: the request's Size or ChunkSize disagrees with what the swarm has.
	ErrConflict = errors.New("conflicts with the swarm")
	// ErrNotMember: a lease asked by a peer that is not a live member of the blob's swarm.
	ErrNotMember = errors.New("not a member")
	// ErrOutOfRange: a chunk index outside the blob.
	ErrOutOfRange = errors.New("chunk index out of range")
	// ErrFull: the state is at one of its caps (Limits) and the request needs a new entry.
	ErrFull = errors.New("tracker full")
)

// Default caps of State. They bound the memory a flood of announces from made-up peers
// can take: up to 4 KiB of addresses a peer, roughly 200 bytes a member and 100 a chunk
// mark, a few hundred MB in all.
const (
	DefaultMaxPeers        = 20_000
	DefaultMaxSwarms       = 100_000
	DefaultMaxMembers      = 500_000
	DefaultMaxSwarmMembers = 20_000
	DefaultMaxChunkMarks   = 1 << 20
	DefaultMaxSwarmMarks   = 1 << 16 // 256 GiB of 4 MiB chunks
	// DefaultAnnounceRate is the announces of running downloads a second a tracker aims
	// for: well within what one core answers (3,000-5,000 requests a second), leaving room
	// for leases. With more downloading nodes than that, each is told to announce less often.
	DefaultAnnounceRate = 1000
	bootstrapPeers      = 16                     // members' addresses /bootstrap adds to the tracker's own
	holderShare         = 4                      // at most 3/4 of a member list goes to complete holders
	fetcherPool         = 16                     // a swarm's fetchers are chosen among its first members
	progressBuckets     = 8                      // downloaders within 1/8 of each other's progress are equals
	pickScan            = 4 * tracker.MaxMembers // members looked at to choose a member list
	maxSweepInterval    = time.Second
)

// Limits cap the state. A zero field takes its default. When a cap is reached, requests
// that need a new entry (a new peer, swarm, member, lease or done mark) do not get it: an
// announce still refreshes what it already has and answers with the members the tracker
// knows, and the new entries are counted as refused; a lease is refused with ErrFull.
// Expired entries are swept first, so only live ones hold the state full. Refusing rather
// than evicting keeps a flood from pushing out the real fleet.
type Limits struct {
	MaxPeers        int // peers known, with or without blobs
	MaxSwarms       int // blobs with at least one member
	MaxMembers      int // members over all swarms
	MaxSwarmMembers int // members of one swarm
	MaxChunkMarks   int // leases and done chunks over all swarms
	MaxSwarmMarks   int // leases and done chunks of one swarm
	// AnnounceRate is the announces of running downloads a second the tracker aims for: the
	// interval it gives nodes grows with the nodes downloading at once (see
	// tracker.AnnounceResponse.IntervalMillis).
	AnnounceRate float64
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxPeers, DefaultMaxPeers)
	def(&l.MaxSwarms, DefaultMaxSwarms)
	def(&l.MaxMembers, DefaultMaxMembers)
	def(&l.MaxSwarmMembers, DefaultMaxSwarmMembers)
	def(&l.MaxChunkMarks, DefaultMaxChunkMarks)
	def(&l.MaxSwarmMarks, DefaultMaxSwarmMarks)
	if l.AnnounceRate <= 0 {
		l.AnnounceRate = DefaultAnnounceRate
	}
	return l
}

// State is the tracker's soft state: peers, the swarm of each blob, and chunk leases. It is
// safe for concurrent use. Expired entries are ignored at once and removed by Sweep.
type State struct {
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	peers   map[string]*peerEntry
	swarms  map[digest.Digest]*swarm
	members int // over all swarms
	marks   int // leases and done chunks over all swarms
	// downloaders is the peers with at least one membership not complete: the nodes that
	// announce every interval.
	downloaders int
	swept       time.Time
}

type peerEntry struct {
	id        string
	addrs     []string // replaced, never changed in place: responses share it
	seen      time.Time
	blobs     int // swarms it is a member of
	downloads int // of which not complete
	fetches   int // of which it is named a fetcher
}

type swarm struct {
	size, chunkSize int64 // 0: unknown yet
	members         map[string]*member
	leases          map[int]lease
	done            map[int]string // chunk -> member that has it
	// fetchers are the members named to fetch the blob from the origin, in the order they
	// were chosen (see fetchersOf); joined numbers the members in the order they joined.
	fetchers []string
	joined   uint64
	// list holds the members in no order, for sampling (member.pos is each one's place).
	list []*member
}

type member struct {
	peer       *peerEntry
	done       int64
	complete   bool
	fromOrigin int64
	fromPeers  int64
	seen       time.Time
	completed  time.Time     // when it was first seen complete
	ttl        time.Duration // while downloading: DownloadTTL, or three announce intervals
	seq        uint64        // the order it joined the swarm in
	pos        int           // its index in swarm.list
}

type lease struct {
	holder  string
	expires time.Time
}

// AnnounceResult is what State.Announce did.
type AnnounceResult struct {
	Swarms []tracker.Swarm
	// Interval is how long the sender may wait before announcing its downloads again.
	Interval time.Duration
	// Refused counts new entries (the peer, or its membership of a swarm) not recorded
	// because the state is full.
	Refused int
}

// NewState returns an empty state with limits l. now is the clock (nil: time.Now).
func NewState(l Limits, now func() time.Time) *State {
	if now == nil {
		now = time.Now
	}
	return &State{
		limits: l.withDefaults(),
		now:    now,
		peers:  make(map[string]*peerEntry),
		swarms: make(map[digest.Digest]*swarm),
	}
}

func (m *member) live(now time.Time) bool {
	ttl := max(m.ttl, tracker.DownloadTTL)
	if m.complete {
		ttl = tracker.HolderTTL
	}
	return now.Before(m.seen.Add(ttl))
}

func (p *peerEntry) live(now time.Time) bool {
	return p.blobs > 0 || now.Before(p.seen.Add(tracker.HolderTTL))
}

func (l lease) live(now time.Time) bool { return now.Before(l.expires) }

// chunks is the number of chunks of a blob, 0 while its size is unknown.
func (sw *swarm) chunks() int64 {
	if sw.size <= 0 || sw.chunkSize <= 0 {
		return 0
	}
	return (sw.size + sw.chunkSize - 1) / sw.chunkSize
}

// conflicts reports whether size or chunkSize (0: not known to the sender) disagree with
// the swarm's.
func (sw *swarm) conflicts(size, chunkSize int64) error {
	if size != 0 && sw.size != 0 && size != sw.size {
		return fmt.Errorf("size %d: %w (size %d)", size, ErrConflict, sw.size)
	}
	if chunkSize != 0 && sw.chunkSize != 0 && chunkSize != sw.chunkSize {
		return fmt.Errorf("chunk size %d: %w (chunk size %d)", chunkSize, ErrConflict, sw.chunkSize)
	}
	return nil
}

func (sw *swarm) learn(size, chunkSize int64) {
	if sw.size == 0 {
		sw.size = size
	}
	if sw.chunkSize == 0 {
		sw.chunkSize = chunkSize
	}
}

// Announce records req, which the caller has checked (signature, limits, well-formed
// fields), and returns for each blob not Gone up to MaxMembers other live members. A
// blob whose Size or ChunkSize conflicts with its swarm fails the whole request with
// ErrConflict, and nothing is recorded.
func (s *State) Announce(req tracker.AnnounceRequest) (AnnounceResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.maybeSweep(now)
	for _, b := range req.Blobs {
		if sw := s.swarms[b.Digest]; sw != nil && !b.Gone {
			if err := sw.conflicts(b.Size, b.ChunkSize); err != nil {
				return AnnounceResult{}, fmt.Errorf("%s: %w", b.Digest, err)
			}
		}
	}

	var res AnnounceResult
	p := s.peers[req.Peer]
	if p == nil && len(s.peers) < s.limits.MaxPeers {
		p = &peerEntry{id: req.Peer}
		s.peers[req.Peer] = p
	}
	if p == nil {
		res.Refused++
	} else {
		p.addrs = slices.Clone(req.Addrs)
		p.seen = now
	}
	res.Interval = s.interval()
	res.Swarms = make([]tracker.Swarm, 0, len(req.Blobs))
	for _, b := range req.Blobs {
		if b.Gone {
			s.leave(b.Digest, req.Peer)
			continue
		}
		if p == nil || !s.join(now, p, b, res.Interval) {
			res.Refused++
		}
		if !b.Complete {
			fetchers := s.fetchersOf(now, b.Digest)
			res.Swarms = append(res.Swarms, tracker.Swarm{
				Digest: b.Digest, Fetchers: fetchers,
				Members: s.pick(now, b.Digest, req.Peer, fetchers, tracker.MaxMembers),
			})
		}
	}
	return res, nil
}

// interval is how long downloading nodes are told to wait between announces: enough that
// all of them together send about AnnounceRate a second, within [AnnounceDownload,
// MaxAnnounceDownload].
func (s *State) interval() time.Duration {
	d := time.Duration(float64(s.downloaders) / s.limits.AnnounceRate * float64(time.Second))
	return min(max(d, tracker.AnnounceDownload), tracker.MaxAnnounceDownload).Round(time.Millisecond)
}

// fetchersOf returns d's origin fetchers: tracker.Fetchers of the swarm's first
// fetcherPool members, those the blob's key weighs most by rendezvous hash, so that the
// first nodes of a rollout, which join every layer's swarm first, do not fetch every layer.
// Until fetcherPool members have joined they are chosen afresh at each announce from
// those there (members look them up again every few seconds); from then on a fetcher keeps
// its place while it stays in the swarm, and one that leaves is replaced from the
// earliest-joined members left, so every member is told the same few.
func (s *State) fetchersOf(now time.Time, d digest.Digest) []string {
	sw := s.swarms[d]
	if sw == nil {
		return nil
	}
	if sw.joined <= fetcherPool {
		sw.setFetchers(nil)
	}
	if live := slices.DeleteFunc(slices.Clone(sw.fetchers), func(id string) bool { return !s.liveMember(sw, id, now) }); len(live) != len(sw.fetchers) {
		sw.setFetchers(live)
	}
	if len(sw.fetchers) < tracker.Fetchers && len(sw.members) > len(sw.fetchers) {
		var pool []*member
		for id, m := range sw.members {
			if m.live(now) && !slices.Contains(sw.fetchers, id) {
				pool = append(pool, m)
			}
		}
		slices.SortFunc(pool, func(a, b *member) int { return cmp.Compare(a.seq, b.seq) })
		pool = pool[:min(len(pool), fetcherPool)]
		// Members that fetch fewer other blobs first, so that one node does not fetch most
		// of an image's layers; then by the key's weight.
		weight := func(m *member) uint64 { return rendezvous.Weight(string(d), m.peer.id, 0) }
		slices.SortFunc(pool, func(a, b *member) int {
			return cmp.Or(cmp.Compare(a.peer.fetches, b.peer.fetches), cmp.Compare(weight(b), weight(a)))
		})
		chosen := slices.Clone(sw.fetchers)
		for _, m := range pool[:min(len(pool), tracker.Fetchers-len(sw.fetchers))] {
			chosen = append(chosen, m.peer.id)
		}
		sw.setFetchers(chosen)
	}
	return slices.Clone(sw.fetchers)
}

// setFetchers names ids the swarm's fetchers, counting each peer's fetches.
func (sw *swarm) setFetchers(ids []string) {
	for _, id := range sw.fetchers {
		if m := sw.members[id]; m != nil {
			m.peer.fetches--
		}
	}
	sw.fetchers = ids
	for _, id := range sw.fetchers {
		if m := sw.members[id]; m != nil {
			m.peer.fetches++
		}
	}
}

// join records p's state of blob b; false means it is new and there is no room for it.
func (s *State) join(now time.Time, p *peerEntry, b tracker.BlobState, interval time.Duration) bool {
	sw := s.swarms[b.Digest]
	var m *member
	if sw != nil {
		m = sw.members[p.id]
		if m != nil && !m.live(now) {
			// Expired and not swept yet: it joins again as new, without its old marks.
			s.leave(b.Digest, p.id)
			sw, m = s.swarms[b.Digest], nil
		}
	}
	if m == nil {
		if s.members >= s.limits.MaxMembers {
			return false
		}
		if sw == nil {
			if len(s.swarms) >= s.limits.MaxSwarms {
				return false
			}
			sw = &swarm{members: make(map[string]*member), leases: make(map[int]lease), done: make(map[int]string)}
			s.swarms[b.Digest] = sw
		}
		if len(sw.members) >= s.limits.MaxSwarmMembers {
			return false
		}
		sw.joined++
		// Counted as a download below unless it joins complete.
		m = &member{peer: p, seq: sw.joined, complete: true, pos: len(sw.list)}
		sw.members[p.id] = m
		sw.list = append(sw.list, m)
		s.members++
		p.blobs++
	}
	sw.learn(b.Size, b.ChunkSize)
	if m.complete != b.Complete {
		s.downloading(p, !b.Complete)
	}
	if b.Complete && (!m.complete || m.completed.IsZero()) {
		m.completed = now
	}
	m.done, m.complete, m.fromOrigin, m.fromPeers, m.seen = b.Done, b.Complete, b.FromOrigin, b.FromPeers, now
	m.ttl = 3 * interval
	return true
}

// downloading counts one more (or one fewer) download of p's.
func (s *State) downloading(p *peerEntry, more bool) {
	if more {
		if p.downloads++; p.downloads == 1 {
			s.downloaders++
		}
		return
	}
	if p.downloads--; p.downloads == 0 {
		s.downloaders--
	}
}

// leave removes peer from d's swarm with its leases and done chunks, and the swarm when it
// is left empty.
func (s *State) leave(d digest.Digest, peer string) {
	sw := s.swarms[d]
	if sw == nil {
		return
	}
	m := sw.members[peer]
	if m == nil {
		return
	}
	if slices.Contains(sw.fetchers, peer) {
		sw.setFetchers(slices.DeleteFunc(slices.Clone(sw.fetchers), func(id string) bool { return id == peer }))
	}
	delete(sw.members, peer)
	last := sw.list[len(sw.list)-1]
	sw.list[m.pos], last.pos = last, m.pos
	sw.list[len(sw.list)-1] = nil
	sw.list = sw.list[:len(sw.list)-1]
	s.members--
	m.peer.blobs--
	if !m.complete {
		s.downloading(m.peer, false)
	}
	for i, l := range sw.leases {
		if l.holder == peer {
			delete(sw.leases, i)
			s.marks--
		}
	}
	for i, holder := range sw.done {
		if holder == peer {
			delete(sw.done, i)
			s.marks--
		}
	}
	if len(sw.members) == 0 {
		s.marks -= len(sw.leases) + len(sw.done)
		delete(s.swarms, d)
	}
}

// pick chooses up to n live members of d's swarm other than self: the fetchers, then
// complete holders (at most 3/4 of the list while there are downloaders) and downloaders
// taken in turn. Holders come latest-completed first: in a rolling update the first to hold
// the blob would otherwise be asked by every batch after them, and upload several times what
// the last do. Downloaders come by progress, random among those within 1/progressBuckets of
// each other. Downloaders are always included when there are any: in a rollout they are most
// of the swarm, and each already holds chunks the others lack; and as a node tracks only the
// first members of the list, the two kinds are mixed all along it. In a swarm of more than
// pickScan members the choice is made among pickScan of them taken at random, so that an
// announce costs the same however large the swarm.
func (s *State) pick(now time.Time, d digest.Digest, self string, fetchers []string, n int) []tracker.Member {
	out := []tracker.Member{}
	sw := s.swarms[d]
	if sw == nil {
		return out
	}
	appendMember := func(m *member) {
		out = append(out, tracker.Member{Peer: m.peer.id, Addrs: m.peer.addrs, Done: m.done, Complete: m.complete})
	}
	for _, id := range fetchers {
		if m := sw.members[id]; id != self && m != nil && len(out) < n {
			appendMember(m)
		}
	}
	n -= len(out)
	var holders []*member
	var buckets [progressBuckets][]*member
	downloaders := 0
	for _, m := range sw.sample(pickScan) {
		if m.peer.id == self || !m.live(now) || slices.Contains(fetchers, m.peer.id) {
			continue
		}
		if m.complete {
			holders = append(holders, m)
			continue
		}
		b := 0
		if sw.size > 0 {
			b = min(int(float64(m.done)/float64(sw.size)*progressBuckets), progressBuckets-1)
		}
		buckets[b] = append(buckets[b], m)
		downloaders++
	}
	nh := min(len(holders), max(n-downloaders, n-n/holderShare))
	nd := min(downloaders, n-nh)
	nh = min(len(holders), n-nd)

	// Stable: holders that completed at once stay in the sample's random order.
	slices.SortStableFunc(holders, func(a, b *member) int { return b.completed.Compare(a.completed) })
	holders = holders[:nh]
	downs := make([]*member, 0, nd)
	for b := progressBuckets - 1; b >= 0 && len(downs) < nd; b-- {
		downs = append(downs, sample(buckets[b], nd-len(downs), nil)...)
	}
	// In turn, in proportion: each prefix of the list holds both kinds as the whole does.
	for h, dn := 0, 0; h < len(holders) || dn < len(downs); {
		if dn >= len(downs) || h < len(holders) && h*len(downs) <= dn*len(holders) {
			appendMember(holders[h])
			h++
			continue
		}
		appendMember(downs[dn])
		dn++
	}
	return out
}

// sample returns k of the swarm's members taken at random (all of them if it has no more),
// reordering its list.
func (sw *swarm) sample(k int) []*member {
	return sample(sw.list, k, func(m *member, i int) { m.pos = i })
}

// sample returns k random elements of ms (all of them if k >= len(ms)), reordering ms;
// moved, if set, is told of each element's new place.
func sample(ms []*member, k int, moved func(m *member, i int)) []*member {
	if k >= len(ms) {
		return ms
	}
	for i := range k {
		j := i + rand.IntN(len(ms)-i)
		ms[i], ms[j] = ms[j], ms[i]
		if moved != nil {
			moved(ms[i], i)
			moved(ms[j], j)
		}
	}
	return ms[:k]
}

// Lease answers req, which the caller has checked. See LeaseRequest for the rules.
func (s *State) Lease(req tracker.LeaseRequest) (tracker.LeaseResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.maybeSweep(now)
	sw := s.swarms[req.Digest]
	if sw == nil {
		return tracker.LeaseResponse{}, ErrNotMember
	}
	m := sw.members[req.Peer]
	if m == nil || !m.live(now) {
		return tracker.LeaseResponse{}, ErrNotMember
	}
	if err := sw.conflicts(req.Size, req.ChunkSize); err != nil {
		return tracker.LeaseResponse{}, err
	}
	sw.learn(req.Size, req.ChunkSize)
	if int64(req.Chunk) >= sw.chunks() || req.Chunk < 0 {
		return tracker.LeaseResponse{}, fmt.Errorf("%w: chunk %d of %d", ErrOutOfRange, req.Chunk, sw.chunks())
	}
	i := req.Chunk

	if req.Release {
		if l, ok := sw.leases[i]; ok && l.holder == req.Peer {
			delete(sw.leases, i)
			s.marks--
		}
		if req.Done {
			if holder, ok := sw.done[i]; !ok || !s.liveMember(sw, holder, now) {
				if !ok {
					if !s.roomForMark(sw) {
						return tracker.LeaseResponse{}, ErrFull
					}
					s.marks++
				}
				sw.done[i] = req.Peer
			}
		}
		return tracker.LeaseResponse{}, nil
	}

	if holder, ok := sw.done[i]; ok {
		if holder != req.Peer && s.liveMember(sw, holder, now) {
			return tracker.LeaseResponse{Holder: holder}, nil
		}
		// The holder left, or it is the sender, which said it had the chunk and asks
		// again: it lost it.
		delete(sw.done, i)
		s.marks--
	}
	l, held := sw.leases[i]
	if held && l.holder != req.Peer && l.live(now) && s.liveMember(sw, l.holder, now) {
		return tracker.LeaseResponse{Holder: l.holder}, nil
	}
	if !held {
		if !s.roomForMark(sw) {
			return tracker.LeaseResponse{}, ErrFull
		}
		s.marks++
	}
	sw.leases[i] = lease{holder: req.Peer, expires: now.Add(tracker.LeaseTTL)}
	return tracker.LeaseResponse{Granted: true, TTLMillis: tracker.LeaseTTL.Milliseconds()}, nil
}

func (s *State) liveMember(sw *swarm, peer string, now time.Time) bool {
	m := sw.members[peer]
	return m != nil && m.live(now)
}

func (s *State) roomForMark(sw *swarm) bool {
	return s.marks < s.limits.MaxChunkMarks && len(sw.leases)+len(sw.done) < s.limits.MaxSwarmMarks
}

// Bootstrap returns the addresses of up to bootstrapPeers random live peers.
func (s *State) Bootstrap() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var chosen []*peerEntry
	seen := 0
	for _, p := range s.peers {
		if len(p.addrs) == 0 || !p.live(now) {
			continue
		}
		// Reservoir sampling: map order is not random enough to spread new nodes.
		seen++
		if len(chosen) < bootstrapPeers {
			chosen = append(chosen, p)
		} else if j := rand.IntN(seen); j < bootstrapPeers {
			chosen[j] = p
		}
	}
	var out []string
	for _, p := range chosen {
		out = append(out, p.addrs...)
	}
	return out
}

// Swarms returns a view of every swarm, sorted by digest.
func (s *State) Swarms() []tracker.SwarmView {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]tracker.SwarmView, 0, len(s.swarms))
	for d, sw := range s.swarms {
		v := tracker.SwarmView{Digest: d, Size: sw.size}
		var progress float64
		for _, m := range sw.members {
			if !m.live(now) {
				continue
			}
			v.Members++
			v.FromOrigin += m.fromOrigin
			v.FromPeers += m.fromPeers
			switch {
			case m.complete:
				v.Complete++
				progress++
			case sw.size > 0:
				progress += float64(min(m.done, sw.size)) / float64(sw.size)
			}
		}
		if v.Members == 0 {
			continue
		}
		v.Progress = progress / float64(v.Members)
		for _, l := range sw.leases {
			if l.live(now) && s.liveMember(sw, l.holder, now) {
				v.Leases++
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b tracker.SwarmView) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return out
}

// Stats are the sizes of the state, for metrics.
type Stats struct {
	Peers, Swarms, Members, Leases int
}

// Stats returns the sizes of the state, within maxSweepInterval of expiry.
func (s *State) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeSweep(s.now())
	st := Stats{Peers: len(s.peers), Swarms: len(s.swarms), Members: s.members}
	for _, sw := range s.swarms {
		st.Leases += len(sw.leases)
	}
	return st
}

// maybeSweep sweeps when the last sweep is older than maxSweepInterval, so that a busy
// tracker never counts long-expired entries against its caps even if nobody calls Sweep.
func (s *State) maybeSweep(now time.Time) {
	if now.Sub(s.swept) >= maxSweepInterval || now.Before(s.swept) {
		s.sweep(now)
	}
}

// Sweep removes expired members (with their leases and done chunks), expired leases,
// empty swarms and peers that neither announced within HolderTTL nor are members.
func (s *State) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.now())
}

func (s *State) sweep(now time.Time) {
	s.swept = now
	for d, sw := range s.swarms {
		for id, m := range sw.members {
			if !m.live(now) {
				s.leave(d, id)
			}
		}
		if s.swarms[d] == nil {
			continue
		}
		for i, l := range sw.leases {
			if !l.live(now) {
				delete(sw.leases, i)
				s.marks--
			}
		}
	}
	for id, p := range s.peers {
		if !p.live(now) {
			delete(s.peers, id)
		}
	}
}
