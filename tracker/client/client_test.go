package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/tracker"
	"github.com/shoal-dev/shoal/tracker/server"
)

// fakeTracker checks every POST's signature, records what it was sent, and answers as set.
type fakeTracker struct {
	t   *testing.T
	srv *httptest.Server

	hang     atomic.Bool // answer nothing until the request gives up
	requests atomic.Int64

	mu        sync.Mutex
	instance  string
	members   []tracker.Member // answered for every digest announced and not gone
	fetchers  []string         // likewise
	interval  int64            // IntervalMillis of every announce answer
	lease     tracker.LeaseResponse
	raw       string // if set, the body of every answer
	peers     []string
	announces []tracker.AnnounceRequest
	leases    []tracker.LeaseRequest
}

func newFakeTracker(t *testing.T) *fakeTracker {
	f := &fakeTracker{t: t, instance: "one", lease: tracker.LeaseResponse{Granted: true, TTLMillis: tracker.LeaseTTL.Milliseconds()}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTracker) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	body, _ := io.ReadAll(r.Body) // read first: only then does a closed connection end r's context
	if f.hang.Load() {
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out any
	switch {
	case r.Method == http.MethodGet && r.URL.Path == tracker.PathBootstrap:
		out = tracker.BootstrapResponse{Peers: f.peers}
	case r.Method == http.MethodPost:
		peer, err := tracker.Verify(r.Header, r.Method, r.URL.Path, body, p2p.VerifySignature)
		if err != nil {
			f.t.Errorf("%s %s: signature: %v", r.Method, r.URL.Path, err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var claimed string
		var at int64
		switch r.URL.Path {
		case tracker.PathAnnounce:
			var req tracker.AnnounceRequest
			if err := json.Unmarshal(body, &req); err != nil {
				f.t.Errorf("announce body: %v", err)
			}
			claimed, at = req.Peer, req.Time
			f.announces = append(f.announces, req)
			resp := tracker.AnnounceResponse{Instance: f.instance, IntervalMillis: f.interval}
			for _, b := range req.Blobs {
				if !b.Gone {
					resp.Swarms = append(resp.Swarms, tracker.Swarm{Digest: b.Digest, Members: f.members, Fetchers: f.fetchers})
				}
			}
			out = resp
		case tracker.PathLease:
			var req tracker.LeaseRequest
			if err := json.Unmarshal(body, &req); err != nil {
				f.t.Errorf("lease body: %v", err)
			}
			claimed, at = req.Peer, req.Time
			f.leases = append(f.leases, req)
			out = f.lease
			if req.Release {
				out = tracker.LeaseResponse{}
			}
		default:
			http.NotFound(w, r)
			return
		}
		if claimed != peer {
			f.t.Errorf("%s: body peer %s, header %s", r.URL.Path, claimed, peer)
		}
		if skew := time.Since(time.UnixMilli(at)).Abs(); skew > tracker.MaxClockSkew {
			f.t.Errorf("%s: time %d is %v off", r.URL.Path, at, skew)
		}
	default:
		http.NotFound(w, r)
		return
	}
	if f.raw != "" {
		io.WriteString(w, f.raw)
		return
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeTracker) set(fn func(f *fakeTracker)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeTracker) leaseLog() []tracker.LeaseRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leases)
}

func newTestClient(t *testing.T, id *p2ptest.Peer, urls ...string) *Client {
	t.Helper()
	c, err := New(Options{
		URLs: urls, Signer: id.Signer, PeerAddrs: p2p.PeerAddrs, Addrs: func() []string { return []string{id.Addrs[0]} },
		Timeout: 300 * time.Millisecond, Backoff: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func clientEventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var clientBlob = digest.FromString("blob a")

func TestClientAnnounceMembers(t *testing.T) {
	t.Parallel()
	self, other, third := p2ptest.NewPeer(t), p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	f := newFakeTracker(t)
	many := make([]tracker.Member, 0, tracker.MaxMembers+10)
	for range tracker.MaxMembers + 10 {
		many = append(many, tracker.Member{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}})
	}
	tests := []struct {
		name    string
		members []tracker.Member
		want    []tracker.Member
	}{
		{"valid", []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}, Done: 5}}, []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}, Done: 5}}},
		{"bad peer ID", []tracker.Member{{Peer: "not-a-peer", Addrs: []string{other.Addrs[0]}}, {Peer: third.Signer.ID(), Addrs: []string{third.Addrs[0]}}}, []tracker.Member{{Peer: third.Signer.ID(), Addrs: []string{third.Addrs[0]}}}},
		{"addr of another peer", []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{third.Addrs[0], other.Addrs[0], "/garbage"}}}, []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}}}},
		{"self left out", []tracker.Member{{Peer: self.Signer.ID(), Addrs: []string{self.Addrs[0]}}}, nil},
		{"negative done", []tracker.Member{{Peer: other.Signer.ID(), Done: -3, Complete: true}}, []tracker.Member{{Peer: other.Signer.ID(), Complete: true}}},
		{"duplicates", many, []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.set(func(f *fakeTracker) { f.members = tt.members })
			c := newTestClient(t, self, f.srv.URL)
			got, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob, Done: 1}})
			if err != nil {
				t.Fatalf("Announce = %v", err)
			}
			if !sameMembers(got[clientBlob], tt.want) {
				t.Errorf("Announce members = %+v, want %+v", got[clientBlob], tt.want)
			}
			if m := c.Members(clientBlob); !sameMembers(m, tt.want) {
				t.Errorf("Members = %+v, want %+v", m, tt.want)
			}
		})
	}

	// Too many distinct members: capped.
	ids := make([]tracker.Member, 0, tracker.MaxMembers+5)
	for range tracker.MaxMembers + 5 {
		id := p2ptest.NewPeer(t)
		ids = append(ids, tracker.Member{Peer: id.Signer.ID(), Addrs: []string{id.Addrs[0]}})
	}
	f.set(func(f *fakeTracker) { f.members = ids })
	c := newTestClient(t, self, f.srv.URL)
	got, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob}})
	if err != nil || len(got[clientBlob]) != tracker.MaxMembers {
		t.Errorf("Announce with %d members = %d, %v; want %d", len(ids), len(got[clientBlob]), err, tracker.MaxMembers)
	}
	// A blob announced complete keeps no members.
	if _, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob, Complete: true}}); err != nil || c.Members(clientBlob) != nil {
		t.Errorf("after announcing complete: Members = %v (%v), want none", c.Members(clientBlob), err)
	}
	// What was signed was what was sent, addrs included.
	f.mu.Lock()
	last := f.announces[len(f.announces)-1]
	f.mu.Unlock()
	if last.Peer != self.Signer.ID() || !slices.Equal(last.Addrs, []string{self.Addrs[0]}) {
		t.Errorf("announce = %+v, want peer %s addrs [%s]", last, self.Signer.ID(), self.Addrs[0])
	}
}

