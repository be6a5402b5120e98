package depcheck

import (
	"slices"
	"testing"
)

// libp2p is every module that belongs on the network side of the p2p boundary.
var libp2p = []string{
	"github.com/libp2p/",
	"github.com/multiformats/",
	"github.com/ipfs/",
	"github.com/ipld/",
}

// TestNetworkBoundary keeps libp2p inside p2p (and the daemons that start it): the
// downloader, the store, the mirror, the upstream client, the tracker's wire protocol and the node's client of the trackers can
// be built, simulated and tested without a network stack.
func TestNetworkBoundary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := []string{
		"github.com/shoal-dev/shoal/chunk",
		"github.com/shoal-dev/shoal/node/announce",
		"github.com/shoal-dev/shoal/node/mirror",
		"github.com/shoal-dev/shoal/node/store",
		"github.com/shoal-dev/shoal/node/prefetch",
		"github.com/shoal-dev/shoal/node/prefetch/prefetcher",
		"github.com/shoal-dev/shoal/node/swarm",
		"github.com/shoal-dev/shoal/registryapi",
		"github.com/shoal-dev/shoal/registryapi/origin",
		"github.com/shoal-dev/shoal/tracker",
		"github.com/shoal-dev/shoal/tracker/client",
	}
	chains, err := Forbidden(".", pkgs, libp2p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		t.Errorf("forbidden import: %s", c)
	}
}

// TestPrefetchWire keeps the prefetch wire protocol, which clients (shoal prefetch) import,
// free of the daemon: none of the node's parts, its metrics or its network stack. (The node
// package itself needs no entry: it imports node/store, so a path through it ends there.)
func TestPrefetchWire(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	daemon := append([]string{
		"github.com/shoal-dev/shoal/node/store",
		"github.com/shoal-dev/shoal/node/swarm",
		"github.com/shoal-dev/shoal/node/prefetch/",
		"github.com/shoal-dev/shoal/p2p",
		"github.com/shoal-dev/shoal/registryapi",
		"github.com/shoal-dev/shoal/tracker",
		"github.com/prometheus/",
	}, libp2p...)
	chains, err := Forbidden(".", []string{"github.com/shoal-dev/shoal/node/prefetch"}, daemon)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		t.Errorf("forbidden import: %s", c)
	}
}

// TestForbiddenFindsChains proves the check itself: p2p does import libp2p, and the chain
// it prints starts at the package asked about and ends at a forbidden one.
func TestForbiddenFindsChains(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	chains, err := Forbidden(".", []string{"github.com/shoal-dev/shoal/p2p", "github.com/shoal-dev/shoal/chunk"}, libp2p)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 1 {
		t.Fatalf("Forbidden(p2p, chunk) = %q, want one chain, from p2p", chains)
	}
	want := "github.com/shoal-dev/shoal/p2p -> github.com/"
	if got := chains[0]; len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("chain = %q, want it to start %q", got, want)
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	graph := map[string][]string{
		"a": {"b", "c"},
		"b": {"d"},
		"c": {"bad/x"},
		"d": {"bad/y"},
	}
	if got, want := path(graph, "a", []string{"bad/"}), []string{"a", "c", "bad/x"}; !slices.Equal(got, want) {
		t.Errorf("path(a) = %v, want %v", got, want)
	}
	if got := path(graph, "d", []string{"nothing/"}); got != nil {
		t.Errorf("path(d) = %v, want nil", got)
	}
}
