package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/test/internal/harness"
	"github.com/shoal-dev/shoal/tracker"
)

// TestTrackerFleet runs a real `shoal tracker` and eight `shoal node` processes given only
// --tracker (no bootstrap peer): they find one another through it; a cold image pulled by all
// eight at once from a rate-limited origin costs the origin at most 1.05x the image, the
// tracker's leases making the split exact; with the tracker killed, a new image pulled by four
// at once still costs at most 1.5x (the DHT alone); a tracker restarted on the same address
// rebuilds its swarms from the nodes' announces and hands out leases again.
func TestTrackerFleet(t *testing.T) {
	// Not parallel: it moves much data, and the ratios are best measured on an idle machine.
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	o := startOrigin(t)
	trackerDir := t.TempDir()
	tr := harness.StartTracker(t, harness.TrackerOptions{DataDir: trackerDir})

	nodes := make([]*harness.Node, 8)
	for i := range nodes {
		nodes[i] = o.startNode(t, harness.NodeOptions{
			Args: slices.Concat(p2pListen, []string{"--tracker", tr.URL}),
		})
	}
	// Every node reaches other nodes, not only the tracker.
	waitPeers(t, ctx, nodes, 2)

	const originRate = 12 << 20
	o.proxy.SetRateLimit(originRate)

	cold := o.push(t, "e2e/tracker-cold", "v1", 4, 8<<20)
	o.proxy.Reset()
	ratio, _ := pullAtOnce(t, ctx, o, nodes, cold)
	if ratio > 1.05 {
		t.Errorf("8 nodes with a tracker pulling a cold image cost the origin %.3fx the image, want <= 1.05x", ratio)
	}
	sw, err := tr.Swarms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range lackingSwarms(sw, cold.Blobs(), len(nodes)) {
		t.Errorf("tracker /swarms: blob %s has %v, want %d members", d, sw.Swarms, len(nodes))
	}

	// The tracker dies: the nodes carry on with the DHT, and clients notice nothing.
	tr.Kill()
	down := o.push(t, "e2e/tracker-down", "v1", 2, 8<<20)
	o.proxy.Reset()
	ratio, _ = pullAtOnce(t, ctx, o, nodes[:4], down)
	if ratio > 1.5 {
		t.Errorf("4 nodes pulling a cold image with the tracker down cost the origin %.3fx, want <= 1.5x", ratio)
	}

	// Restarted (same address, same identity), it starts empty and rebuilds from announces.
	// The nodes come back to it as their back-off from the dead one ends (up to the client's
	// 30 s): once every node announced what it holds, a new rollout is exact again.
	tr2 := harness.StartTracker(t, harness.TrackerOptions{DataDir: trackerDir, Listen: tr.Addr})
	if tr2.URL != tr.URL {
		t.Fatalf("restarted tracker at %s, want %s", tr2.URL, tr.URL)
	}
	rebuilt := func(held []harness.Descriptor, within time.Duration) {
		t.Helper()
		var missing []digest.Digest
		err := harness.Poll(ctx, "the restarted tracker's swarms", within, func() error {
			var err error
			if sw, err = tr2.Swarms(ctx); err != nil {
				t.Fatal(err)
			}
			if missing = lackingSwarms(sw, held, len(nodes)); len(missing) > 0 {
				return errors.New("blobs missing")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("restarted tracker: %d blobs the nodes hold are not back in /swarms after %v: %+v", len(missing), within, sw.Swarms)
		}
	}
	rebuilt(cold.Blobs(), 60*time.Second)
	again := o.push(t, "e2e/tracker-again", "v1", 2, 8<<20)
	o.proxy.Reset()
	ratio, _ = pullAtOnce(t, ctx, o, nodes, again)
	if ratio > 1.05 {
		t.Errorf("after a tracker restart, 8 nodes pulling a cold image cost the origin %.3fx, want <= 1.05x", ratio)
	}
	rebuilt(again.Blobs(), 30*time.Second)
}

// lackingSwarms returns the blobs that sw lists with fewer than members members, or not at all.
func lackingSwarms(sw tracker.SwarmsResponse, blobs []harness.Descriptor, members int) []digest.Digest {
	var out []digest.Digest
	for _, b := range blobs {
		if !slices.ContainsFunc(sw.Swarms, func(s tracker.SwarmView) bool { return s.Digest == b.Digest && s.Members >= members }) {
			out = append(out, b.Digest)
		}
	}
	return out
}

// TestTrackersSideBySide runs two trackers and six nodes given both: each tracker knows every
// swarm (nodes announce to all), leases for a blob come from one of them, and a cold rollout
// costs the origin at most 1.05x. With one tracker killed, the other takes over its leases and
// a new rollout is still exact.
func TestTrackersSideBySide(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	trackers := []*harness.Tracker{
		harness.StartTracker(t, harness.TrackerOptions{}),
		harness.StartTracker(t, harness.TrackerOptions{}),
	}
	nodes := make([]*harness.Node, 6)
	for i := range nodes {
		nodes[i] = o.startNode(t, harness.NodeOptions{
			Args: slices.Concat(p2pListen, []string{"--tracker", trackers[0].URL, "--tracker", trackers[1].URL}),
		})
	}
	waitPeers(t, ctx, nodes, 3)
	o.proxy.SetRateLimit(12 << 20)

	cold := o.push(t, "e2e/trackers-cold", "v1", 4, 6<<20)
	o.proxy.Reset()
	if ratio, _ := pullAtOnce(t, ctx, o, nodes, cold); ratio > 1.05 {
		t.Errorf("6 nodes with two trackers pulling a cold image cost the origin %.3fx the image, want <= 1.05x", ratio)
	}
	for i, tr := range trackers {
		sw, err := tr.Swarms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range lackingSwarms(sw, cold.Blobs(), len(nodes)) {
			t.Errorf("tracker %d /swarms: blob %s missing or with fewer than %d members: %+v", i, d, len(nodes), sw.Swarms)
		}
	}

	granted := func(tr *harness.Tracker) float64 {
		m, err := tr.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m.Sum("shoal_tracker_leases_total", harness.Labels{"result": "granted"})
	}
	before := granted(trackers[1])
	t.Logf("leases granted: tracker 0 %.0f, tracker 1 %.0f", granted(trackers[0]), before)

	trackers[0].Kill()
	next := o.push(t, "e2e/trackers-one-left", "v1", 4, 6<<20)
	o.proxy.Reset()
	if ratio, _ := pullAtOnce(t, ctx, o, nodes, next); ratio > 1.05 {
		t.Errorf("6 nodes with one of two trackers dead pulling a cold image cost the origin %.3fx, want <= 1.05x", ratio)
	}
	// Every blob came from the origin under a lease, and only the survivor could grant it.
	if got := granted(trackers[1]) - before; got < float64(len(next.Blobs())) {
		t.Errorf("the surviving tracker granted %.0f leases for %d blobs, want at least one per blob", got, len(next.Blobs()))
	}
}

// waitPeers waits until every node is connected to at least min libp2p peers.
func waitPeers(t *testing.T, ctx context.Context, nodes []*harness.Node, min int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		var st harness.NodeStatus
		err := harness.Poll(ctx, "peers", time.Until(deadline), func() error {
			var err error
			if st, err = n.Status(ctx); err != nil {
				t.Fatal(err)
			}
			if st.Peers < min {
				return errors.New("too few peers")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("node %s: %d peers after 20 s, want >= %d", n.URL, st.Peers, min)
		}
	}
}

// TestTrackerBadInput sends a real tracker malformed, oversized, unsigned, forged and
// unauthorised requests: each gets a 4xx, and none makes it record a member or hand out a
// lease; the tracker stays healthy and still serves a well-formed announce.
func TestTrackerBadInput(t *testing.T) {
	t.Parallel()
	tr := harness.StartTracker(t, harness.TrackerOptions{})
	a, b := p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	blob := digest.FromString("bad input")
	announce := func(peer string, addrs []string) []byte {
		body, err := json.Marshal(tracker.AnnounceRequest{
			Peer: peer, Addrs: addrs, Time: time.Now().UnixMilli(),
			Blobs: []tracker.BlobState{{Digest: blob, Size: 100, ChunkSize: 10, Done: 10}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	lease, _ := json.Marshal(tracker.LeaseRequest{Peer: b.ID, Time: time.Now().UnixMilli(), Digest: blob, Size: 100, ChunkSize: 10, Chunk: 0})
	huge := append([]byte(`{"peer":"`), bytes.Repeat([]byte("x"), tracker.MaxBody+1)...)
	cases := []struct {
		name   string
		path   string
		signer *p2ptest.Peer // nil: unsigned
		header string        // Shoal-Peer, if not the signer's
		body   []byte
		tamper bool // change the body after signing
	}{
		{"unsigned", tracker.PathAnnounce, nil, "", announce(a.ID, a.Addrs), false},
		{"not JSON", tracker.PathAnnounce, a, "", []byte("announce everything"), false},
		{"unknown field", tracker.PathAnnounce, a, "", []byte(`{"peer":"` + a.ID + `","evil":1}`), false},
		{"huge", tracker.PathAnnounce, a, "", huge, false},
		{"body changed after signing", tracker.PathAnnounce, a, "", announce(a.ID, a.Addrs), true},
		{"signed by one peer, in another's name", tracker.PathAnnounce, a, b.ID, announce(b.ID, b.Addrs), false},
		{"addresses of another peer", tracker.PathAnnounce, a, "", announce(a.ID, b.Addrs), false},
		{"lease from a peer in no swarm", tracker.PathLease, b, "", lease, false},
	}
	for _, c := range cases {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, tr.URL+c.path, bytes.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if c.signer != nil {
			if err := tracker.Sign(req, c.signer.Signer, c.body); err != nil {
				t.Fatal(err)
			}
		}
		if c.header != "" {
			req.Header.Set(tracker.HeaderPeer, c.header)
		}
		if c.tamper {
			req.Body = io.NopCloser(bytes.NewReader(bytes.Replace(c.body, []byte(`"done":10`), []byte(`"done":90`), 1)))
			req.ContentLength = -1
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		t.Logf("%s: %d %s", c.name, resp.StatusCode, bytes.TrimSpace(msg))
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s: status %d %s, want a 4xx", c.name, resp.StatusCode, msg)
		}
	}
	sw, err := tr.Swarms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(sw.Swarms) != 0 {
		t.Errorf("after refused requests only, /swarms = %+v, want nothing", sw.Swarms)
	}
	// Still serving: a well-formed, signed announce is taken.
	body := announce(a.ID, a.Addrs)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, tr.URL+tracker.PathAnnounce, bytes.NewReader(body))
	if err := tracker.Sign(req, a.Signer, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a good announce after the bad ones: status %d", resp.StatusCode)
	}
	if sw, err = tr.Swarms(t.Context()); err != nil || len(sw.Swarms) != 1 || sw.Swarms[0].Members != 1 {
		t.Errorf("after one good announce, /swarms = %+v (%v), want one swarm of one member", sw.Swarms, err)
	}
}
