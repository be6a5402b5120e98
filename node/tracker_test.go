package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/fleet"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/tracker"
)

// fakeTracker checks signatures, records announces and leases, grants every lease, and
// answers each announce with the members set for its digests.
type fakeTracker struct {
	*httptest.Server
	t *testing.T

	mu        sync.Mutex
	down      bool // answer 503 to everything but /bootstrap, as a tracker that is not up
	instance  string
	members   map[digest.Digest][]tracker.Member
	announces []tracker.AnnounceRequest
	leases    []tracker.LeaseRequest
}

func newFakeTracker(t *testing.T) *fakeTracker {
	f := &fakeTracker{t: t, instance: "one", members: make(map[digest.Digest][]tracker.Member)}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeTracker) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method == http.MethodGet && r.URL.Path == tracker.PathBootstrap {
		json.NewEncoder(w).Encode(tracker.BootstrapResponse{})
		return
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(tracker.HeaderSignature))
	if err == nil {
		err = p2p.VerifySignature(r.Header.Get(tracker.HeaderPeer), tracker.SigningBytes(r.Method, r.URL.Path, body), sig)
	}
	if err != nil {
		f.t.Errorf("%s %s: signature: %v", r.Method, r.URL.Path, err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case tracker.PathAnnounce:
		var req tracker.AnnounceRequest
		if err := json.Unmarshal(body, &req); err != nil {
			f.t.Errorf("announce: %v", err)
		}
		f.announces = append(f.announces, req)
		resp := tracker.AnnounceResponse{Instance: f.instance}
		for _, b := range req.Blobs {
			if !b.Gone {
				resp.Swarms = append(resp.Swarms, tracker.Swarm{Digest: b.Digest, Members: f.members[b.Digest]})
			}
		}
		json.NewEncoder(w).Encode(resp)
	case tracker.PathLease:
		var req tracker.LeaseRequest
		if err := json.Unmarshal(body, &req); err != nil {
			f.t.Errorf("lease: %v", err)
		}
		f.leases = append(f.leases, req)
		json.NewEncoder(w).Encode(tracker.LeaseResponse{Granted: !req.Release, TTLMillis: tracker.LeaseTTL.Milliseconds()})
	default:
		http.NotFound(w, r)
	}
}

// states returns every state of d announced so far, in order.
func (f *fakeTracker) states(d digest.Digest) []tracker.BlobState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []tracker.BlobState
	for _, a := range f.announces {
		for _, b := range a.Blobs {
			if b.Digest == d {
				out = append(out, b)
			}
		}
	}
	return out
}

// slowOrigin serves o, holding every blob GET for delay, so a download's progress can be
// seen while it runs.
func slowOrigin(t *testing.T, o *countingOrigin, delay time.Duration) string {
	return holdBlobs(t, o.Config.Handler, func(r *http.Request) bool {
		select {
		case <-time.After(delay):
			return true
		case <-r.Context().Done():
			return false
		}
	}).URL
}

