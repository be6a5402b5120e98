package swarm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/rendezvous"
)

func bits(n int, set ...int) []bool {
	b := make([]bool, n)
	for _, i := range set {
		b[i] = true
	}
	return b
}

func all(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

func TestPolicyNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy Policy
		snap   Snapshot
		want   []Request
	}{
		{
			name: "alone, a reader at the start: origin in order",
			snap: Snapshot{Have: bits(10), Readers: []int{0}},
			want: []Request{{0, ""}, {1, ""}, {2, ""}, {3, ""}},
		},
		{
			name:   "alone, no reader: origin in the node's own order",
			policy: Policy{Origin: 3, Rank: []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
			snap:   Snapshot{Have: bits(10)},
			want:   []Request{{9, ""}, {8, ""}, {7, ""}},
		},
		{
			name: "origin cap counts what is in flight",
			snap: Snapshot{Have: bits(10), Readers: []int{0}, Inflight: []Inflight{{Chunk: 0, Peer: "", Age: 0}, {Chunk: 1, Peer: "", Age: 0}, {Chunk: 2, Peer: "", Age: 0}}},
			want: []Request{{3, ""}},
		},
		{
			name:   "peers hold everything: nothing from the origin, per-peer cap kept",
			policy: Policy{PerPeer: 2},
			snap:   Snapshot{Have: bits(6), Peers: []PeerView{{ID: "a", Has: all(6)}, {ID: "b", Has: all(6)}}},
			want:   []Request{{0, "a"}, {1, "b"}, {2, "b"}, {3, "a"}},
		},
		{
			name:   "seeds are asked only what no other peer can give",
			policy: Policy{PerPeer: 1},
			snap: Snapshot{Have: bits(3), Peers: []PeerView{
				{ID: "a", Has: all(3), Seed: true, Rate: 100}, {ID: "b", Has: bits(3, 0, 1), Rate: 1},
			}},
			want: []Request{{2, "a"}, {0, "b"}},
		},
		{
			name:   "with a whole holder besides the seeds, the seeds are left alone",
			policy: Policy{PerPeer: 1},
			snap: Snapshot{Have: bits(3), Peers: []PeerView{
				{ID: "a", Has: all(3), Complete: true, Seed: true, Rate: 100},
				{ID: "b", Has: all(3), Complete: true, Rate: 1}, {ID: "c", Has: bits(3, 1), Rate: 1},
			}},
			want: []Request{{0, "b"}, {1, "c"}},
		},
		{
			name:   "a whole holder whose request is old does not keep the seeds from being asked",
			policy: Policy{PerPeer: 1},
			snap: Snapshot{Have: bits(3), Inflight: []Inflight{{Chunk: 0, Peer: "b", Age: 3 * time.Second}}, Peers: []PeerView{
				{ID: "a", Has: all(3), Complete: true, Seed: true, Rate: 100},
				{ID: "b", Has: all(3), Complete: true, Active: 1, Rate: 1},
			}},
			want: []Request{{1, "a"}},
		},
		{
			name: "rarest first with a complete holder",
			snap: Snapshot{Have: bits(3), Peers: []PeerView{
				{ID: "a", Has: all(3), Complete: true}, {ID: "b", Has: bits(3, 0)},
			}},
			want: []Request{{1, "a"}, {0, "b"}},
		},
		{
			name: "peers still downloading are asked before whole holders",
			snap: Snapshot{Have: bits(4), Peers: []PeerView{
				{ID: "w", Has: all(4), Complete: true, Rate: 100}, {ID: "p", Has: bits(4, 1, 2), Rate: 1},
			}},
			want: []Request{{0, "w"}, {1, "p"}, {2, "p"}},
		},
		{
			name:   "while a downloading peer holds a chunk we lack, whole holders get one request at once",
			policy: Policy{PerPeer: 2},
			snap: Snapshot{Have: bits(6), Peers: []PeerView{
				{ID: "w1", Has: all(6), Complete: true, Rate: 10}, {ID: "w2", Has: all(6), Complete: true, Rate: 1},
				{ID: "p", Has: bits(6, 5)},
			}},
			want: []Request{{0, "w1"}, {5, "p"}},
		},
		{
			name:   "smaller chunks: whole holders get more requests at once",
			policy: Policy{PerPeer: 2, WholeAtOnce: 3},
			snap: Snapshot{Have: bits(6), Peers: []PeerView{
				{ID: "w1", Has: all(6), Complete: true, Rate: 10}, {ID: "w2", Has: all(6), Complete: true, Rate: 1},
				{ID: "p", Has: bits(6, 5)},
			}},
			want: []Request{{0, "w1"}, {1, "w1"}, {2, "w2"}, {5, "p"}},
		},
		{
			name:   "the cap on whole holders counts what is out to them",
			policy: Policy{PerPeer: 2},
			snap: Snapshot{Have: bits(6), Inflight: []Inflight{{Chunk: 0, Peer: "w2", Age: time.Millisecond}}, Peers: []PeerView{
				{ID: "w1", Has: all(6), Complete: true, Rate: 10}, {ID: "w2", Has: all(6), Complete: true, Rate: 1, Active: 1},
				{ID: "p", Has: bits(6, 5)},
			}},
			want: []Request{{5, "p"}},
		},
		{
			name:   "a busy downloading peer leaves whole holders a peer's worth of requests",
			policy: Policy{PerPeer: 2},
			snap: Snapshot{Have: bits(6), Peers: []PeerView{
				{ID: "w1", Has: all(6), Complete: true, Rate: 10}, {ID: "w2", Has: all(6), Complete: true, Rate: 1},
				{ID: "p", Has: bits(6, 5), Busy: true},
			}},
			want: []Request{{0, "w1"}, {1, "w1"}},
		},
		{
			name:   "a downloading peer holding only what we have does not cap whole holders",
			policy: Policy{PerPeer: 2},
			snap: Snapshot{Have: bits(6, 5), Peers: []PeerView{
				{ID: "w1", Has: all(6), Complete: true, Rate: 10}, {ID: "w2", Has: all(6), Complete: true, Rate: 1},
				{ID: "p", Has: bits(6, 5)},
			}},
			want: []Request{{0, "w1"}, {1, "w1"}, {2, "w2"}, {3, "w2"}},
		},
		{
			name:   "ties in rarity go in the node's own order",
			policy: Policy{PerPeer: 2, Rank: []int{3, 2, 1, 0}},
			snap:   Snapshot{Have: bits(4), Peers: []PeerView{{ID: "a", Has: all(4)}}},
			want:   []Request{{3, "a"}, {2, "a"}},
		},
		{
			name: "rarest first",
			snap: Snapshot{Have: bits(3), Peers: []PeerView{
				{ID: "a", Has: all(3)}, {ID: "b", Has: bits(3, 0, 2)}, {ID: "c", Has: bits(3, 0)},
			}},
			want: []Request{{1, "a"}, {2, "b"}, {0, "c"}},
		},
		{
			name: "reader window before rarest first",
			snap: Snapshot{Have: bits(20), Readers: []int{10}, Peers: []PeerView{{ID: "a", Has: all(20)}}},
			want: []Request{{10, "a"}, {11, "a"}, {12, "a"}, {13, "a"}},
		},
		{
			name: "a chunk a peer is fetching is left to it",
			snap: Snapshot{Have: bits(3), Peers: []PeerView{{ID: "a", Has: bits(3), Fetching: bits(3, 0, 1)}}},
			want: []Request{{2, ""}},
		},
		{
			name: "only what no peer has goes to the origin",
			snap: Snapshot{Have: bits(4, 0), Peers: []PeerView{{ID: "a", Has: bits(4, 1), Active: 4}}},
			want: []Request{{2, ""}, {3, ""}},
		},
		{
			name:   "faster peer preferred",
			policy: Policy{PerPeer: 1},
			snap: Snapshot{Have: bits(2), Peers: []PeerView{
				{ID: "slow", Has: all(2), Rate: 1e6}, {ID: "fast", Has: all(2), Rate: 1e8},
			}},
			want: []Request{{0, "fast"}, {1, "slow"}},
		},
		{
			name: "chunks in flight are not asked again",
			snap: Snapshot{Have: bits(3, 0), Inflight: []Inflight{{Chunk: 1, Peer: "a", Age: time.Millisecond}}, Peers: []PeerView{{ID: "a", Has: all(3), Active: 1}}},
			want: []Request{{2, "a"}},
		},
		{
			name: "endgame asks another peer for a stalled chunk",
			snap: Snapshot{
				Have:     bits(3, 0, 1),
				Inflight: []Inflight{{Chunk: 2, Peer: "slow", Age: 5 * time.Second}},
				Peers:    []PeerView{{ID: "slow", Has: all(3), Active: 1}, {ID: "other", Has: all(3)}},
			},
			want: []Request{{2, "other"}},
		},
		{
			name: "no endgame for a young request",
			snap: Snapshot{
				Have:     bits(3, 0, 1),
				Inflight: []Inflight{{Chunk: 2, Peer: "slow", Age: time.Millisecond}},
				Peers:    []PeerView{{ID: "slow", Has: all(3), Active: 1}, {ID: "other", Has: all(3)}},
			},
		},
		{
			name: "complete: nothing to do",
			snap: Snapshot{Have: all(4), Readers: []int{2}, Peers: []PeerView{{ID: "a", Has: all(4)}}},
		},
		{
			name: "origin backing off after failures: peers only",
			snap: Snapshot{Have: bits(4), Readers: []int{0}, OriginBackoff: 100 * time.Millisecond, Peers: []PeerView{{ID: "a", Has: bits(4, 1)}}},
			want: []Request{{1, "a"}},
		},
		{
			name: "origin slow start: one request until it answered",
			snap: Snapshot{Have: bits(10), Readers: []int{0}, OriginSlowStart: true},
			want: []Request{{0, ""}},
		},
		{
			name: "origin slow start: none while one is in flight",
			snap: Snapshot{Have: bits(10), Readers: []int{0}, OriginSlowStart: true, Inflight: []Inflight{{Chunk: 5, Peer: ""}}},
		},
		{
			name: "duplicate cap: endgame stops at it",
			snap: Snapshot{
				Have:          bits(4, 0, 1),
				Inflight:      []Inflight{{Chunk: 2, Peer: "slow", Age: 5 * time.Second}, {Chunk: 3, Peer: "slow", Age: 5 * time.Second}},
				Peers:         []PeerView{{ID: "slow", Has: all(4), Active: 2}, {ID: "other", Has: all(4)}},
				MaxDuplicates: 1,
			},
			want: []Request{{2, "other"}},
		},
		{
			name: "duplicate cap: duplicates in flight count",
			snap: Snapshot{
				Have:          bits(4, 0, 1),
				Inflight:      []Inflight{{Chunk: 2, Peer: "slow", Age: 5 * time.Second}, {Chunk: 3, Peer: "slow", Age: 5 * time.Second}, {Chunk: 2, Peer: "third", Age: 5 * time.Second, Duplicate: true}},
				Peers:         []PeerView{{ID: "slow", Has: all(4), Active: 2}, {ID: "third", Has: all(4), Active: 1}, {ID: "other", Has: all(4)}},
				MaxDuplicates: 1,
			},
		},
		{
			name: "a busy peer is asked nothing; the other holder takes the chunks",
			snap: Snapshot{Have: bits(3), Peers: []PeerView{{ID: "a", Has: all(3), Busy: true}, {ID: "b", Has: bits(3, 0)}}},
			want: []Request{{0, "b"}},
		},
		{
			name: "a peer in slow start gets one request, and none while it has one",
			snap: Snapshot{Have: bits(6), Peers: []PeerView{{ID: "a", Has: all(6), SlowStart: true}, {ID: "b", Has: all(6), SlowStart: true, Active: 1}}},
			want: []Request{{0, "a"}},
		},
		{
			name: "a peer in slow start comes after one with a known rate",
			snap: Snapshot{Have: bits(2, 1), Peers: []PeerView{{ID: "a", Has: all(2), SlowStart: true}, {ID: "b", Has: all(2), Rate: 1}}},
			want: []Request{{0, "b"}},
		},
		{
			name: "chunks leased to another node are left to the peers",
			snap: Snapshot{Have: bits(3), Leased: bits(3, 0, 1), Peers: []PeerView{{ID: "a", Has: bits(3, 0)}}},
			want: []Request{{0, "a"}, {2, ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.policy.Next(tt.snap); !slices.Equal(got, tt.want) {
				t.Errorf("Next() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPolicyTiesSpread checks that nodes which know the same holders equally well do not
// all ask the same one: a holder every node would ask first becomes a hot spot.
func TestPolicyTiesSpread(t *testing.T) {
	t.Parallel()
	peers := []PeerView{{ID: "a", Has: all(1)}, {ID: "b", Has: all(1)}, {ID: "c", Has: all(1)}, {ID: "d", Has: all(1)}}
	asked := map[string]int{}
	const nodes = 400
	for i := range nodes {
		reqs := Policy{}.Next(Snapshot{Have: bits(1), Peers: peers, Self: fmt.Sprintf("node-%d", i)})
		if len(reqs) != 1 || reqs[0].Peer == "" {
			t.Fatalf("node %d: Next() = %v, want one request to a peer", i, reqs)
		}
		asked[reqs[0].Peer]++
	}
	for _, pv := range peers {
		if n := asked[pv.ID]; n < nodes/4/2 || n > nodes/4*2 {
			t.Errorf("peer %s asked by %d of %d nodes, want about %d: %v", pv.ID, n, nodes, nodes/4, asked)
		}
	}
}

// TestPolicyInvariants checks random swarms: never a chunk we hold, never a peer that lacks
// the chunk, caps kept, and outside the endgame never a chunk twice.
func TestPolicyInvariants(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		n := 1 + rng.IntN(40)
		s := Snapshot{Have: make([]bool, n)}
		for c := range n {
			s.Have[c] = rng.IntN(3) == 0
		}
		for i := range rng.IntN(6) {
			pv := PeerView{ID: fmt.Sprint("p", i), Has: make([]bool, n), Fetching: make([]bool, n), Active: rng.IntN(5), Rate: float64(rng.IntN(3)) * 1e6}
			for c := range n {
				pv.Has[c] = rng.IntN(2) == 0
				pv.Fetching[c] = rng.IntN(5) == 0
			}
			s.Peers = append(s.Peers, pv)
		}
		for range rng.IntN(4) {
			s.Readers = append(s.Readers, rng.IntN(n+2))
		}
		p := Policy{PerPeer: 1 + rng.IntN(4), Origin: 1 + rng.IntN(4), Window: 1 + rng.IntN(6), Rank: rng.Perm(n)}
		reqs := p.Next(s)

		perPeer := map[string]int{}
		seen := map[int]bool{}
		origin := 0
		for _, r := range reqs {
			if r.Chunk < 0 || r.Chunk >= n || s.Have[r.Chunk] {
				t.Fatalf("iteration %d: request %v for a chunk held or out of range", iter, r)
			}
			if seen[r.Chunk] {
				t.Fatalf("iteration %d: chunk %d requested twice in %v", iter, r.Chunk, reqs)
			}
			seen[r.Chunk] = true
			if r.Peer == "" {
				origin++
				for _, pv := range s.Peers {
					if pv.Has[r.Chunk] || pv.Fetching[r.Chunk] {
						t.Fatalf("iteration %d: chunk %d from the origin though %s has or fetches it", iter, r.Chunk, pv.ID)
					}
				}
				continue
			}
			perPeer[r.Peer]++
			i := slices.IndexFunc(s.Peers, func(pv PeerView) bool { return pv.ID == r.Peer })
			if i < 0 || !s.Peers[i].Has[r.Chunk] {
				t.Fatalf("iteration %d: chunk %d asked of %s, which lacks it", iter, r.Chunk, r.Peer)
			}
			if s.Peers[i].Active+perPeer[r.Peer] > p.PerPeer {
				t.Fatalf("iteration %d: peer %s over its cap", iter, r.Peer)
			}
		}
		if origin > p.Origin {
			t.Fatalf("iteration %d: %d origin requests, cap %d", iter, origin, p.Origin)
		}
	}
}

// TestOriginOrderSpreads: nodes with different ranks starting cold at the same instant, no
// readers, pick mostly different chunks from the origin.
func TestOriginOrderSpreads(t *testing.T) {
	t.Parallel()
	const n, nodes = 256, 6
	picked := map[int]int{}
	for i := range nodes {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		p := Policy{Origin: 4, Rank: rng.Perm(n)}
		for _, r := range p.Next(Snapshot{Have: bits(n)}) {
			picked[r.Chunk]++
		}
	}
	if len(picked) < nodes*4-2 {
		t.Errorf("%d nodes picked only %d distinct chunks of %d requests", nodes, len(picked), nodes*4)
	}
}

// TestOriginDesignation: members that know each other split the origin's work: each asks the
// origin only for chunks designated to it, the designations cover every chunk exactly once,
// and a member idle at the origin has its chunks taken by the others.
func TestOriginDesignation(t *testing.T) {
	t.Parallel()
	const n = 64
	ids := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
	busy := bits(n, 63) // fetching something from the origin
	owner := map[int]string{}
	for _, self := range ids {
		s := Snapshot{Have: bits(n), Self: self, Salt: "sha256:x", Readers: []int{0}}
		for _, id := range ids {
			if id != self {
				s.Peers = append(s.Peers, PeerView{ID: id, Has: bits(n), Fetching: busy, Member: true})
			}
		}
		// Chunk 63 is being fetched by every peer in this view; leave it out of the count.
		for _, c := range (Policy{Origin: n}).designated(s, seq(63)) {
			if prev, ok := owner[c]; ok {
				t.Fatalf("chunk %d designated to %s and %s", c, prev, self)
			}
			owner[c] = self
		}
		for _, r := range (Policy{Origin: 2}).Next(s) {
			if r.Peer != "" || owner[r.Chunk] != self {
				t.Errorf("%s asked %q for chunk %d designated to %s", self, r.Peer, r.Chunk, owner[r.Chunk])
			}
		}
	}
	if len(owner) != 63 {
		t.Errorf("%d of 63 chunks designated, want all", len(owner))
	}
	perMember := map[string]int{}
	for _, id := range owner {
		perMember[id]++
	}
	for _, id := range ids {
		if perMember[id] < 3 {
			t.Errorf("member %s designated %d chunks of 63: the split is lopsided (%v)", id, perMember[id], perMember)
		}
	}

	// m1 idles at the origin: m0 takes m1's chunks after its own, but only once m1 has been
	// idle for a while.
	s := Snapshot{Have: bits(n), Self: "m0", Salt: "sha256:x", Peers: []PeerView{
		{ID: "m1", Has: bits(n), Fetching: bits(n), Member: true, OriginIdle: 500 * time.Millisecond},
		{ID: "m2", Has: bits(n), Fetching: busy, Member: true},
	}}
	for _, c := range (Policy{}).withDefaults().designated(s, seq(63)) {
		if rendezvous.Weight(s.Salt, "m0", uint64(c)) < max(rendezvous.Weight(s.Salt, "m1", uint64(c)), rendezvous.Weight(s.Salt, "m2", uint64(c))) {
			t.Fatalf("chunk %d of a member idle for only 500ms taken", c)
		}
	}
	s.Peers[0].OriginIdle = 2 * time.Second
	got := (Policy{}).withDefaults().designated(s, seq(63))
	var mine, stolen int
	for i, c := range got {
		w0, w1, w2 := rendezvous.Weight(s.Salt, "m0", uint64(c)), rendezvous.Weight(s.Salt, "m1", uint64(c)), rendezvous.Weight(s.Salt, "m2", uint64(c))
		switch {
		case w0 > w1 && w0 > w2:
			mine++
			if stolen > 0 {
				t.Errorf("own chunk %d at %d after stolen ones", c, i)
			}
		case w1 > w2:
			stolen++
		default:
			t.Errorf("chunk %d of the busy member m2 taken", c)
		}
	}
	if mine == 0 || stolen == 0 {
		t.Errorf("own %d, stolen %d; want both", mine, stolen)
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestPolicyFetchers: with the blob's seeds known, a node that is not one asks the origin
// nothing, even for chunks no peer has; a seed splits the chunks with the other seeds alone,
// not with every member it sees.
func TestPolicyFetchers(t *testing.T) {
	t.Parallel()
	n := 64
	members := []PeerView{
		{ID: "s1", Has: bits(n), Fetching: bits(n), Member: true},
		{ID: "m1", Has: bits(n), Fetching: bits(n), Member: true},
		{ID: "m2", Has: bits(n), Fetching: bits(n), Member: true},
	}
	seeds := []string{"s0", "s1"}
	s := Snapshot{Have: bits(n), Self: "m0", Salt: "sha256:x", Peers: members, Fetchers: seeds}
	if reqs := (Policy{}).Next(s); len(reqs) != 0 {
		t.Errorf("a node that is no seed asked for %v, want nothing: the seeds fetch from the origin", reqs)
	}
	s.Fetchers = nil
	if reqs := (Policy{}).Next(s); len(reqs) == 0 {
		t.Error("with no seed live, the node asked the origin for nothing")
	}

	s = Snapshot{Have: bits(n), Self: "s0", Salt: "sha256:x", Peers: members, Fetchers: seeds}
	got := (Policy{}).withDefaults().designated(s, seq(n))
	for _, c := range got {
		if rendezvous.Weight(s.Salt, "s0", uint64(c)) < rendezvous.Weight(s.Salt, "s1", uint64(c)) {
			t.Errorf("seed s0 took chunk %d, designated to the other seed", c)
		}
	}
	// About half the chunks, not a quarter: m1 and m2 are members but not seeds.
	if len(got) < n/3 {
		t.Errorf("seed s0 takes %d of %d chunks, want about half", len(got), n)
	}
}

// BenchmarkPolicyNext is one decision of a download of 64 chunks among 32 peers that hold
// random halves of it, with this node holding none, half, or all but a few of the chunks.
func BenchmarkPolicyNext(b *testing.B) {
	const n, peers = 64, 32
	rng := rand.New(rand.NewPCG(1, 2))
	snap := func(held float64) Snapshot {
		s := Snapshot{Have: make([]bool, n), Self: "self", Salt: "sha256:x"}
		for c := range n {
			s.Have[c] = rng.Float64() < held
		}
		for i := range peers {
			pv := PeerView{ID: fmt.Sprintf("peer-%02d", i), Has: make([]bool, n), Member: true, Rate: float64(1 + i%4)}
			for c := range n {
				pv.Has[c] = rng.Float64() < 0.5
			}
			s.Peers = append(s.Peers, pv)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		held float64
	}{{"start", 0}, {"half", 0.5}, {"end", 0.95}} {
		s := snap(tc.held)
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				Policy{}.Next(s)
			}
		})
	}
}