func sameMembers(a, b []tracker.Member) bool {
	return slices.EqualFunc(a, b, func(x, y tracker.Member) bool {
		return x.Peer == y.Peer && slices.Equal(x.Addrs, y.Addrs) && x.Done == y.Done && x.Complete == y.Complete
	})
}

func TestClientBatches(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	blobs := make([]tracker.BlobState, tracker.MaxBlobs+3)
	for i := range blobs {
		blobs[i] = tracker.BlobState{Digest: digest.FromString(fmt.Sprint(i)), Complete: true}
	}
	if _, err := c.Announce(context.Background(), blobs); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.announces) != 2 || len(f.announces[0].Blobs) != tracker.MaxBlobs || len(f.announces[1].Blobs) != 3 {
		t.Errorf("announces of %d blobs: %d requests, want 2 of at most %d", len(blobs), len(f.announces), tracker.MaxBlobs)
	}
}

func TestClientStrictAnswers(t *testing.T) {
	t.Parallel()
	for name, raw := range map[string]string{
		"unknown field": `{"instance":"x","swarms":[],"surprise":1}`,
		"trailing data": `{"instance":"x","swarms":[]} {}`,
		"too large":     `{"instance":"` + strings.Repeat("x", tracker.MaxBody) + `"}`,
		"not json":      `<html>`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFakeTracker(t)
			f.set(func(f *fakeTracker) { f.raw = raw })
			c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
			if _, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob}}); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Announce answered %s = %v, want ErrUnavailable", name, err)
			}
		})
	}
}