// TestTrackerAnnounces: a node with a tracker and nothing else to join through starts alone
// and ready, announces a download at its start, with its progress while it runs and complete
// once committed, takes origin leases from the tracker, and announces everything it holds
// again when the tracker restarts.
func TestTrackerAnnounces(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	f := newFakeTracker(t)
	n := startNode(t, Config{
		Origin: slowOrigin(t, o, 1200*time.Millisecond), P2PListen: []string{"/ip4/127.0.0.1/tcp/0"},
		Trackers: []string{f.URL}, ChunkSize: 64 << 10,
	})
	eventually(t, "the node to be ready", func() bool { return readyz(t, n) })
	// Read before the pull: a node still alone asks the tracker again after rejoinEvery,
	// which a slow pull on a loaded machine can outlast.
	_, metrics := get(t, "http://"+n.AdminAddr()+"/metrics", nil)
	if want := `shoal_tracker_requests_total{op="bootstrap",result="ok"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	pullImage(t, n, "team/app", "v1", "")

	d := layerDigest(t, img)
	layers, _ := img.Layers()
	size, _ := layers[0].Size()
	eventually(t, "the layer announced complete", func() bool {
		return slices.ContainsFunc(f.states(d), func(b tracker.BlobState) bool { return b.Complete })
	})
	states := f.states(d)
	if !slices.ContainsFunc(states, func(b tracker.BlobState) bool { return !b.Complete && b.Done == 0 }) {
		t.Errorf("announces of %s = %+v, want one at the start", d, states)
	}
	if !slices.ContainsFunc(states, func(b tracker.BlobState) bool {
		return !b.Complete && b.Done > 0 && b.Done < size && b.Size == size && b.ChunkSize == 64<<10
	}) {
		t.Errorf("announces of %s = %+v, want one with progress, size %d and chunk size %d", d, states, size, 64<<10)
	}
	last := states[len(states)-1]
	if !last.Complete || last.Done != size || last.Size != size {
		t.Errorf("last announce of %s = %+v, want complete with %d bytes", d, last, size)
	}
	f.mu.Lock()
	var leased, released bool
	for _, l := range f.leases {
		if l.Digest == d && !l.Release {
			leased = true
		}
		if l.Digest == d && l.Release && l.Done {
			released = true
		}
	}
	peer := f.announces[0].Peer
	f.mu.Unlock()
	if !leased || !released {
		t.Errorf("leases on %s: asked %v, released done %v; want both", d, leased, released)
	}
	if st := status(t, n); peer != st.PeerID {
		t.Errorf("announces from %s, want the node's peer %s", peer, st.PeerID)
	}
	_, metrics = get(t, "http://"+n.AdminAddr()+"/metrics", nil)
	if want := "shoal_tracker_up 1"; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	// The tracker restarts: the next answer says so, and everything held is announced again.
	f.mu.Lock()
	f.instance = "two"
	before := len(f.announces)
	f.mu.Unlock()
	o.push(t, "team/other:v1")
	pullImage(t, n, "team/other", "v1", "")
	eventually(t, "the held blobs announced again", func() bool { return f.heldAnnouncedSince(before, d) })
}

// heldAnnouncedSince reports whether an announce after the first before ones said d is held.
func (f *fakeTracker) heldAnnouncedSince(before int, d digest.Digest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.announces[before:] {
		if slices.ContainsFunc(a.Blobs, func(b tracker.BlobState) bool { return b.Digest == d && b.Complete }) {
			return true
		}
	}
	return false
}

// TestTrackerBackAfterDown: the tracker stops answering while the node pulls, then comes
// back restarted (empty). The node, idle by then, announces everything it holds again within
// seconds, not at its next minute announce: what it held before and what it committed while
// the tracker was down.
func TestTrackerBackAfterDown(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	first := o.push(t, "team/app:v1")
	f := newFakeTracker(t)
	n := startNode(t, Config{Origin: o.URL, P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}, Trackers: []string{f.URL}})
	eventually(t, "the node to be ready", func() bool { return readyz(t, n) })
	pullImage(t, n, "team/app", "v1", "")
	d := layerDigest(t, first)
	eventually(t, "the layer announced held", func() bool { return f.heldAnnouncedSince(0, d) })

	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	second := o.push(t, "team/other:v1")
	pullImage(t, n, "team/other", "v1", "")
	d2 := layerDigest(t, second)

	f.mu.Lock()
	f.down, f.instance = false, "two"
	before := len(f.announces)
	f.mu.Unlock()
	eventually(t, "both layers announced held to the tracker back up", func() bool {
		return f.heldAnnouncedSince(before, d) && f.heldAnnouncedSince(before, d2)
	})
}

// layerDigest is the digest of img's first layer.
func layerDigest(t *testing.T, img v1.Image) digest.Digest {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(ld.String())
}

// TestTrackerMembers: the tracker's members of a swarm are among a download's providers, and
// their addrs reach the peerstore so they can be dialled.
func TestTrackerMembers(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	f := newFakeTracker(t)
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	other := startNode(t, Config{Origin: o.URL, P2PListen: listen})
	st := status(t, other)
	d := digest.FromString("a blob")
	f.mu.Lock()
	f.members[d] = []tracker.Member{{Peer: st.PeerID, Addrs: st.Addrs}, {Peer: "bogus", Addrs: st.Addrs}}
	f.mu.Unlock()
	n := startNode(t, Config{Origin: o.URL, P2PListen: listen, Trackers: []string{f.URL}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ids, err := n.fleet.FindProviders(ctx, d, true)
	if err != nil || !slices.Equal(ids, []string{st.PeerID}) {
		t.Fatalf("FindProviders(%s) = %v, %v; want [%s]", d, ids, err, st.PeerID)
	}
	if _, err := n.fleet.Have(ctx, st.PeerID, d); !errors.Is(err, chunk.ErrNotHeld) {
		t.Errorf("Have(%s) from the member = %v, want it dialled and answering not held", d, err)
	}
}

// TestTrackerDown: two nodes joined by --bootstrap, with a tracker that does not answer: the
// pull succeeds, the second node takes the blobs from the first, and no client sees an error.
func TestTrackerDown(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	a := startNode(t, Config{Origin: o.URL, P2PListen: listen, Trackers: []string{dead.URL}})
	eventually(t, "a node whose tracker is down to be ready", func() bool { return readyz(t, a) })
	want := pullImage(t, a, "team/app", "v1", "")
	b := startNode(t, Config{Origin: o.URL, P2PListen: listen, Bootstrap: status(t, a).Addrs, Trackers: []string{dead.URL}})
	eventually(t, "the second node to join", func() bool { return readyz(t, b) })
	eventually(t, "the holder's announcements to land", func() bool { return status(t, a).Peers >= 1 })
	pullFromPeer(t, o, b, want)
	_, metrics := get(t, "http://"+b.AdminAddr()+"/metrics", nil)
	if !strings.Contains(string(metrics), "shoal_tracker_up 0") {
		t.Errorf("/metrics of a node whose tracker is down lacks shoal_tracker_up 0")
	}
}

func TestTrackerConfig(t *testing.T) {
	t.Parallel()
	if _, ok := any(&fleet.Member{}).(swarm.OriginLeaser); ok {
		t.Errorf("the fleet of a node without trackers implements OriginLeaser")
	}
	for name, cfg := range map[string]Config{
		"no listen": {Trackers: []string{"http://127.0.0.1:1"}},
		"bad url":   {Trackers: []string{"ftp://tracker"}, P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}},
	} {
		err := newError(t, cfg)
		if err == nil {
			t.Errorf("New(%s) = nil error, want one", name)
			continue
		}
		if !strings.Contains(err.Error(), "tracker") {
			t.Errorf("New(%s) = %v, want an error about the tracker", name, err)
		}
	}
}
