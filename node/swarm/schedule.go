package swarm

import (
	"cmp"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/internal/rendezvous"
)

// This file is the chunk scheduling policy: which chunk to ask of whom next. It does no I/O
// and keeps no state; the downloader describes the swarm in a Snapshot and carries out the
// Requests, so the policy is tested deterministically and can be simulated for large fleets.

// PeerView is what the downloader knows of one peer holding (part of) the blob.
type PeerView struct {
	ID string
	// Has marks the verified chunks the peer can serve now; Complete says it marks them all.
	Has      []bool
	Complete bool
	// Fetching marks chunks the peer is fetching right now, from anywhere; nil if unknown.
	// The policy leaves such chunks to the peer instead of asking the origin for them.
	Fetching []bool
	// Active is the number of our requests outstanding to this peer.
	Active int
	// Busy marks a peer that refused a request as busy a moment ago: it is asked nothing
	// until the moment has passed.
	Busy bool
	// SlowStart marks a peer that has not delivered a chunk to us yet: it gets one request
	// at a time, so the first chunk (a waiting client's) does not share its link.
	SlowStart bool
	// Rate is the observed bytes per second from this peer; 0 if not yet known.
	Rate float64
	// Member marks a peer downloading the blob too, so sharing the origin's work: each chunk
	// no one holds is designated to one member (Snapshot.Self included) by rendezvous
	// hashing, and the others leave it to that member unless it stays idle at the origin.
	Member bool
	// OriginIdle is how long the peer has been seen fetching nothing from the origin, from
	// the first answer in a row that showed it idle to the latest; 0 if it is fetching now
	// or has not been seen long enough to tell.
	OriginIdle time.Duration
	// Seed marks one of the blob's seeds (Snapshot.Fetchers when they are known): it is
	// asked for a chunk only when no other peer holding it has a free slot. Every chunk
	// starts at a seed, and every member hears from the seeds most often, so left to speed
	// alone most requests of the swarm would go to the seeds.
	Seed bool
}

// Inflight is one outstanding request.
type Inflight struct {
	Chunk int
	Peer  string // "" is the origin
	Age   time.Duration
	// Duplicate marks an endgame duplicate: it holds the whole chunk in memory until it wins.
	Duplicate bool
}

// Snapshot is the downloader's view of one blob's swarm at an instant.
type Snapshot struct {
	// Have marks the chunks this node holds; its length is the blob's chunk count.
	Have     []bool
	Inflight []Inflight
	// Peers are the usable peers (banned ones left out by the caller).
	Peers []PeerView
	// Readers holds, for each client streaming the blob in order, the chunk it needs next.
	Readers []int
	// Self is this node's ID and Salt the blob's digest, both inputs of origin designation;
	// every member computes the same designation from the same membership.
	Self string
	Salt string
	// Leased marks the chunks another node holds the origin lease on: they are left to the
	// peers, as if a peer were fetching them. Nil if none.
	Leased []bool
	// OriginBackoff is how long the origin is still left alone after failed requests; while
	// it is above zero the origin is asked nothing.
	OriginBackoff time.Duration
	// OriginSlowStart keeps one request at most in flight to the origin, until it has answered
	// one: the first (a waiting client's) is not slowed by others.
	OriginSlowStart bool
	// Fetchers, if set, are the only nodes that fetch the blob from the origin (the blob's
	// seeds): a node not among them asks the origin nothing, and those among them designate
	// the chunks among themselves alone. Set but empty (the seeds are still being looked
	// up): no node fetches from the origin.
	Fetchers []string
	// MaxDuplicates caps the endgame duplicates in flight, which hold a chunk in memory each;
	// 0 means no cap.
	MaxDuplicates int
}

// Request asks for one chunk from one source.
type Request struct {
	Chunk int
	Peer  string // "" is the origin
}

