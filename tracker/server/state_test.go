package server

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/tracker"
)

// newFakeClock is a clock tests move by hand, at a fixed start.
func newFakeClock() *clock.Mock {
	c := clock.NewMock()
	c.Set(time.Unix(1_700_000_000, 0))
	return c
}

var (
	blobA = digest.FromString("a")
	blobB = digest.FromString("b")
)

const (
	testSize  = 10 << 20 // three chunks of testChunk
	testChunk = 4 << 20
)

func announce(t *testing.T, s *State, peer string, blobs ...tracker.BlobState) AnnounceResult {
	t.Helper()
	res, err := s.Announce(tracker.AnnounceRequest{Peer: peer, Addrs: []string{"/ip4/10.0.0.1/tcp/1/p2p/" + peer}, Blobs: blobs})
	if err != nil {
		t.Fatalf("Announce(%s) = %v", peer, err)
	}
	return res
}

func downloading(d digest.Digest, done int64) tracker.BlobState {
	return tracker.BlobState{Digest: d, Size: testSize, ChunkSize: testChunk, Done: done}
}

func holding(d digest.Digest) tracker.BlobState {
	return tracker.BlobState{Digest: d, Size: testSize, ChunkSize: testChunk, Done: testSize, Complete: true}
}

func peersOf(res AnnounceResult, d digest.Digest) []string {
	for _, sw := range res.Swarms {
		if sw.Digest == d {
			var out []string
			for _, m := range sw.Members {
				out = append(out, m.Peer)
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}

func leaseReq(peer string, chunk int) tracker.LeaseRequest {
	return tracker.LeaseRequest{Peer: peer, Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: chunk}
}

func mustLease(t *testing.T, s *State, req tracker.LeaseRequest) tracker.LeaseResponse {
	t.Helper()
	resp, err := s.Lease(req)
	if err != nil {
		t.Fatalf("Lease(%+v) = %v", req, err)
	}
	return resp
}

func TestStateMembership(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := NewState(Limits{}, clock.Now)

	if got := peersOf(announce(t, s, "A", downloading(blobA, 0)), blobA); len(got) != 0 {
		t.Fatalf("first announce sees %v, want nobody", got)
	}
	// A holder is told nobody: it needs no peers (TestStateHoldersGetNoMembers).
	if res := announce(t, s, "B", holding(blobA)); len(res.Swarms) != 0 {
		t.Fatalf("B, holding, is answered %+v, want no swarms", res.Swarms)
	}
	res := announce(t, s, "A", downloading(blobA, 1<<20))
	if got := peersOf(res, blobA); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("A sees %v, want [B]", got)
	}
	if m := res.Swarms[0].Members[0]; !m.Complete || m.Done != testSize || len(m.Addrs) != 1 {
		t.Errorf("A sees B as %+v, want complete with its addr", m)
	}

	// Gone: B leaves at once.
	announce(t, s, "B", tracker.BlobState{Digest: blobA, Gone: true})
	if got := peersOf(announce(t, s, "A", downloading(blobA, 2<<20)), blobA); len(got) != 0 {
		t.Fatalf("after B's Gone A sees %v, want nobody", got)
	}

	// Expiry: a downloader after DownloadTTL, a holder after HolderTTL.
	announce(t, s, "B", holding(blobA))
	announce(t, s, "C", downloading(blobA, 0))
	clock.Add(tracker.DownloadTTL + time.Millisecond)
	if got := peersOf(announce(t, s, "D", downloading(blobA, 0)), blobA); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("after tracker.DownloadTTL D sees %v, want [B] (A and C expired)", got)
	}
	clock.Add(tracker.HolderTTL)
	s.Sweep()
	if st := s.Stats(); st.Swarms != 0 || st.Members != 0 || st.Peers != 0 {
		t.Errorf("after tracker.HolderTTL Stats() = %+v, want empty", st)
	}
}

// TestStateHoldersGetNoMembers: a node announcing everything it holds in a large fleet gets
// an answer of constant size (members of a held blob would fill it: 200 held blobs in swarms
// of 60 came to more than the client's 1 MiB limit), while a download in the same swarms is
// still told MaxMembers others.
func TestStateHoldersGetNoMembers(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	held := make([]tracker.BlobState, 200)
	for i := range held {
		held[i] = holding(digest.FromString(fmt.Sprint("held ", i)))
	}
	for i := range 60 {
		if res := announce(t, s, fmt.Sprint("P", i), held...); len(res.Swarms) != 0 || res.Refused != 0 {
			t.Fatalf("holder %d is answered %d swarms, %d refused; want 0 and 0", i, len(res.Swarms), res.Refused)
		}
	}
	res := announce(t, s, "D", downloading(held[0].Digest, 0))
	if got := len(peersOf(res, held[0].Digest)); got != tracker.MaxMembers {
		t.Errorf("a downloader is told %d members of a 60-member swarm, want %d", got, tracker.MaxMembers)
	}
}

func TestStatePickPrefersProgress(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	for i := range 100 {
		announce(t, s, fmt.Sprintf("dl%03d", i), downloading(blobA, int64(i)*testSize/200))
	}
	for i := range 100 {
		announce(t, s, fmt.Sprintf("h%03d", i), holding(blobA))
	}
	res := announce(t, s, "me", downloading(blobA, 0))
	ms := res.Swarms[0].Members
	if len(ms) != tracker.MaxMembers {
		t.Fatalf("%d members, want %d", len(ms), tracker.MaxMembers)
	}
	// The fetchers are three of the first to join, listed first whatever their progress.
	var first []string
	for i := range 100 {
		first = append(first, fmt.Sprintf("dl%03d", i))
	}
	if f, want := res.Swarms[0].Fetchers, byWeight(blobA, first, 3); !slices.Equal(f, want) {
		t.Fatalf("fetchers %v, want %v", f, want)
	}
	for i, m := range ms[:3] {
		if m.Peer != res.Swarms[0].Fetchers[i] {
			t.Fatalf("member %d is %s, want the fetchers first", i, m.Peer)
		}
	}
	holders, minDone := 0, int64(testSize)
	for _, m := range ms[3:] {
		if m.Peer == "me" {
			t.Fatal("the asking peer is in its own list")
		}
		if m.Complete {
			holders++
		} else {
			minDone = min(minDone, m.Done)
		}
	}
	if holders == 0 || holders == tracker.MaxMembers {
		t.Errorf("%d complete holders of %d, want both holders and downloaders", holders, tracker.MaxMembers)
	}
	// The downloaders listed are those furthest along (top 1/8 of progress or so).
	if minDone < testSize/4 {
		t.Errorf("a downloader with %d of %d bytes listed, want the furthest along", minDone, testSize)
	}
}

// TestStatePickLatestHolders: in a rolling update the holders listed are those that
// completed last, not the first batch again and again, and every prefix of the list (a node
// tracks only its first members) mixes holders and downloaders.
func TestStatePickLatestHolders(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s := NewState(Limits{}, clk.Now)
	// Eight batches of twenty (with the next batch, fewer than one announce looks at): each
	// downloads, then completes, a second after the one before.
	for b := range 8 {
		for i := range 20 {
			announce(t, s, fmt.Sprintf("b%d-%02d", b, i), downloading(blobA, testSize/2))
		}
		clk.Add(time.Second)
		for i := range 20 {
			announce(t, s, fmt.Sprintf("b%d-%02d", b, i), holding(blobA))
		}
	}
	for i := range 20 {
		announce(t, s, fmt.Sprintf("new-%02d", i), downloading(blobA, int64(i)*testSize/40))
	}
	res := announce(t, s, "me", downloading(blobA, 0))
	fetchers := len(res.Swarms[0].Fetchers)
	ms := res.Swarms[0].Members[fetchers:]
	batchOf := func(m tracker.Member) int {
		var b, i int
		if _, err := fmt.Sscanf(m.Peer, "b%d-%d", &b, &i); err != nil {
			t.Fatalf("holder %q: not one of the batches", m.Peer)
		}
		return b
	}
	holders, downloaders := 0, 0
	for i, m := range ms {
		if m.Complete {
			holders++
			// 160 holders: the 36 listed are the last batch and most of the one before.
			if b := batchOf(m); b < 6 && !slices.Contains(res.Swarms[0].Fetchers, m.Peer) {
				t.Errorf("member %d is %s, of batch %d: want the latest batches' holders", i, m.Peer, b)
			}
		} else {
			downloaders++
		}
		if n := i + 1; n >= 8 && (holders == 0 || downloaders == 0) {
			t.Fatalf("the first %d members are %d holders and %d downloaders, want both", n, holders, downloaders)
		}
	}
	if holders == 0 || downloaders == 0 {
		t.Errorf("%d holders and %d downloaders listed, want both", holders, downloaders)
	}
}

func TestStateConflictRecordsNothing(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	announce(t, s, "A", downloading(blobA, 0))
	_, err := s.Announce(tracker.AnnounceRequest{Peer: "B", Blobs: []tracker.BlobState{
		downloading(blobB, 0),
		{Digest: blobA, Size: testSize + 1, ChunkSize: testChunk},
	}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Announce(other size) = %v, want ErrConflict", err)
	}
	_, err = s.Announce(tracker.AnnounceRequest{Peer: "B", Blobs: []tracker.BlobState{{Digest: blobA, Size: testSize, ChunkSize: 1 << 20}}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Announce(other chunk size) = %v, want ErrConflict", err)
	}
	if st := s.Stats(); st.Peers != 1 || st.Swarms != 1 || st.Members != 1 {
		t.Errorf("after conflicts Stats() = %+v, want only A's announce", st)
	}
	// Size unknown to the sender (0) is no conflict.
	announce(t, s, "B", tracker.BlobState{Digest: blobA})
}

func TestStateLeases(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := NewState(Limits{}, clock.Now)
	announce(t, s, "A", downloading(blobA, 0))
	announce(t, s, "B", downloading(blobA, 0))

	if resp := mustLease(t, s, leaseReq("A", 0)); !resp.Granted || resp.TTLMillis != tracker.LeaseTTL.Milliseconds() {
		t.Fatalf("A's first lease = %+v, want granted for tracker.LeaseTTL", resp)
	}
	if resp := mustLease(t, s, leaseReq("B", 0)); resp.Granted || resp.Holder != "A" {
		t.Fatalf("B's lease of A's chunk = %+v, want refused with holder A", resp)
	}
	if resp := mustLease(t, s, leaseReq("B", 1)); !resp.Granted {
		t.Fatalf("B's lease of a free chunk = %+v, want granted", resp)
	}

	// A renews within the TTL, keeping the chunk past the first lease's end.
	for range 3 {
		clock.Add(tracker.LeaseTTL / 2)
		announce(t, s, "A", downloading(blobA, 0))
		announce(t, s, "B", downloading(blobA, 0))
		if resp := mustLease(t, s, leaseReq("A", 0)); !resp.Granted {
			t.Fatalf("A's renewal = %+v, want granted", resp)
		}
		if resp := mustLease(t, s, leaseReq("B", 0)); resp.Granted || resp.Holder != "A" {
			t.Fatalf("B's lease of renewed chunk = %+v, want holder A", resp)
		}
	}

	// A's holder dies (stops renewing but stays a member): after LeaseTTL the chunk goes to B.
	for range 4 {
		clock.Add(tracker.LeaseTTL / 4)
		announce(t, s, "A", downloading(blobA, 0))
		announce(t, s, "B", downloading(blobA, 0))
	}
	if resp := mustLease(t, s, leaseReq("B", 0)); !resp.Granted {
		t.Fatalf("B's lease after A's expired = %+v, want granted", resp)
	}
	if resp := mustLease(t, s, leaseReq("A", 0)); resp.Granted || resp.Holder != "B" {
		t.Fatalf("A's late renewal = %+v, want holder B", resp)
	}

	// B releases with Done: the chunk is not leased again while B is a member.
	mustLease(t, s, tracker.LeaseRequest{Peer: "B", Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: 0, Release: true, Done: true})
	if resp := mustLease(t, s, leaseReq("A", 0)); resp.Granted || resp.Holder != "B" {
		t.Fatalf("lease of a done chunk = %+v, want holder B", resp)
	}
	// A plain release frees the chunk for the next.
	mustLease(t, s, tracker.LeaseRequest{Peer: "B", Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: 1, Release: true})
	if resp := mustLease(t, s, leaseReq("A", 1)); !resp.Granted {
		t.Fatalf("lease of a released chunk = %+v, want granted", resp)
	}

	// B's membership lapses: its done chunk is leasable again.
	for range 3 {
		clock.Add(tracker.DownloadTTL / 2)
		announce(t, s, "A", downloading(blobA, 0))
	}
	if resp := mustLease(t, s, leaseReq("A", 0)); !resp.Granted {
		t.Fatalf("lease of a chunk done by an expired member = %+v, want granted", resp)
	}
	if _, err := s.Lease(leaseReq("B", 2)); !errors.Is(err, ErrNotMember) {
		t.Fatalf("lease by an expired member = %v, want ErrNotMember", err)
	}
}

func TestStateLeaseGoneFreesChunks(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	announce(t, s, "A", downloading(blobA, 0))
	announce(t, s, "B", downloading(blobA, 0))
	mustLease(t, s, leaseReq("A", 0))
	mustLease(t, s, tracker.LeaseRequest{Peer: "A", Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: 1, Release: true, Done: true})
	announce(t, s, "A", tracker.BlobState{Digest: blobA, Gone: true})
	for i := range 2 {
		if resp := mustLease(t, s, leaseReq("B", i)); !resp.Granted {
			t.Fatalf("lease of chunk %d after its holder's Gone = %+v, want granted", i, resp)
		}
	}
	if _, err := s.Lease(leaseReq("A", 2)); !errors.Is(err, ErrNotMember) {
		t.Fatalf("lease after Gone = %v, want ErrNotMember", err)
	}
}

func TestStateLeaseRefusals(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	announce(t, s, "A", downloading(blobA, 0))
	announce(t, s, "C", tracker.BlobState{Digest: blobB})
	tests := []struct {
		name string
		req  tracker.LeaseRequest
		want error
	}{
		{name: "not a member", req: leaseReq("B", 0), want: ErrNotMember},
		{name: "unknown blob", req: tracker.LeaseRequest{Peer: "A", Digest: blobB, Size: testSize, ChunkSize: testChunk}, want: ErrNotMember},
		{name: "index past the end", req: leaseReq("A", 3), want: ErrOutOfRange},
		{name: "negative index", req: leaseReq("A", -1), want: ErrOutOfRange},
		{name: "other size", req: tracker.LeaseRequest{Peer: "A", Digest: blobA, Size: testSize * 2, ChunkSize: testChunk}, want: ErrConflict},
		{name: "other chunk size", req: tracker.LeaseRequest{Peer: "A", Digest: blobA, Size: testSize, ChunkSize: 1 << 20, Chunk: 5}, want: ErrConflict},
	}
	for _, tt := range tests {
		if resp, err := s.Lease(tt.req); !errors.Is(err, tt.want) || resp.Granted {
			t.Errorf("%s: Lease = %+v, %v, want %v", tt.name, resp, err, tt.want)
		}
	}
	if st := s.Stats(); st.Leases != 0 {
		t.Errorf("after refusals %d leases, want 0", st.Leases)
	}
	// A swarm that did not know the size learns it from a member's lease.
	if resp := mustLease(t, s, tracker.LeaseRequest{Peer: "C", Digest: blobB, Size: testSize, ChunkSize: testChunk, Chunk: 2}); !resp.Granted {
		t.Fatalf("lease in a swarm of unknown size = %+v, want granted", resp)
	}
	if _, err := s.Lease(tracker.LeaseRequest{Peer: "C", Digest: blobB, Size: testSize + 1, ChunkSize: testChunk}); !errors.Is(err, ErrConflict) {
		t.Fatalf("lease with another size after it was learned = %v, want ErrConflict", err)
	}
}

func TestStateCaps(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := NewState(Limits{MaxPeers: 3, MaxSwarms: 2, MaxMembers: 4, MaxSwarmMembers: 3, MaxChunkMarks: 2, MaxSwarmMarks: 2}, clock.Now)
	if res := announce(t, s, "A", downloading(blobA, 0), downloading(blobB, 0), downloading(digest.FromString("c"), 0)); res.Refused != 1 {
		t.Fatalf("third swarm: %d refused, want 1 (MaxSwarms)", res.Refused)
	}
	announce(t, s, "B", downloading(blobA, 0))
	if res := announce(t, s, "C", downloading(blobA, 0), downloading(blobB, 0)); res.Refused != 1 {
		t.Fatalf("fifth member: %d refused, want 1 (tracker.MaxMembers)", res.Refused)
	}
	if res := announce(t, s, "D", downloading(blobA, 0)); res.Refused != 2 {
		t.Fatalf("fourth peer: %d refused, want 2 (MaxPeers, and no membership)", res.Refused)
	}
	// Existing entries are still refreshed, and a refused one still sees the swarm.
	res := announce(t, s, "A", downloading(blobA, 1), downloading(blobB, 1))
	if res.Refused != 0 {
		t.Fatalf("refresh: %d refused, want 0", res.Refused)
	}
	if got := peersOf(announce(t, s, "C", downloading(blobA, 0), downloading(blobB, 0)), blobB); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("refused member sees %v in blobB, want [A]", got)
	}
	if st := s.Stats(); st.Peers != 3 || st.Swarms != 2 || st.Members != 4 {
		t.Fatalf("Stats() = %+v, want the caps", st)
	}

	mustLease(t, s, leaseReq("A", 0))
	mustLease(t, s, leaseReq("A", 1))
	if _, err := s.Lease(leaseReq("A", 2)); !errors.Is(err, ErrFull) {
		t.Fatalf("third lease = %v, want ErrFull", err)
	}
	mustLease(t, s, leaseReq("A", 1)) // a renewal needs no room

	// Expired entries make room.
	clock.Add(tracker.HolderTTL + maxSweepInterval)
	if res := announce(t, s, "D", downloading(digest.FromString("c"), 0)); res.Refused != 0 {
		t.Fatalf("after expiry: %d refused, want 0", res.Refused)
	}
}

func TestStateSwarmsAndBootstrap(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	announce(t, s, "A", holding(blobA))
	announce(t, s, "B", tracker.BlobState{Digest: blobA, Size: testSize, ChunkSize: testChunk, Done: testSize / 2, FromOrigin: 5, FromPeers: 7})
	announce(t, s, "C", tracker.BlobState{Digest: blobB})
	mustLease(t, s, leaseReq("B", 1))
	got := s.Swarms()
	want := []tracker.SwarmView{
		{Digest: blobA, Size: testSize, Members: 2, Complete: 1, Progress: 0.75, FromOrigin: 5, FromPeers: 7, Leases: 1},
		{Digest: blobB, Members: 1},
	}
	slices.SortFunc(want, func(a, b tracker.SwarmView) int { return cmp.Compare(a.Digest, b.Digest) })
	if !slices.Equal(got, want) {
		t.Fatalf("Swarms() = %+v, want %+v", got, want)
	}

	for i := range 40 {
		announce(t, s, fmt.Sprintf("P%02d", i))
	}
	if addrs := s.Bootstrap(); len(addrs) != bootstrapPeers {
		t.Fatalf("Bootstrap() = %d addrs, want %d", len(addrs), bootstrapPeers)
	}
}

// byWeight returns the n of candidates (in join order) that fetchersOf chooses: the heaviest
// by rendezvous hash with d among the first fetcherPool.
func byWeight(d digest.Digest, candidates []string, n int) []string {
	pool := slices.Clone(candidates[:min(len(candidates), fetcherPool)])
	slices.SortFunc(pool, func(a, b string) int {
		return cmp.Compare(rendezvous.Weight(string(d), b, 0), rendezvous.Weight(string(d), a, 0))
	})
	return pool[:min(n, len(pool))]
}

func TestStateFetchers(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := NewState(Limits{}, clock.Now)
	fetchersOf := func(res AnnounceResult) []string {
		t.Helper()
		if len(res.Swarms) != 1 {
			t.Fatalf("%d swarms answered, want 1", len(res.Swarms))
		}
		return res.Swarms[0].Fetchers
	}
	if f := fetchersOf(announce(t, s, "p00", downloading(blobA, 0))); !slices.Equal(f, []string{"p00"}) {
		t.Fatalf("the first member sees fetchers %v, want itself", f)
	}
	var joined []string
	for i := range 24 {
		id := fmt.Sprintf("p%02d", i)
		joined = append(joined, id)
		announce(t, s, id, downloading(blobA, 0), downloading(blobB, 0))
	}
	// Every member is told the same three, chosen among the first 16 by the blob's key,
	// and gets their addrs; another blob with the same members gets others.
	want := byWeight(blobA, joined, tracker.Fetchers)
	for _, p := range []string{"p00", "p20", "late"} {
		res := announce(t, s, p, downloading(blobA, 0))
		if f := fetchersOf(res); !slices.Equal(f, want) {
			t.Fatalf("%s sees fetchers %v, want %v", p, f, want)
		}
		for _, f := range want {
			if f != p && !slices.Contains(peersOf(res, blobA), f) {
				t.Errorf("%s is not told of fetcher %s as a member", p, f)
			}
		}
	}
	if fb := fetchersOf(announce(t, s, "p01", downloading(blobB, 0))); slices.Equal(fb, want) {
		t.Errorf("two blobs with the same members have the same fetchers %v", fb)
	}
	// A fetcher that leaves is replaced from the first members left; the others keep their
	// places, and one that completes stays a fetcher.
	announce(t, s, want[0], tracker.BlobState{Digest: blobA, Gone: true})
	announce(t, s, want[1], holding(blobA))
	rest := slices.DeleteFunc(slices.Clone(joined), func(id string) bool { return slices.Contains(want, id) })
	next := append(slices.Clone(want[1:]), byWeight(blobA, rest, 1)...)
	if f := fetchersOf(announce(t, s, "p20", downloading(blobA, 0))); !slices.Equal(f, next) {
		t.Fatalf("after %s left: fetchers %v, want %v", want[0], f, next)
	}
	// One that stops announcing is replaced once it expires (the holder stays).
	clock.Add(tracker.DownloadTTL / 2)
	for _, id := range append(slices.Clone(joined), "late") {
		if id != next[1] && id != want[0] {
			announce(t, s, id, downloading(blobA, 0))
		}
	}
	clock.Add(tracker.DownloadTTL/2 + time.Millisecond)
	rest = slices.DeleteFunc(slices.Clone(joined), func(id string) bool { return slices.Contains(want, id) || slices.Contains(next, id) })
	last := append([]string{next[0], next[2]}, byWeight(blobA, rest, 1)...)
	if f := fetchersOf(announce(t, s, "p20", downloading(blobA, 0))); !slices.Equal(f, last) {
		t.Fatalf("after %s expired: fetchers %v, want %v", next[1], f, last)
	}
}

// TestStateFetchersSpread: the layers of one image, joined by the same members in the same
// order, get different fetchers, so no node fetches most of the image.
func TestStateFetchersSpread(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{}, newFakeClock().Now)
	var blobs []tracker.BlobState
	for i := range 4 {
		blobs = append(blobs, downloading(digest.FromString(fmt.Sprint("layer", i)), 0))
	}
	for i := range 20 {
		announce(t, s, fmt.Sprintf("p%02d", i), blobs...)
	}
	res := announce(t, s, "p00", blobs...)
	named := map[string]int{}
	for _, sw := range res.Swarms {
		if len(sw.Fetchers) != tracker.Fetchers {
			t.Fatalf("%s: fetchers %v, want %d", sw.Digest, sw.Fetchers, tracker.Fetchers)
		}
		for _, f := range sw.Fetchers {
			named[f]++
		}
	}
	if len(named) != len(blobs)*tracker.Fetchers {
		t.Errorf("fetchers of the four layers: %v, want each node named for one layer at most", named)
	}
}

func TestStateAnnounceInterval(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := NewState(Limits{AnnounceRate: 100}, clock.Now)
	if got := announce(t, s, "p0", downloading(blobA, 0)).Interval; got != tracker.AnnounceDownload {
		t.Fatalf("interval %v with one downloader, want %v", got, tracker.AnnounceDownload)
	}
	// 500 nodes downloading two blobs each, at 100 announces a second: every 5 s.
	for i := range 500 {
		announce(t, s, fmt.Sprintf("p%d", i), downloading(blobA, 0), downloading(blobB, 0))
	}
	res := announce(t, s, "p0", downloading(blobA, 0), downloading(blobB, 0))
	if res.Interval != 5*time.Second {
		t.Fatalf("interval %v with 500 downloaders at 100/s, want 5s", res.Interval)
	}
	// Told to wait 5 s, a member is kept for three intervals, longer than DownloadTTL.
	clock.Add(14 * time.Second)
	if f := announce(t, s, "p1", downloading(blobA, 0)).Swarms[0].Fetchers; !slices.Contains(f, "p0") {
		t.Fatalf("p0 expired 14 s after an announce told to wait 5 s (fetchers %v)", f)
	}
	// Holders do not count: once complete, the interval shrinks again.
	for i := range 500 {
		announce(t, s, fmt.Sprintf("p%d", i), holding(blobA), holding(blobB))
	}
	if got := announce(t, s, "p1", downloading(blobA, 0)).Interval; got != tracker.AnnounceDownload {
		t.Fatalf("interval %v with one downloader left, want %v", got, tracker.AnnounceDownload)
	}
	// And never beyond MaxAnnounceDownload.
	for i := range 1500 {
		announce(t, s, fmt.Sprintf("q%d", i), downloading(digest.FromString(fmt.Sprint(i)), 0))
	}
	if got := announce(t, s, "p1", downloading(blobA, 0)).Interval; got != tracker.MaxAnnounceDownload {
		t.Fatalf("interval %v with 1,500 downloaders at 100/s, want %v", got, tracker.MaxAnnounceDownload)
	}
}

// TestStateLargeSwarm checks the member lists of a swarm larger than one announce looks at:
// every list is full, without self or repeats, holds downloaders as well as holders, and
// reaches across the swarm; members that leave are never named again.
func TestStateLargeSwarm(t *testing.T) {
	t.Parallel()
	s := NewState(Limits{MaxSwarmMembers: 5000}, newFakeClock().Now)
	const members = 2000
	for i := range members {
		b := downloading(blobA, int64(i%10)<<20)
		if i%2 == 0 {
			b = holding(blobA)
		}
		announce(t, s, fmt.Sprintf("p%04d", i), b)
	}
	for i := 0; i < members; i += 4 {
		announce(t, s, fmt.Sprintf("p%04d", i), tracker.BlobState{Digest: blobA, Gone: true})
	}
	named := map[string]bool{}
	for range 50 {
		res := announce(t, s, "p0001", downloading(blobA, 1<<20))
		ms := res.Swarms[0].Members
		if len(ms) != tracker.MaxMembers {
			t.Fatalf("%d members, want %d", len(ms), tracker.MaxMembers)
		}
		seen, holders := map[string]bool{}, 0
		for _, m := range ms {
			var i int
			if _, err := fmt.Sscanf(m.Peer, "p%04d", &i); err != nil || m.Peer == "p0001" || seen[m.Peer] || i%4 == 0 {
				t.Fatalf("member %q: self, repeated, gone or unknown", m.Peer)
			}
			seen[m.Peer], named[m.Peer] = true, true
			if m.Complete {
				holders++
			}
		}
		if holders == 0 || holders > tracker.MaxMembers*3/4 {
			t.Fatalf("%d holders of %d members, want some and at most 3/4", holders, len(ms))
		}
	}
	if len(named) < members/4 {
		t.Errorf("%d members named over 50 lists, want lists spread across the %d", len(named), members*3/4)
	}
	sw := s.swarms[blobA]
	for i, m := range sw.list {
		if m.pos != i || sw.members[m.peer.id] != m {
			t.Fatalf("list[%d] = %s at pos %d: list and members disagree", i, m.peer.id, m.pos)
		}
	}
	if len(sw.list) != len(sw.members) {
		t.Errorf("list holds %d, members %d", len(sw.list), len(sw.members))
	}
}