// TestClientBackoff: a tracker that does not answer costs one timeout, then nothing: leases
// fail at once while it is known down.
func TestClientBackoff(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	f.hang.Store(true)
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	ctx := context.Background()
	// A tracker that answers late is not down at once: the first slowLimit leases fail as
	// unanswered (no grant, and no reason to fetch without one), and only then is it
	// taken to be down.
	for i := range slowLimit {
		_, _, err := c.Lease(ctx, clientBlob, 100, 10, 0)
		if err == nil || errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lease %d from a hanging tracker = %v, want a timeout, not ErrUnavailable", i+1, err)
		}
	}
	before := f.requests.Load()
	for range 100 {
		start := time.Now()
		if _, _, err := c.Lease(ctx, clientBlob, 100, 10, 1); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Lease while the tracker is down = %v, want ErrUnavailable", err)
		} else if !errors.Is(err, ErrSlow) {
			t.Fatalf("Lease while a hanging tracker is down = %v, want ErrSlow too: it is loaded, not gone", err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("Lease while the tracker is down took %v, want at once", d)
		}
	}
	if _, err := c.Announce(ctx, []tracker.BlobState{{Digest: clientBlob}}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Announce while the tracker is down = %v, want ErrUnavailable", err)
	}
	if n := f.requests.Load(); n != before {
		t.Errorf("%d requests reached a tracker known down", n-before)
	}

	// A closed port fails fast too, and marks the tracker down.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c2 := newTestClient(t, p2ptest.NewPeer(t), dead.URL)
	if _, _, err := c2.Lease(ctx, clientBlob, 100, 10, 0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lease from a closed port = %v, want ErrUnavailable", err)
	}
	if _, _, err := c2.Lease(ctx, clientBlob, 100, 10, 0); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrSlow) {
		t.Errorf("Lease while a closed port is down = %v, want ErrUnavailable and not ErrSlow", err)
	}
}

// TestClientCallerGivesUp: a request the caller cancels says nothing of the tracker, which
// is not counted slow or down for it.
func TestClientCallerGivesUp(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	f.hang.Store(true)
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	for range 2 * slowLimit {
		cctx, ccancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, ccancel)
		if _, _, err := c.Lease(cctx, clientBlob, 100, 10, 0); err == nil {
			t.Fatal("Lease cancelled by its caller = nil error")
		}
		ccancel()
	}
	e := c.trackers[0]
	e.mu.Lock()
	slow, down := e.slow, time.Now().Before(e.downUntil)
	e.mu.Unlock()
	if slow != 0 || down {
		t.Errorf("after leases their callers cancelled: %d slow in a row, down %v; want neither", slow, down)
	}
}

