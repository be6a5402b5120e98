package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestSeedsFetchForTheFleet: in a fleet without trackers, each blob's seeds (its three
// members closest to the blob's key in the DHT) fetch it from the origin for the fleet,
// whether or not a client asked them: a node that is not a seed asks them with a FETCH and
// takes the blob from them. Six real nodes, one pull through one of them: every seed of a
// blob the puller is no seed of holds it afterwards, the nodes that are neither seed nor
// puller hold nothing, and the origin sent one copy.
func TestSeedsFetchForTheFleet(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/seeds", "v1", 3, 4<<20)
	first, boot := o.startSeed(t, harness.NodeOptions{})
	nodes := append([]*harness.Node{first}, o.join(t, boot, 5, harness.NodeOptions{})...)
	// Every node connected to every other, so its DHT lookups see the whole fleet.
	waitPeers(t, ctx, nodes, len(nodes)-1)
	byID := make(map[string]*harness.Node)
	var ids []string
	for _, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byID[st.PeerID] = n
		ids = append(ids, st.PeerID)
	}
	o.proxy.Reset()
	puller := nodes[len(nodes)-1]
	if err := harness.PullThrough(ctx, puller.URL, im); err != nil {
		t.Fatal(err)
	}
	holds := make(map[*harness.Node]int)
	for _, b := range im.Blobs() {
		sorted, err := p2p.ClosestTo(b.Digest, ids)
		if err != nil {
			t.Fatal(err)
		}
		seeds := sorted[:3]
		if slices.ContainsFunc(seeds, func(id string) bool { return byID[id] == puller }) {
			// A seed fetches its share and the other seeds' too when they are not fetching:
			// it asks none of them.
			continue
		}
		for _, id := range seeds {
			holds[byID[id]]++
			if err := byID[id].WaitStored(ctx, 20*time.Second, b); err != nil {
				t.Errorf("seed %s of blob %s: %v", byID[id].URL, b.Digest, err)
			}
		}
	}
	if len(holds) == 0 {
		t.Log("the puller is a seed of every blob: no FETCH was needed")
	}
	for _, n := range nodes {
		if n == puller || holds[n] > 0 {
			continue
		}
		if st, err := n.Status(ctx); err != nil || st.Cache.Blobs != 0 {
			t.Errorf("node %s, a seed of no blob, holds %d blobs (%v), want none", n.URL, st.Cache.Blobs, err)
		}
	}
	sent := originBlobBytes(t, ctx, o.proxy)
	ratio := float64(sent) / float64(im.BlobBytes())
	t.Logf("the origin sent %.3fx the image's blob bytes; per blob: %s", ratio, blobTrafficSummary(o.proxy, im))
	if ratio > 1.05 {
		t.Errorf("the origin sent %.3fx the image's blob bytes, want one copy (<= 1.05x)", ratio)
	}
}
