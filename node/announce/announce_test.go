package announce

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/tracker"
	trackerclient "github.com/shoal-dev/shoal/tracker/client"
	"github.com/shoal-dev/shoal/tracker/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testChunk = 64 << 10

// addrBook records the addrs the announcer learns, as p2p.Network would keep them.
type addrBook struct {
	mu    sync.Mutex
	addrs map[string][]string
}

func (b *addrBook) AddAddrs(id string, addrs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.addrs == nil {
		b.addrs = make(map[string][]string)
	}
	b.addrs[id] = addrs
}

func (b *addrBook) known(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.addrs[id]) > 0
}

// running is a downloader's list of downloads, set by the test.
type running struct {
	mu   sync.Mutex
	list []swarm.DownloadStatus
}

func (r *running) Downloads() []swarm.DownloadStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

// member is one node's announcer against a real tracker.
type member struct {
	peer  *p2ptest.Peer
	t     *Tracker
	book  *addrBook
	store *store.Store
	dl    *running
}

func newMember(t *testing.T, url string) *member {
	t.Helper()
	peer := p2ptest.NewPeer(t)
	client, err := trackerclient.New(trackerclient.Options{
		URLs: []string{url}, Signer: peer.Signer, PeerAddrs: p2p.PeerAddrs,
		Addrs: func() []string { return peer.Addrs },
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{peer: peer, book: &addrBook{}, store: st, dl: &running{}}
	m.t = New(Options{Client: client, Peers: m.book, ChunkSize: testChunk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.t.Run(ctx, st, m.dl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		m.t.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return m
}

// swarms reads the tracker's view of every swarm.
func swarms(t *testing.T, url string) map[digest.Digest]tracker.SwarmView {
	t.Helper()
	resp, err := http.Get(url + tracker.PathSwarms)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sr tracker.SwarmsResponse
	if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil {
		t.Fatal(err)
	}
	out := make(map[digest.Digest]tracker.SwarmView)
	for _, s := range sr.Swarms {
		out[s.Digest] = s
	}
	return out
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTracker(t *testing.T) string {
	t.Helper()
	s, err := server.New(server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTrackerAnnounces drives two nodes' announcers against a real tracker: what each holds
// and downloads reaches it, members find each other, and the origin lease goes to one.
func TestTrackerAnnounces(t *testing.T) {
	url := newTracker(t)
	a, b := newMember(t, url), newMember(t, url)

	held := []byte("a blob the first node holds")
	heldDigest := digest.FromBytes(held)
	if err := a.store.Put(heldDigest, "", held); err != nil {
		t.Fatal(err)
	}
	a.t.Committed(heldDigest)
	eventually(t, "the held blob in the tracker's swarms", func() bool {
		s, ok := swarms(t, url)[heldDigest]
		return ok && s.Complete == 1
	})

	// Both start downloading one blob: each learns of the other from the tracker, members
	// before what the DHT found.
	d := digest.FromString("a blob both download")
	size := int64(4 * testChunk)
	for _, m := range []*member{a, b} {
		m.dl.mu.Lock()
		m.dl.list = []swarm.DownloadStatus{{Digest: d, Size: size, ChunkSize: testChunk}}
		m.dl.mu.Unlock()
		m.t.Started(d)
	}
	eventually(t, "both in the download's swarm", func() bool { return swarms(t, url)[d].Members == 2 })
	// b may have announced before a did: the members come with its next announce, within
	// tracker.AnnounceDownload.
	dht := func(context.Context) ([]string, error) { return []string{"dht-peer"}, nil }
	var got []string
	eventually(t, "the other member among b's providers", func() bool {
		var err error
		if got, err = b.t.Providers(t.Context(), d, true, dht); err != nil {
			t.Fatalf("Providers(%s) = %v", d, err)
		}
		return len(got) > 1
	})
	if !slices.Equal(got, []string{a.peer.ID, "dht-peer"}) {
		t.Fatalf("Providers(%s) = %v, want [%s dht-peer]: the tracker's members first", d, got, a.peer.ID)
	}
	if !b.book.known(a.peer.ID) {
		t.Errorf("the tracker's member %s has no addrs in the book", a.peer.ID)
	}

	// One node gets the origin lease on a chunk; the other is told who has it.
	release, _, ok, err := a.t.Lease(t.Context(), d, size, testChunk, 0)
	if err != nil || !ok {
		t.Fatalf("a: Lease = %v, %v, want granted", ok, err)
	}
	if _, holder, ok, err := b.t.Lease(t.Context(), d, size, testChunk, 0); err != nil || ok || holder != a.peer.ID {
		t.Fatalf("b: Lease = holder %q, %v, %v, want refused naming %s", holder, ok, err, a.peer.ID)
	}
	release(false)

	// Both are told the same fetchers, the two of them (the first to announce may have
	// been told of itself alone: the other comes with its next announce).
	for _, m := range []*member{a, b} {
		eventually(t, "both members as fetchers", func() bool {
			f, err := m.t.Fetchers(t.Context(), d)
			if err != nil {
				t.Fatalf("Fetchers(%s) = %v", d, err)
			}
			return len(f) == 2 && slices.Contains(f, a.peer.ID) && slices.Contains(f, b.peer.ID)
		})
	}

	// The download ends without a commit: the tracker hears it is gone.
	a.dl.mu.Lock()
	a.dl.list = nil
	a.dl.mu.Unlock()
	a.t.Gone(d)
	eventually(t, "the failed download out of the swarm", func() bool { return swarms(t, url)[d].Members == 1 })
}

// TestDownloadStartOneAnnounce: a download's start (its announce, its first lookup, its
// fetchers) costs the tracker one announce, not one each: in a rollout every node starts
// at once.
func TestDownloadStartOneAnnounce(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var announces atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == tracker.PathAnnounce {
			announces.Add(1)
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	m := newMember(t, hs.URL)
	eventually(t, "the announcer running", func() bool {
		m.t.mu.Lock()
		defer m.t.mu.Unlock()
		return m.t.looping
	})
	d := digest.FromString("a blob")
	m.t.Started(d)
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := m.t.Providers(t.Context(), d, true, func(context.Context) ([]string, error) { return nil, nil }); err != nil {
			t.Errorf("Providers = %v", err)
		}
	})
	wg.Go(func() {
		if f, err := m.t.Fetchers(t.Context(), d); err != nil || !slices.Equal(f, []string{m.peer.ID}) {
			t.Errorf("Fetchers = %v, %v; want this node alone", f, err)
		}
	})
	wg.Wait()
	if n := announces.Load(); n != 1 {
		t.Errorf("%d announces for one download's start, want 1", n)
	}
}

// TestFetchersTrackerDown: with every tracker unreachable, a download is told of no
// fetchers, at once and without an error, so every member fetches its share; a tracker that
// only answers late is an error, so the download asks again rather than fetch.
func TestFetchersTrackerDown(t *testing.T) {
	t.Parallel()
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	m := newMember(t, url)
	d := digest.FromString("a blob")
	f, err := m.t.Fetchers(t.Context(), d)
	if err != nil || f == nil || len(f) != 0 {
		t.Fatalf("Fetchers with the tracker down = %#v, %v; want an empty list", f, err)
	}

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang) })
	m = newMember(t, slow.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if f, err := m.t.Fetchers(ctx, d); err == nil {
		t.Fatalf("Fetchers with the tracker not answering = %v, nil; want an error", f)
	}
}

// TestDisabled: a node without trackers answers as if no tracker knew anything, so its
// downloads go on with the DHT alone and fetch from the origin without a lease.
func TestDisabled(t *testing.T) {
	var a Announcer = Disabled{}
	d := digest.FromString("x")
	a.Started(d)
	a.Committed(d)
	a.Gone(d)
	got, err := a.Providers(t.Context(), d, true, func(context.Context) ([]string, error) { return []string{"p"}, nil })
	if err != nil || !slices.Equal(got, []string{"p"}) {
		t.Errorf("Providers = %v, %v, want the DHT's [p]", got, err)
	}
	if _, _, ok, err := a.Lease(t.Context(), d, 1, testChunk, 0); ok || !errors.Is(err, ErrDisabled) {
		t.Errorf("Lease = %v, %v, want %v", ok, err, ErrDisabled)
	}
	if f, err := a.Fetchers(t.Context(), d); err != nil || f == nil || len(f) != 0 {
		t.Errorf("Fetchers = %#v, %v, want an empty list: every member may fetch", f, err)
	}
	if _, err := a.Bootstrap(t.Context()); !errors.Is(err, ErrDisabled) {
		t.Errorf("Bootstrap = %v, want %v", err, ErrDisabled)
	}
	if err := a.Run(t.Context(), nil, nil); err != nil {
		t.Errorf("Run = %v", err)
	}
}
