package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newMockRouters starts n routers on a fully connected mocknet and waits
// until every routing table holds all other peers.
func newMockRouters(t *testing.T, n int, o RouterOptions) []*Router {
	t.Helper()
	// The hosts connect only once every router serves the DHT protocol,
	// as a node dials its bootstrap peers only after its router is up:
	// connected first, a router that starts before its peer's has only
	// the peer's identify push to learn of it, and a lost push leaves
	// the peer out of its table until the next refresh.
	mn, err := mocknet.FullMeshLinked(n)
	if err != nil {
		t.Fatalf("FullMeshLinked(%d) = %v", n, err)
	}
	t.Cleanup(func() { mn.Close() })
	routers := make([]*Router, n)
	for i, h := range mn.Hosts() {
		routers[i] = newTestRouter(t, h, o)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatalf("ConnectAllButSelf = %v", err)
	}
	for _, r := range routers {
		waitForTableSize(t, r, n-1)
	}
	return routers
}

func newTestRouter(t *testing.T, h host.Host, o RouterOptions) *Router {
	t.Helper()
	r, err := NewRouter(h, o)
	if err != nil {
		t.Fatalf("NewRouter = %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return r
}

func waitForTableSize(t *testing.T, r *Router, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for r.dht.RoutingTable().Size() < n {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("routing table of %s has %d peers, want %d", r.h.ID(), r.dht.RoutingTable().Size(), n)
		}
	}
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func peerIDs(peers []Peer) []string {
	ids := make([]string, len(peers))
	for i, p := range peers {
		ids[i] = p.ID
	}
	slices.Sort(ids)
	return ids
}

func TestRouterFindProvidersMocknet(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	routers := newMockRouters(t, 5, RouterOptions{})
	d := digest.FromString("layer")
	if err := routers[0].Provide(ctx, d); err != nil {
		t.Fatalf("Provide(%s) = %v", d, err)
	}
	want := []string{routers[0].h.ID().String()}
	for _, r := range routers[1:] {
		got, err := r.FindProviders(ctx, d)
		if err != nil {
			t.Fatalf("FindProviders(%s) = %v", d, err)
		}
		if !slices.Equal(peerIDs(got), want) {
			t.Errorf("FindProviders(%s) from %s = %v, want %v", d, r.h.ID(), peerIDs(got), want)
		}
		if len(got) == 1 && len(got[0].Addrs) == 0 {
			t.Errorf("FindProviders(%s) from %s gave no addresses", d, r.h.ID())
		}
	}
	// The provider itself never lists itself.
	got, err := routers[0].FindProviders(ctx, d)
	if err != nil || len(got) != 0 {
		t.Errorf("FindProviders(%s) on the provider = %v, %v, want none", d, peerIDs(got), err)
	}
}

func TestRouterMissIsFast(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const timeout = 5 * time.Second
	routers := newMockRouters(t, 5, RouterOptions{FindTimeout: timeout})
	for i := range 3 {
		d := digest.FromString(fmt.Sprintf("nobody has %d", i))
		start := time.Now()
		got, err := routers[i].FindProviders(ctx, d)
		elapsed := time.Since(start)
		if err != nil || len(got) != 0 {
			t.Fatalf("FindProviders(%s) = %v, %v, want none", d, got, err)
		}
		// A completed lookup in a five-node network takes milliseconds;
		// the bound leaves room for a loaded race-enabled run.
		t.Logf("miss %d took %v", i, elapsed)
		if elapsed > timeout/5 {
			t.Errorf("FindProviders(%s) miss took %v, want well under %v", d, elapsed, timeout)
		}
	}
}

// TestRouterLookupTimeout: a lookup that runs out of time before any member answered is an
// error, not "nobody holds it", while one the network answered with nobody is not.
func TestRouterLookupTimeout(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	routers := newMockRouters(t, 3, RouterOptions{FindTimeout: time.Nanosecond})
	d := digest.FromString("nobody could say who has this")
	got, err := routers[0].FindProviders(ctx, d)
	if !errors.Is(err, ErrLookupTimeout) || len(got) != 0 {
		t.Fatalf("FindProviders past its timeout = %v, %v, want none and ErrLookupTimeout", got, err)
	}
	patient := newMockRouters(t, 3, RouterOptions{})
	if got, err := patient[0].FindProviders(ctx, d); err != nil || len(got) != 0 {
		t.Fatalf("FindProviders answered by the network = %v, %v, want none and no error", got, err)
	}
}

func TestRouterMaxProviders(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	routers := newMockRouters(t, 5, RouterOptions{MaxProviders: 2})
	d := digest.FromString("popular")
	for _, r := range routers[:4] {
		if err := r.Provide(ctx, d); err != nil {
			t.Fatalf("Provide(%s) = %v", d, err)
		}
	}
	got, err := routers[4].FindProviders(ctx, d)
	if err != nil || len(got) != 2 {
		t.Fatalf("FindProviders(%s) = %v, %v, want 2 peers", d, peerIDs(got), err)
	}
	// A provider asking drops itself and still fills its quota from others.
	got, err = routers[0].FindProviders(ctx, d)
	if err != nil || len(got) != 2 || slices.Contains(peerIDs(got), routers[0].h.ID().String()) {
		t.Fatalf("FindProviders(%s) on a provider = %v, %v, want 2 other peers", d, peerIDs(got), err)
	}
	// The quota is a random sample of the holders, not the same first few for every asker:
	// over repeated lookups all four show up.
	seen := map[string]bool{}
	for range 30 {
		got, err := routers[4].FindProvidersFresh(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range peerIDs(got) {
			seen[id] = true
		}
	}
	if len(seen) != 4 {
		t.Errorf("30 lookups returned %d distinct providers of 4, want all: the sample is not random", len(seen))
	}
}

func TestRouterCache(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const ttl = 5 * time.Second
	routers := newMockRouters(t, 4, RouterOptions{CacheTTL: ttl})
	finder := routers[3]
	clk := clock.NewMock()
	clk.Set(time.Unix(1_700_000_000, 0))
	finder.now = clk.Now
	d := digest.FromString("cached")

	// A miss is not cached: the first provider is seen at once.
	if got, err := finder.FindProviders(ctx, d); err != nil || len(got) != 0 {
		t.Fatalf("FindProviders(%s) before any provider = %v, %v, want none", d, peerIDs(got), err)
	}
	if err := routers[0].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	first := []string{routers[0].h.ID().String()}
	got, err := finder.FindProviders(ctx, d)
	if err != nil || !slices.Equal(peerIDs(got), first) {
		t.Fatalf("FindProviders(%s) = %v, %v, want %v", d, peerIDs(got), err, first)
	}
	got[0].Addrs = nil // callers cannot alter the cache

	// A hit is reused until the TTL passes, even when providers change.
	if err := routers[1].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	clk.Add(ttl - time.Millisecond)
	got, err = finder.FindProviders(ctx, d)
	if err != nil || !slices.Equal(peerIDs(got), first) || len(got[0].Addrs) == 0 {
		t.Fatalf("FindProviders(%s) within TTL = %+v, %v, want cached %v", d, got, err, first)
	}

	clk.Add(time.Millisecond)
	both := []string{routers[0].h.ID().String(), routers[1].h.ID().String()}
	slices.Sort(both)
	got, err = finder.FindProviders(ctx, d)
	if err != nil || !slices.Equal(peerIDs(got), both) {
		t.Fatalf("FindProviders(%s) after TTL = %v, %v, want %v", d, peerIDs(got), err, both)
	}
}

func TestRouterFindProvidersFresh(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const ttl = 5 * time.Second
	routers := newMockRouters(t, 5, RouterOptions{CacheTTL: ttl})
	finder := routers[4]
	clk := clock.NewMock()
	clk.Set(time.Unix(1_700_000_000, 0))
	finder.now = clk.Now
	d := digest.FromString("fresh")
	ids := func(rs ...*Router) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.h.ID().String()
		}
		slices.Sort(out)
		return out
	}
	find := func(name string, f func(context.Context, digest.Digest) ([]Peer, error), want []string) {
		t.Helper()
		got, err := f(ctx, d)
		if err != nil || !slices.Equal(peerIDs(got), want) {
			t.Fatalf("%s(%s) = %v, %v, want %v", name, d, peerIDs(got), err, want)
		}
	}

	if err := routers[0].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	find("FindProviders", finder.FindProviders, ids(routers[0]))
	if err := routers[1].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	clk.Add(ttl / 2)
	find("FindProviders within TTL", finder.FindProviders, ids(routers[0]))
	// A fresh lookup skips the cache...
	find("FindProvidersFresh", finder.FindProvidersFresh, ids(routers[0], routers[1]))

	// ...and refreshes it: past the first entry's expiry, FindProviders
	// still answers from the cache, not seeing the third provider.
	if err := routers[2].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	clk.Add(ttl / 2)
	find("FindProviders after refresh", finder.FindProviders, ids(routers[0], routers[1]))
	find("FindProvidersFresh again", finder.FindProvidersFresh, ids(routers[0], routers[1], routers[2]))

	// An empty fresh result drops the cached one.
	gone := digest.FromString("gone")
	finder.store(gone, []Peer{{ID: routers[3].h.ID().String()}})
	if got, err := finder.FindProvidersFresh(ctx, gone); err != nil || len(got) != 0 {
		t.Fatalf("FindProvidersFresh(%s) = %v, %v, want none", gone, peerIDs(got), err)
	}
	if got, ok := finder.cached(gone); ok {
		t.Errorf("cache after an empty fresh lookup of %s = %v, want no entry", gone, peerIDs(got))
	}
}

func TestRouterInvalidDigest(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	r := newMockRouters(t, 2, RouterOptions{})[0]
	if err := r.Provide(ctx, "sha256:nope"); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("Provide(invalid) = %v, want %v", err, ErrInvalidDigest)
	}
	if _, err := r.FindProviders(ctx, "md5:abc"); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("FindProviders(invalid) = %v, want %v", err, ErrInvalidDigest)
	}
	if _, err := r.FindProvidersFresh(ctx, "md5:abc"); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("FindProvidersFresh(invalid) = %v, want %v", err, ErrInvalidDigest)
	}
}