func TestClientInstanceChange(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	ctx := context.Background()
	for range 2 {
		if _, err := c.Announce(ctx, []tracker.BlobState{{Digest: clientBlob}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-c.Restarted():
		t.Fatal("Restarted fired with the same instance")
	default:
	}
	f.set(func(f *fakeTracker) { f.instance = "two" })
	if _, err := c.Announce(ctx, []tracker.BlobState{{Digest: clientBlob}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Restarted():
	default:
		t.Fatal("Restarted did not fire after the instance changed")
	}
}

func TestClientLeaseRenewRelease(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	f.set(func(f *fakeTracker) { f.lease = tracker.LeaseResponse{Granted: true, TTLMillis: 150} })
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	l, _, err := c.Lease(context.Background(), clientBlob, 100, 10, 3)
	if err != nil || l == nil {
		t.Fatalf("Lease = %v, %v; want granted", l, err)
	}
	clientEventually(t, "two renewals", func() bool { return len(f.leaseLog()) >= 3 })
	l.Release(true)
	l.Release(false) // once only
	clientEventually(t, "the release", func() bool {
		log := f.leaseLog()
		return log[len(log)-1].Release
	})
	c.Close()
	log := f.leaseLog()
	releases := 0
	for i, r := range log {
		if r.Chunk != 3 || r.Digest != clientBlob || r.Size != 100 || r.ChunkSize != 10 {
			t.Errorf("lease request %d = %+v, want chunk 3 of %s", i, r, clientBlob)
		}
		if r.Release {
			releases++
			if !r.Done || i != len(log)-1 {
				t.Errorf("release %d of %d = %+v, want the last, done", i, len(log), r)
			}
		}
	}
	if releases != 1 {
		t.Errorf("%d releases, want 1", releases)
	}

	// Refused: the holder comes back when it is a peer ID.
	f2 := newFakeTracker(t)
	other := p2ptest.NewPeer(t)
	c2 := newTestClient(t, p2ptest.NewPeer(t), f2.srv.URL)
	for holder, want := range map[string]string{other.Signer.ID(): other.Signer.ID(), "garbage": ""} {
		f2.set(func(f *fakeTracker) { f.lease = tracker.LeaseResponse{Holder: holder} })
		l, got, err := c2.Lease(context.Background(), clientBlob, 100, 10, 0)
		if l != nil || err != nil || got != want {
			t.Errorf("refused Lease naming %q = %v, %q, %v; want nil, %q, nil", holder, l, got, err, want)
		}
	}
}

// TestClientLeaseRendezvous: every node asks the same tracker for the same blob, whatever
// the order of its URLs, and fails over to the next when that one is down.
func TestClientLeaseRendezvous(t *testing.T) {
	t.Parallel()
	a, b := newFakeTracker(t), newFakeTracker(t)
	c1 := newTestClient(t, p2ptest.NewPeer(t), a.srv.URL, b.srv.URL)
	c2 := newTestClient(t, p2ptest.NewPeer(t), b.srv.URL, a.srv.URL)
	used := map[*fakeTracker]int{}
	for i := range 20 {
		d := digest.FromString(fmt.Sprint("blob ", i))
		for _, c := range []*Client{c1, c2} {
			before := [2]int{len(a.leaseLog()), len(b.leaseLog())}
			l, _, err := c.Lease(context.Background(), d, 100, 10, 0)
			if err != nil || l == nil {
				t.Fatalf("Lease = %v, %v", l, err)
			}
			l.Release(true)
			first := c.order(d)[0].base
			switch {
			case len(a.leaseLog()) > before[0] && first == a.srv.URL:
				used[a]++
			case len(b.leaseLog()) > before[1] && first == b.srv.URL:
				used[b]++
			default:
				t.Fatalf("lease of %s did not go to its rendezvous tracker", d)
			}
			if c1.order(d)[0].base != c2.order(d)[0].base {
				t.Fatalf("two clients order the trackers of %s differently", d)
			}
		}
	}
	if used[a] == 0 || used[b] == 0 {
		t.Errorf("leases split %d/%d between two trackers, want both used", used[a], used[b])
	}

	// The rendezvous tracker of d hangs: the lease fails over to the other, then goes
	// straight there.
	d := digest.FromString("fail over")
	first, second := a, b
	if c1.order(d)[0].base == b.srv.URL {
		first, second = b, a
	}
	first.hang.Store(true)
	// A tracker slow to answer is not down at once: a lease request to it times out, with
	// no fail-over (two trackers must not both lease the chunk); only after slowLimit such
	// requests in a row (releases in the background count too) is it skipped.
	if l, _, err := c1.Lease(context.Background(), d, 100, 10, 0); l != nil || err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("first lease from a hanging tracker = %v, %v; want a timeout", l, err)
	}
	for i := 1; ; i++ {
		if i > slowLimit {
			t.Fatalf("no fail-over after %d lease requests timed out", i)
		}
		if l, _, _ := c1.Lease(context.Background(), d, 100, 10, 0); l != nil {
			l.Release(true)
			break
		}
	}
	// asks counts the lease requests a tracker saw, leaving out releases (posted in the
	// background, so they may land at any time).
	asks := func(f *fakeTracker) int {
		n := 0
		for _, r := range f.leaseLog() {
			if !r.Release {
				n++
			}
		}
		return n
	}
	for range 2 {
		before := asks(second)
		l, _, err := c1.Lease(context.Background(), d, 100, 10, 0)
		if err != nil || l == nil {
			t.Fatalf("Lease with its tracker down = %v, %v; want granted by the other", l, err)
		}
		if asks(second) != before+1 {
			t.Errorf("lease did not fail over to the second tracker")
		}
		l.Release(true)
	}
}

func TestClientBootstrap(t *testing.T) {
	t.Parallel()
	self, other := p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	f := newFakeTracker(t)
	f.set(func(f *fakeTracker) {
		f.peers = []string{other.Addrs[0], self.Addrs[0], "/ip4/1.2.3.4/tcp/1", "nonsense", other.Addrs[0]}
	})
	c := newTestClient(t, self, f.srv.URL)
	got, err := c.Bootstrap(context.Background())
	if err != nil || !slices.Equal(got, []string{other.Addrs[0]}) {
		t.Errorf("Bootstrap = %v, %v; want [%s]", got, err, other.Addrs[0])
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c2 := newTestClient(t, self, dead.URL)
	if _, err := c2.Bootstrap(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Bootstrap from a dead tracker = %v, want ErrUnavailable", err)
	}
}

// TestClientMetrics: the request counter and the up gauge follow the answers.
func TestClientMetrics(t *testing.T) {
	t.Parallel()
	f := newFakeTracker(t)
	c := newTestClient(t, p2ptest.NewPeer(t), f.srv.URL)
	if _, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob}}); err != nil {
		t.Fatal(err)
	}
	if !c.up.Load() {
		t.Error("up = false after an answer")
	}
	f.hang.Store(true)
	for i := range slowLimit {
		if _, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob}}); err == nil {
			t.Error("Announce to a hanging tracker = nil error, want a timeout")
		}
		if up := c.up.Load(); up != (i < slowLimit-1) {
			t.Errorf("up = %v after %d timeouts in a row (down after %d)", up, i+1, slowLimit)
		}
	}
	for r, want := range map[string]float64{"ok": 1, "error": slowLimit} {
		if n := testutil.ToFloat64(c.requests.WithLabelValues("announce", r)); n != want {
			t.Errorf("shoal_tracker_requests_total{op=announce,result=%s} = %v, want %v", r, n, want)
		}
	}
}