// Policy decides the next requests. The zero value is usable; zero fields take defaults.
type Policy struct {
	// PerPeer caps our outstanding requests to one peer (default 4).
	PerPeer int
	// Origin caps outstanding requests to the origin (default 4).
	Origin int
	// Window is how many chunks from each reader's position come before rarest-first
	// (default 4), so a streaming client is never starved.
	Window int
	// EndgameAge: once every missing chunk is requested, a peer request older than this is
	// asked again of another peer (default 2s).
	EndgameAge time.Duration
	// StealAfter: chunks designated to a member that has fetched nothing from the origin for
	// this long are fetched by the others (default 1s). Shorter, and members that just
	// started look idle; longer, and a member that cannot reach the origin stalls the rest.
	StealAfter time.Duration
	// Rank orders chunks for origin fetches and breaks ties: a node-specific permutation of
	// the chunk indices, so nodes fetching from the origin at once rarely pick the same
	// chunk. Nil means index order.
	Rank []int
	// WholeAtOnce caps the requests out to whole holders while a peer still downloading the
	// blob, not busy, holds a chunk this node lacks (default 1; see best). The engine sets it
	// to wholeInFlight's worth of chunks.
	WholeAtOnce int
}

func (p Policy) withDefaults() Policy {
	if p.PerPeer <= 0 {
		p.PerPeer = 4
	}
	if p.Origin <= 0 {
		p.Origin = 4
	}
	if p.Window <= 0 {
		p.Window = 4
	}
	if p.EndgameAge <= 0 {
		p.EndgameAge = 2 * time.Second
	}
	if p.StealAfter <= 0 {
		p.StealAfter = time.Second
	}
	if p.WholeAtOnce <= 0 {
		p.WholeAtOnce = 1
	}
	return p
}

// Next returns the requests to start now, in the order to start them: the caller starts them
// all, every rule of when to ask whom being here.
func (p Policy) Next(s Snapshot) []Request {
	p = p.withDefaults()
	n := len(s.Have)
	rank := func(c int) int {
		if c < len(p.Rank) {
			return p.Rank[c]
		}
		return c
	}

	inflight := make([]int, n) // requests outstanding per chunk
	originBusy := 0
	for _, f := range s.Inflight {
		if f.Chunk >= 0 && f.Chunk < n {
			inflight[f.Chunk]++
		}
		if f.Peer == "" {
			originBusy++
		}
	}
	originCap := p.Origin
	switch {
	case s.OriginBackoff > 0:
		originCap = 0
	case s.OriginSlowStart:
		originCap = 1
	}
	// Chunks to get: reader windows first, in order; then the rest, rarest first. Only
	// those are looked up in the peers' bitmaps: late in a download, most chunks are held
	// or asked for already.
	wanted := make([]bool, n)
	var want []int
	for c := range n {
		if wanted[c] = !s.Have[c] && inflight[c] == 0; wanted[c] {
			want = append(want, c)
		}
	}
	holders := make([]int, n)   // peers that hold each wanted chunk
	fetching := make([]bool, n) // some peer is fetching it
	whole := 0                  // peers that hold every chunk, counted apart
	// Peers still downloading the blob hold a wanted chunk (partialHolds), one of them not
	// busy (partialFree): whole holders get fewer requests (see best).
	partialHolds, partialFree := false, false
	for _, pv := range s.Peers {
		if pv.Complete && len(pv.Has) == n {
			whole++
			continue
		}
		free := !pv.Seed && !pv.Busy
		for _, c := range want {
			if c < len(pv.Has) && pv.Has[c] {
				holders[c]++
				partialHolds = partialHolds || !pv.Seed
				partialFree = partialFree || free
			}
			if c < len(pv.Fetching) && pv.Fetching[c] {
				fetching[c] = true
			}
		}
	}
	for c := range min(n, len(s.Leased)) {
		if s.Leased[c] {
			fetching[c] = true
		}
	}

	var order []int
	inWindow := make([]bool, n)
	for _, r := range s.Readers {
		for c := max(r, 0); c < min(r+p.Window, n); c++ {
			if wanted[c] && !inWindow[c] {
				inWindow[c] = true
				order = append(order, c)
			}
		}
	}
	// Rarest first, ties in the node's own order (Rank): a counting sort, as holders are at
	// most the peers. In index order, the nodes of a rolling update's batch, which start at
	// once and know of no chunk among themselves, would all take the same chunks from the
	// earlier batches at the same time, and have nothing to give each other.
	byHolders := make([][]int, len(s.Peers)+1)
	for _, c := range p.ranked(want) {
		if !inWindow[c] {
			byHolders[holders[c]] = append(byHolders[holders[c]], c)
		}
	}
	for _, cs := range byHolders {
		order = append(order, cs...)
	}
	for _, c := range want {
		holders[c] += whole
	}

	var reqs []Request
	pick := p.picker(s)
	switch {
	case partialFree:
		pick.wholeCap = p.WholeAtOnce
	case partialHolds:
		pick.wholeCap = max(p.PerPeer, p.WholeAtOnce)
	}
	var forOrigin []int
	for _, c := range order {
		if i := pick.best(c, nil); i >= 0 {
			reqs = append(reqs, pick.take(i, c))
			continue
		}
		// The origin is the last resort per chunk: only for what no peer has or is
		// fetching.
		if holders[c] == 0 && !fetching[c] {
			forOrigin = append(forOrigin, c)
		}
	}
	// Reader windows keep their order; the rest goes in the node's own random order.
	split := 0
	for split < len(forOrigin) && inWindow[forOrigin[split]] {
		split++
	}
	slices.SortFunc(forOrigin[split:], func(a, b int) int { return cmp.Compare(rank(a), rank(b)) })
	// With other members fetching the same blob, each takes the chunks designated to it,
	// then those of members idle at the origin (finished with their share, or failing).
	if s.Fetchers != nil && !slices.Contains(s.Fetchers, s.Self) {
		forOrigin = nil
	}
	forOrigin = p.designated(s, forOrigin)
	for _, c := range forOrigin {
		if originBusy >= originCap {
			break
		}
		reqs = append(reqs, Request{Chunk: c})
		originBusy++
	}

	// Endgame: nothing left to ask for but slow requests; ask another peer too.
	if len(order) == 0 {
		reqs = append(reqs, p.endgame(s, pick)...)
	}
	return reqs
}