func TestRouterCancelled(t *testing.T) {
	t.Parallel()
	r := newMockRouters(t, 3, RouterOptions{})[0]
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.FindProviders(ctx, digest.FromString("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("FindProviders(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if _, err := r.FindProvidersFresh(ctx, digest.FromString("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("FindProvidersFresh(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
}

// TestRouterTCP joins nodes over real loopback TCP through one bootstrap
// node: the provider and the finder know only the bootstrap node.
func TestRouterTCP(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	psk := randomPSK(t)
	seedHost := newTestHost(t, HostOptions{PSK: psk})
	seed := newTestRouter(t, seedHost, RouterOptions{})
	if err := seed.Bootstrap(ctx); err != nil {
		t.Fatalf("Bootstrap with no peers = %v, want nil", err)
	}

	// One bootstrap address points at a closed port: it is skipped.
	dead := newTestHost(t, HostOptions{})
	deadAddrs := Addrs(dead)
	dead.Close()
	bootstrap := append(Addrs(seedHost), deadAddrs...)

	nodes := make([]*Router, 3)
	for i := range nodes {
		h := newTestHost(t, HostOptions{PSK: psk})
		nodes[i] = newTestRouter(t, h, RouterOptions{Bootstrap: bootstrap})
		if err := nodes[i].Bootstrap(ctx); err != nil {
			t.Fatalf("Bootstrap = %v", err)
		}
	}
	d := digest.FromString("over tcp")
	if err := nodes[0].Provide(ctx, d); err != nil {
		t.Fatalf("Provide(%s) = %v", d, err)
	}
	want := []string{nodes[0].h.ID().String()}
	for _, r := range append(nodes[1:], seed) {
		got, err := r.FindProviders(ctx, d)
		if err != nil || !slices.Equal(peerIDs(got), want) {
			t.Fatalf("FindProviders(%s) from %s = %v, %v, want %v", d, r.h.ID(), peerIDs(got), err, want)
		}
	}
}

func TestRouterBootstrapErrors(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, HostOptions{})
	tests := []struct {
		name      string
		bootstrap []string
	}{
		{name: "not a multiaddr", bootstrap: []string{"127.0.0.1:4001"}},
		{name: "no peer id", bootstrap: []string{"/ip4/127.0.0.1/tcp/4001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := NewRouter(h, RouterOptions{Bootstrap: tt.bootstrap}); err == nil {
				r.Close()
				t.Fatalf("NewRouter(%v) = nil error, want an error", tt.bootstrap)
			}
		})
	}

	dead := newTestHost(t, HostOptions{})
	addrs := Addrs(dead)
	dead.Close()
	r := newTestRouter(t, h, RouterOptions{Bootstrap: addrs})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := r.Bootstrap(ctx); !errors.Is(err, ErrNoBootstrapPeer) {
		t.Errorf("Bootstrap(unreachable only) = %v, want %v", err, ErrNoBootstrapPeer)
	}
}

func TestRouterProtocolPrefix(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a := newTestHost(t, HostOptions{})
	newTestRouter(t, a, RouterOptions{ProtocolPrefix: "/other"})
	b := newTestRouter(t, newTestHost(t, HostOptions{}), RouterOptions{Bootstrap: Addrs(a)})
	b.tableWait = 300 * time.Millisecond
	// b reaches a, but a speaks another DHT, so b never adds it.
	if err := b.Bootstrap(ctx); !errors.Is(err, ErrNoBootstrapPeer) {
		t.Errorf("Bootstrap(peer with another prefix) = %v, want %v", err, ErrNoBootstrapPeer)
	}
}

// TestRouterClosestPeers: every node of a fleet names the same seeds for a blob, whether it
// is one of them or not, closest to the blob's key first.
func TestRouterClosestPeers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	routers := newMockRouters(t, 8, RouterOptions{})
	for i := range 4 {
		d := digest.FromString(fmt.Sprint("layer ", i))
		var want []string
		for _, r := range routers {
			got, err := r.ClosestPeers(ctx, d, 3)
			if err != nil {
				t.Fatalf("ClosestPeers(%s) = %v", d, err)
			}
			if len(got) != 3 {
				t.Fatalf("ClosestPeers(%s) from %s = %v, want 3 peers", d, r.h.ID(), got)
			}
			if want == nil {
				want = got
			}
			if !slices.Equal(got, want) {
				t.Errorf("ClosestPeers(%s) from %s = %v, from the first %v: the nodes disagree", d, r.h.ID(), got, want)
			}
		}
		// The answer is the 3 closest of all 8 by the DHT's metric.
		all := make([]string, len(routers))
		for i, r := range routers {
			all[i] = r.h.ID().String()
		}
		sorted, err := ClosestTo(d, all)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(want, sorted[:3]) {
			t.Errorf("ClosestPeers(%s) = %v, want the closest 3 of all, %v", d, want, sorted[:3])
		}
	}
}

// TestRouterClosestShared: a key's closest members are walked for once and reused by the
// announce, the seeds and the holder lookups that follow, until closestTTL; a node that
// knows them asks them for holders directly, and an announce repeated soon is not sent.
func TestRouterClosestShared(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	routers := newMockRouters(t, 8, RouterOptions{})
	a, b, c := routers[0], routers[1], routers[2]
	clk := clock.NewMock()
	clk.Set(time.Unix(1_700_000_000, 0))
	b.now = clk.Now
	walks := func(r *Router, kind string) int { return int(testutil.ToFloat64(r.walks.WithLabelValues(kind))) }
	d := digest.FromString("shared")

	if err := a.Provide(ctx, d); err != nil {
		t.Fatalf("Provide(%s) = %v", d, err)
	}
	if err := b.Provide(ctx, d); err != nil {
		t.Fatalf("Provide(%s) = %v", d, err)
	}
	// Seeds asked at once by many callers: one walk, the announce's.
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if got, err := b.ClosestPeers(ctx, d, 3); err != nil || len(got) != 3 {
				t.Errorf("ClosestPeers(%s) = %v, %v, want 3 peers", d, got, err)
			}
		})
	}
	wg.Wait()
	if err := b.Provide(ctx, d); err != nil {
		t.Fatalf("Provide(%s) again = %v", d, err)
	}
	if got := walks(b, walkClosest); got != 1 {
		t.Errorf("walks for closest members after an announce, 5 seed lookups and a repeated announce = %d, want 1", got)
	}

	// b knows d's closest members: it asks them, and finds a without a walk.
	got, err := b.FindProvidersFresh(ctx, d)
	if want := []string{a.h.ID().String()}; err != nil || !slices.Equal(peerIDs(got), want) {
		t.Fatalf("FindProvidersFresh(%s) from a provider = %v, %v, want %v", d, peerIDs(got), err, want)
	}
	if len(b.h.Peerstore().Addrs(a.h.ID())) == 0 {
		t.Errorf("no address kept for %s, found by asking the closest members", a.h.ID())
	}
	if got := walks(b, walkProviders); got != 0 {
		t.Errorf("walks for holders by a node that knows the closest members = %d, want 0", got)
	}
	// Their "nobody" stands too: no walk for a key nobody provides.
	e := digest.FromString("nobody")
	if _, err := b.ClosestPeers(ctx, e, 3); err != nil {
		t.Fatal(err)
	}
	if got, err := b.FindProvidersFresh(ctx, e); err != nil || len(got) != 0 {
		t.Errorf("FindProvidersFresh(%s) = %v, %v, want none", e, peerIDs(got), err)
	}
	if got := walks(b, walkProviders); got != 0 {
		t.Errorf("walks for holders of a key whose closest members answered = %d, want 0", got)
	}

	// c knows nothing of d's neighbourhood: it walks, and finds both.
	got, err = c.FindProviders(ctx, d)
	want := []string{a.h.ID().String(), b.h.ID().String()}
	slices.Sort(want)
	if err != nil || !slices.Equal(peerIDs(got), want) {
		t.Fatalf("FindProviders(%s) = %v, %v, want %v", d, peerIDs(got), err, want)
	}
	if got := walks(c, walkProviders); got != 1 {
		t.Errorf("walks for holders by a node that does not know the closest members = %d, want 1", got)
	}

	// Past closestTTL the members are walked for again.
	clk.Add(closestTTL)
	if _, err := b.ClosestPeers(ctx, d, 3); err != nil {
		t.Fatal(err)
	}
	if got := walks(b, walkClosest); got != 3 {
		t.Errorf("walks for closest members of two keys, the first again past closestTTL = %d, want 3", got)
	}
}