// TestClientAgainstServer: the client and the real server agree on the protocol: two nodes
// see each other in a swarm, one gets the lease on a chunk, the other is told it holds it.
func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	a, b := p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	ca, cb := newTestClient(t, a, hs.URL), newTestClient(t, b, hs.URL)
	ctx := context.Background()
	state := tracker.BlobState{Digest: clientBlob, Size: 100, ChunkSize: 10, Done: 10}
	if _, err := ca.Announce(ctx, []tracker.BlobState{state}); err != nil {
		t.Fatalf("Announce = %v", err)
	}
	got, err := cb.Announce(ctx, []tracker.BlobState{state})
	if err != nil || len(got[clientBlob]) != 1 || got[clientBlob][0].Peer != a.Signer.ID() {
		t.Fatalf("second node's Announce = %+v, %v; want the first as a member", got, err)
	}
	l, _, err := ca.Lease(ctx, clientBlob, 100, 10, 2)
	if err != nil || l == nil {
		t.Fatalf("Lease = %v, %v; want granted", l, err)
	}
	defer l.Release(false)
	l2, holder, err := cb.Lease(ctx, clientBlob, 100, 10, 2)
	if err != nil || l2 != nil || holder != a.Signer.ID() {
		t.Errorf("second node's Lease = %v, %q, %v; want refused naming the first", l2, holder, err)
	}
	if _, _, err := cb.Lease(ctx, digest.FromString("not announced"), 100, 10, 0); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("Lease on a blob not announced = %v, want a refusal that is not ErrUnavailable", err)
	}
	// The first to join fetch from the origin (in the order the blob's key weighs them),
	// and both are told so.
	want := []string{a.Signer.ID(), b.Signer.ID()}
	slices.Sort(want)
	if _, err := ca.Announce(ctx, []tracker.BlobState{state}); err != nil {
		t.Fatalf("Announce = %v", err)
	}
	for name, c := range map[string]*Client{"first": ca, "second": cb} {
		f, ok := c.Fetchers(clientBlob)
		slices.Sort(f)
		if !ok || !slices.Equal(f, want) {
			t.Errorf("%s node's Fetchers = %v, %v; want %v", name, f, ok, want)
		}
	}
	if _, ok := ca.Fetchers(digest.FromString("not announced")); ok {
		t.Error("Fetchers of a blob not announced answered")
	}
}

