package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestFleetJoin starts real nodes with p2p on loopback: the second and third bootstrap from
// the first's /status addrs, become ready only once joined, and every node reports peers.
// A node restarted on the same data dir keeps its peer ID.
func TestFleetJoin(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	listen := []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0"}
	seedDir := t.TempDir()
	seed := o.startNode(t, harness.NodeOptions{DataDir: seedDir, Args: listen})
	st, err := seed.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerID == "" || len(st.Addrs) == 0 || !strings.HasSuffix(st.Addrs[0], "/p2p/"+st.PeerID) {
		t.Fatalf("seed /status: peerID %q addrs %v, want addrs ending in /p2p/<peerID>", st.PeerID, st.Addrs)
	}
	var members []*harness.Node
	for range 2 {
		// StartNode waits for /readyz, which a node given bootstrap peers answers only
		// once it has joined.
		members = append(members, o.startNode(t, harness.NodeOptions{Args: append(listen, "--bootstrap", st.Addrs[0])}))
	}
	for i, n := range append(members, seed) {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Peers < 1 || st.Raw["joined"] != true {
			t.Errorf("node %d /status: peers %d joined %v, want a joined node with peers", i, st.Peers, st.Raw["joined"])
		}
	}

	// Same data dir, same identity.
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	again := o.startNode(t, harness.NodeOptions{DataDir: seedDir, Args: listen})
	st2, err := again.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.PeerID != st.PeerID {
		t.Errorf("peer ID after restart = %s, want %s", st2.PeerID, st.PeerID)
	}
}
