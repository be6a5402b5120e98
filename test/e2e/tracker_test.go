package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

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
			Args: []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--tracker", tr.URL},
		})
	}
	// Every node reaches other nodes, not only the tracker.
	waitPeers(t, ctx, nodes, 2)

	const originRate = 12 << 20
	o.proxy.SetRateLimit(originRate)

	cold := o.push(t, "e2e/tracker-cold", "v1", 4, 8<<20)
	o.proxy.Reset()
	ratio := pullAtOnce(t, ctx, o, nodes, cold)
	if ratio > 1.05 {
		t.Errorf("8 nodes with a tracker pulling a cold image cost the origin %.3fx the image, want <= 1.05x", ratio)
	}
	sw, err := tr.Swarms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range cold.Blobs() {
		i := slices.IndexFunc(sw.Swarms, func(s trackerSwarm) bool { return s.Digest == b.Digest })
		if i < 0 || sw.Swarms[i].Members < len(nodes) {
			t.Errorf("tracker /swarms: blob %s has %v, want %d members", b.Digest, sw.Swarms, len(nodes))
		}
	}

	// The tracker dies: the nodes carry on with the DHT, and clients notice nothing.
	tr.Kill()
	down := o.push(t, "e2e/tracker-down", "v1", 2, 8<<20)
	o.proxy.Reset()
	ratio = pullAtOnce(t, ctx, o, nodes[:4], down)
	if ratio > 1.5 {
		t.Errorf("4 nodes pulling a cold image with the tracker down cost the origin %.3fx, want <= 1.5x", ratio)
	}

	// Restarted (same address, same identity), it starts empty and rebuilds from announces:
	// a new rollout is exact again, and the swarms of what the nodes hold come back.
	tr2 := harness.StartTracker(t, harness.TrackerOptions{DataDir: trackerDir, Listen: tr.Addr})
	if tr2.URL != tr.URL {
		t.Fatalf("restarted tracker at %s, want %s", tr2.URL, tr.URL)
	}
	again := o.push(t, "e2e/tracker-again", "v1", 2, 8<<20)
	o.proxy.Reset()
	ratio = pullAtOnce(t, ctx, o, nodes, again)
	if ratio > 1.05 {
		t.Errorf("after a tracker restart, 8 nodes pulling a cold image cost the origin %.3fx, want <= 1.05x", ratio)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sw, err := tr2.Swarms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, b := range append(cold.Blobs(), again.Blobs()...) {
			if !slices.ContainsFunc(sw.Swarms, func(s trackerSwarm) bool { return s.Digest == b.Digest && s.Members >= len(nodes) }) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("restarted tracker: %d blobs the nodes hold are not back in /swarms after 30 s: %+v", missing, sw.Swarms)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitPeers waits until every node is connected to at least min libp2p peers.
func waitPeers(t *testing.T, ctx context.Context, nodes []*harness.Node, min int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		for {
			st, err := n.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Peers >= min {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: %d peers after 20 s, want >= %d", n.URL, st.Peers, min)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// pullAtOnce has every node's client pull im at the same instant, checks every pull and what
// the nodes stored, logs where the bytes came from, and returns the origin's blob bytes as a
// multiple of the image's.
func pullAtOnce(t *testing.T, ctx context.Context, o origin, nodes []*harness.Node, im harness.Image) float64 {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	start := make(chan struct{})
	wait := startPulls(pctx, nodes, im, true, start)
	began := time.Now()
	close(start)
	res := wait()
	took := time.Since(began)
	checkPulls(t, fmt.Sprintf("pull of %s", im.Repo), res)
	checkStored(t, ctx, nodes, im)
	sent := originBlobBytes(t, ctx, o.proxy)
	ratio := float64(sent) / float64(im.BlobBytes())
	t.Logf("%s: %d nodes in %v, the origin sent %.3fx the image's %s", im.Repo, len(nodes), took.Round(time.Millisecond), ratio, mib(float64(im.BlobBytes())))
	return ratio
}

type trackerSwarm = tracker.SwarmView