// ranked returns the chunks cs (in index order) in Rank's order; cs itself without a Rank
// for them all.
func (p Policy) ranked(cs []int) []int {
	n := len(p.Rank)
	if n == 0 || len(cs) == 0 || cs[len(cs)-1] >= n {
		return cs
	}
	at := make([]int, n) // at[r] is 1 + the chunk of cs ranked r, 0 if none
	for _, c := range cs {
		if r := p.Rank[c]; r >= 0 && r < n {
			at[r] = c + 1
		}
	}
	out := make([]int, 0, len(cs))
	for _, c := range at {
		if c > 0 {
			out = append(out, c-1)
		}
	}
	if len(out) != len(cs) { // Rank is not a permutation
		return cs
	}
	return out
}

// wholeInFlight is how many bytes of requests may be out to whole holders at once while a
// peer still downloading the blob, not busy, holds a chunk this node lacks
// (Policy.WholeAtOnce, at least one chunk): about what keeps a link busy when whole holders
// are all there is to ask, leaving the rest of it to what the downloading peers have. At
// 1,000 simulated nodes rolled out a tenth at a time without a tracker (4 MiB chunks), the
// busiest node uploaded 3.1-3.2x the mean with it, against 3.3x before; docs/BENCHMARKS.md
// has the other caps tried.
const wholeInFlight = 4 << 20

// load is how many of a peer's PerPeer slots count as taken: a busy peer has none free, and
// one in slow start only one until it delivered, whatever is outstanding.
func (p Policy) load(pv PeerView) int {
	switch {
	case pv.Busy:
		return p.PerPeer
	case pv.SlowStart:
		return p.PerPeer - 1 + min(pv.Active, 1)
	}
	return pv.Active
}

// picker chooses which peer to ask for a chunk, for one call of Next, and counts the
// requests it hands out against each peer's free slots. Peers are known by their place in
// the snapshot's Peers.
type picker struct {
	p     Policy
	peers []PeerView
	avg   float64 // the mean of the known rates, taken for peers whose rate is not known
	// ties orders peers of equal score, differently at each node (self) and for each chunk,
	// so that nodes that know the same holders equally well do not all ask the same one;
	// each peer's key is computed when first needed (tied says which are).
	self string
	ties []rendezvous.Seed
	tied []bool
	// slots is each peer's free request slots, assigned the requests handed out, and open
	// the number of peers with a slot free: at 0 no chunk can go to a peer.
	slots, assigned []int
	open            int
	// held says a peer other than the seeds holds the whole blob and has no request out
	// for EndgameAge: the seeds are then left alone, as every member of the swarm knows
	// them. It is worked out (from inflight and n, the chunk count) only when a chunk would
	// go to a seed, which most calls never come to; heldKnown says it has been.
	inflight        []Inflight
	n               int
	held, heldKnown bool
	// toWhole counts the requests out to whole holders (not seeds), those handed out
	// included, and wholeCap caps it (0: no cap): while a peer still downloading the blob
	// holds a chunk this node wants, WholeAtOnce if one such peer is not busy, else at least
	// PerPeer.
	toWhole, wholeCap int
	// tiers is each peer's turn in best (tierOf), worked out once.
	tiers []tier
}