// TestClientFetchersAndInterval: fetchers are taken only when the node can reach them (it,
// or a member it was given), at most tracker.Fetchers; the interval within its bounds.
func TestClientFetchersAndInterval(t *testing.T) {
	t.Parallel()
	self, other, stranger := p2ptest.NewPeer(t), p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	f := newFakeTracker(t)
	c := newTestClient(t, self, f.srv.URL)
	if c.Interval() != tracker.AnnounceDownload {
		t.Errorf("Interval before any answer = %v, want %v", c.Interval(), tracker.AnnounceDownload)
	}
	members := []tracker.Member{{Peer: other.Signer.ID(), Addrs: []string{other.Addrs[0]}}}
	tests := []struct {
		fetchers []string
		interval int64
		want     []string
		every    time.Duration
	}{
		{[]string{stranger.Signer.ID(), other.Signer.ID(), other.Signer.ID(), self.Signer.ID()}, 4000, []string{other.Signer.ID(), self.Signer.ID()}, 4 * time.Second},
		{[]string{self.Signer.ID(), other.Signer.ID(), self.Signer.ID(), "garbage", other.Signer.ID()}, 3_600_000, []string{self.Signer.ID(), other.Signer.ID()}, tracker.MaxAnnounceDownload},
		{nil, 0, []string{}, tracker.AnnounceDownload},
	}
	for _, tt := range tests {
		f.set(func(f *fakeTracker) { f.members, f.fetchers, f.interval = members, tt.fetchers, tt.interval })
		if _, err := c.Announce(context.Background(), []tracker.BlobState{{Digest: clientBlob}}); err != nil {
			t.Fatalf("Announce = %v", err)
		}
		if got, ok := c.Fetchers(clientBlob); !ok || !slices.Equal(got, tt.want) {
			t.Errorf("fetchers %v answered: Fetchers = %v, %v; want %v", tt.fetchers, got, ok, tt.want)
		}
		if got := c.Interval(); got != tt.every {
			t.Errorf("IntervalMillis %d answered: Interval = %v, want %v", tt.interval, got, tt.every)
		}
	}
	c.Forget(clientBlob)
	if _, ok := c.Fetchers(clientBlob); ok {
		t.Error("Fetchers answered after Forget")
	}
}

// TestClientBackoffWaits: each failure in a row doubles how long a tracker is left alone,
// from Options.Backoff up to 30 s, and an answer ends it.
func TestClientBackoffWaits(t *testing.T) {
	t.Parallel()
	c, err := New(Options{URLs: []string{"http://tracker"}, Signer: p2ptest.NewPeer(t).Signer, PeerAddrs: p2p.PeerAddrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := c.trackers[0]
	down := errDown{errors.New("connection refused")}
	for i, want := range []time.Duration{2, 4, 8, 16, 30, 30} {
		want *= time.Second
		before := time.Now()
		c.result(e, "announce", down)
		e.mu.Lock()
		wait := e.downUntil.Sub(before)
		e.mu.Unlock()
		if wait < want || wait > want+time.Second {
			t.Errorf("after %d failures: down for %v, want %v", i+1, wait, want)
		}
	}
	c.result(e, "announce", nil)
	if !e.available(time.Now()) {
		t.Error("tracker still down after an answer")
	}
}

func TestNewChecksOptions(t *testing.T) {
	t.Parallel()
	signer := p2ptest.NewPeer(t).Signer
	for name, o := range map[string]Options{
		"no URL":             {Signer: signer, PeerAddrs: p2p.PeerAddrs},
		"bad URL":            {URLs: []string{"tracker:5090"}, Signer: signer, PeerAddrs: p2p.PeerAddrs},
		"no signer":          {URLs: []string{"http://tracker"}, PeerAddrs: p2p.PeerAddrs},
		"no peer addr check": {URLs: []string{"http://tracker"}, Signer: signer},
	} {
		if c, err := New(o); err == nil {
			c.Close()
			t.Errorf("New(%s) = nil error, want one", name)
		}
	}
}
