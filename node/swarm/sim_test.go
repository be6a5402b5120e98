package swarm

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// simulate runs the policy for n nodes starting cold on one blob of chunks chunks, in rounds
// of one chunk-transfer time: the origin serves at most origin requests a round, each node
// uploads at most upload chunks a round. Each node sees only the first view announcers
// (as a capped DHT lookup returns them) plus the nodes that asked it (hints). It returns the
// origin's amplification (chunks it served / chunks) and the rounds until every node is done.
func simulate(n, chunks, origin, upload, view int, randomView bool, seed uint64) (float64, int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%03d", i)
	}
	announced := rng.Perm(n) // announce order
	sees := make([]map[int]bool, n)
	for i := range sees {
		sees[i] = map[int]bool{}
		order := announced
		if randomView {
			order = rng.Perm(n)
		}
		for _, j := range order {
			if len(sees[i]) == view {
				break
			}
			if j != i {
				sees[i][j] = true
			}
		}
	}
	for i := range sees { // hints: a node learns of those that ask it
		for j := range sees[i] {
			sees[j][i] = true
		}
	}
	have := make([][]bool, n)
	fetching := make([][]bool, n) // from the origin, this round
	policies := make([]Policy, n)
	for i := range n {
		have[i] = make([]bool, chunks)
		fetching[i] = make([]bool, chunks)
		policies[i] = Policy{Rank: rng.Perm(chunks)}
	}
	served := 0
	for round := 1; round <= 10*chunks; round++ {
		type req struct{ node, chunk, from int } // from -1: the origin
		var reqs []req
		for i := range n {
			if !slices.Contains(have[i], false) {
				continue
			}
			s := Snapshot{Have: have[i], Self: ids[i], Salt: "sha256:sim"}
			for j := range sees[i] {
				s.Peers = append(s.Peers, PeerView{
					ID: ids[j], Has: have[j], Fetching: fetching[j],
					Member: slices.Contains(have[j], false),
				})
			}
			slices.SortFunc(s.Peers, func(a, b PeerView) int { return cmp.Compare(a.ID, b.ID) })
			for _, r := range policies[i].Next(s) {
				from := -1
				if r.Peer != "" {
					from = slices.Index(ids, r.Peer)
				}
				reqs = append(reqs, req{i, r.Chunk, from})
			}
		}
		rng.Shuffle(len(reqs), func(a, b int) { reqs[a], reqs[b] = reqs[b], reqs[a] })
		for i := range n {
			clear(fetching[i])
		}
		originLeft, uploads := origin, make([]int, n)
		var done []req
		for _, r := range reqs {
			switch {
			case r.from < 0 && originLeft > 0:
				originLeft--
				served++
				fetching[r.node][r.chunk] = true
				done = append(done, r)
			case r.from >= 0 && uploads[r.from] < upload:
				uploads[r.from]++
				done = append(done, r)
			}
		}
		for _, r := range done {
			have[r.node][r.chunk] = true
		}
		finished := true
		for i := range n {
			finished = finished && !slices.Contains(have[i], false)
		}
		if finished {
			return float64(served) / float64(chunks), round
		}
	}
	return float64(served) / float64(chunks), -1
}

// TestFleetSimulation runs the policy on simulated fleets starting cold together. Where every
// member sees every other (up to a lookup's 20 providers) the origin sends the blob about
// once; larger fleets are reported to show where the DHT alone stops de-duplicating. Views
// are random samples of the holders, as the router returns them; "first" views (every node
// seeing the same first announcers) show why: the first few members serve everyone.
func TestFleetSimulation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		nodes, view int
		random      bool
		bar         float64 // 0: report only
	}{
		{6, 20, true, 1.25}, {20, 20, true, 1.25}, {50, 20, false, 0},
		{50, 20, true, 0}, {200, 20, true, 0},
	} {
		amp, rounds := simulate(tc.nodes, 64, 4, 4, tc.view, tc.random, 1)
		t.Logf("%3d nodes, lookups of %d providers (random %v): origin %.2fx the blob, done in %d rounds (one copy from the origin alone: %d)",
			tc.nodes, tc.view, tc.random, amp, rounds, 64/4)
		if rounds < 0 {
			t.Errorf("%d nodes: not done", tc.nodes)
		}
		if tc.bar > 0 && amp > tc.bar {
			t.Errorf("%d nodes: origin %.2fx the blob, want <= %.2fx", tc.nodes, amp, tc.bar)
		}
	}
}