func (p Policy) picker(s Snapshot) *picker {
	n := len(s.Peers)
	k := &picker{p: p, peers: s.Peers, self: s.Self, ties: make([]rendezvous.Seed, n), tied: make([]bool, n),
		slots: make([]int, n), assigned: make([]int, n), inflight: s.Inflight, n: len(s.Have), tiers: make([]tier, n)}
	known, sum := 0, 0.0
	for i, pv := range s.Peers {
		if pv.Rate > 0 {
			known++
			sum += pv.Rate
		}
		k.slots[i] = p.PerPeer - p.load(pv)
		if k.slots[i] > 0 {
			k.open++
		}
		if k.tiers[i] = k.tierOf(&s.Peers[i]); k.tiers[i] == tierWhole {
			k.toWhole += pv.Active
		}
	}
	k.avg = 1.0
	if known > 0 {
		k.avg = sum / float64(known)
	}
	return k
}

// best picks, among peers holding chunk c with a free slot and not in skip, the one
// expected to deliver soonest: highest rate per outstanding request, unknown rates treated
// as average. Peers still downloading the blob come first, then those holding it whole, then
// the seeds. While a downloading peer holds a chunk this node wants, whole holders get at
// most WholeAtOnce requests at once, or PerPeer (if more) when all such peers are busy (as in a
// rollout's tail, where everyone asks the last few). In a rolling update the nodes of a
// batch thus take what they can from each other: asked alike, the holders of earlier batches
// would each serve every later batch, and the first batch would upload several times what
// the last does. A seed is picked only when no other peer can be, and none once another peer
// holds the whole blob and has no request out for EndgameAge (every node knows the seeds,
// which as everyone's fallback would upload at their link's rate all through a rolling
// update; the chunk waits for a slot instead). It returns the peer's place, or -1.
func (k *picker) best(c int, skip []string) int {
	if k.open == 0 {
		return -1
	}
	if i := k.bestOf(c, tierPartial, skip); i >= 0 {
		return i
	}
	if k.wholeCap == 0 || k.toWhole < k.wholeCap {
		if i := k.bestOf(c, tierWhole, skip); i >= 0 {
			return i
		}
	}
	if k.wholeElsewhere() {
		return -1
	}
	return k.bestOf(c, tierSeed, skip)
}

// tier is the rank of a peer's turn in best: lower is asked first.
type tier int

const (
	tierPartial tier = iota // downloading the blob too
	tierWhole               // holding every chunk
	tierSeed                // one of the blob's seeds
)

func (k *picker) tierOf(pv *PeerView) tier {
	switch {
	case pv.Seed:
		return tierSeed
	case pv.Complete && len(pv.Has) == k.n:
		return tierWhole
	}
	return tierPartial
}

// wholeElsewhere reports whether a peer other than the seeds holds the whole blob and has no
// request out for EndgameAge (one that has may be frozen or dead, and does not keep the
// seeds from being asked).
func (k *picker) wholeElsewhere() bool {
	if k.heldKnown {
		return k.held
	}
	k.heldKnown = true
	for i := range k.peers {
		pv := &k.peers[i]
		if k.tiers[i] != tierWhole {
			continue
		}
		stale := slices.ContainsFunc(k.inflight, func(f Inflight) bool { return f.Peer == pv.ID && f.Age >= k.p.EndgameAge })
		if !stale {
			k.held = true
			break
		}
	}
	return k.held
}

// bestOf is best among the peers of one tier.
func (k *picker) bestOf(c int, t tier, skip []string) int {
	best, bestScore, bestTie := -1, -1.0, uint64(0)
	for i := range k.peers {
		pv := &k.peers[i]
		if k.tiers[i] != t || c >= len(pv.Has) || !pv.Has[c] || k.slots[i] <= 0 || slices.Contains(skip, pv.ID) {
			continue
		}
		rate := pv.Rate
		if rate <= 0 {
			rate = k.avg
		}
		score := rate / float64(k.p.load(*pv)+k.assigned[i]+1)
		if score < bestScore {
			continue
		}
		if score > bestScore {
			best, bestScore, bestTie = i, score, 0
			continue
		}
		if bestTie == 0 {
			bestTie = k.tie(best, c)
		}
		if tie := k.tie(i, c); tie > bestTie || tie == bestTie && pv.ID < k.peers[best].ID {
			best, bestTie = i, tie
		}
	}
	return best
}

// tie is peer i's place for chunk c among peers of equal score; 0 means not computed.
func (k *picker) tie(i, c int) uint64 {
	if !k.tied[i] {
		k.ties[i] = rendezvous.SeedOf(k.self, k.peers[i].ID)
		k.tied[i] = true
	}
	return max(k.ties[i].Weight(uint64(c)), 1)
}

// take counts a request for chunk c handed to peer i.
func (k *picker) take(i, c int) Request {
	if k.tiers[i] == tierWhole {
		k.toWhole++
	}
	k.slots[i]--
	k.assigned[i]++
	if k.slots[i] == 0 {
		k.open--
	}
	return Request{Chunk: c, Peer: k.peers[i].ID}
}

// endgame re-requests chunks whose only outstanding requests are old, from a different peer;
// each such request is a duplicate.
func (p Policy) endgame(s Snapshot, pick *picker) []Request {
	n := len(s.Have)
	fresh := make([]bool, n) // has a request younger than EndgameAge
	asked := make([][]string, n)
	dups := 0
	for _, f := range s.Inflight {
		if f.Duplicate {
			dups++
		}
		if f.Chunk < 0 || f.Chunk >= n {
			continue
		}
		asked[f.Chunk] = append(asked[f.Chunk], f.Peer)
		if f.Age < p.EndgameAge || f.Peer == "" {
			fresh[f.Chunk] = true
		}
	}
	var reqs []Request
	for c := range n {
		if s.MaxDuplicates > 0 && dups >= s.MaxDuplicates {
			break
		}
		if s.Have[c] || fresh[c] || len(asked[c]) == 0 {
			continue
		}
		if i := pick.best(c, asked[c]); i >= 0 {
			reqs = append(reqs, pick.take(i, c))
			dups++
		}
	}
	return reqs
}

// designated keeps, of the chunks the origin could serve, those this node should fetch: first
// the ones designated to itself, then those designated to members that have fetched nothing
// from the origin for StealAfter. Order is kept within each group.
func (p Policy) designated(s Snapshot, chunks []int) []int {
	var members []PeerView
	for _, pv := range s.Peers {
		if pv.Member && pv.ID != s.Self && (s.Fetchers == nil || slices.Contains(s.Fetchers, pv.ID)) {
			members = append(members, pv)
		}
	}
	if len(members) == 0 || len(chunks) == 0 {
		return chunks
	}
	idle := make(map[string]bool, len(members))
	for _, pv := range members {
		idle[pv.ID] = pv.OriginIdle >= p.StealAfter && !slices.Contains(pv.Fetching, true)
	}
	self := rendezvous.SeedOf(s.Salt, s.Self)
	seeds := make([]rendezvous.Seed, len(members))
	for i, pv := range members {
		seeds[i] = rendezvous.SeedOf(s.Salt, pv.ID)
	}
	mine := make([]int, 0, len(chunks))
	var stolen []int
	for _, c := range chunks {
		owner, best := s.Self, self.Weight(uint64(c))
		for i, pv := range members {
			if w := seeds[i].Weight(uint64(c)); w > best || w == best && pv.ID < owner {
				owner, best = pv.ID, w
			}
		}
		switch {
		case owner == s.Self:
			mine = append(mine, c)
		case idle[owner]:
			stolen = append(stolen, c)
		}
	}
	return append(mine, stolen...)
}
