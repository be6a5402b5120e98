package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// The prefetch tests run the real `shoal prefetch` against real nodes: it warms them so a
// later pull costs the origin no blob byte, and a fleet warmed at once costs it about one
// image.

// prefetchCLI runs `shoal prefetch ARGS...` and returns its stdout, its stderr and its exit
// code.
func prefetchCLI(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := runShoal(t, ctx, append([]string{"prefetch"}, args...)...)
	t.Logf("shoal prefetch %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	return stdout, stderr, code
}

// wantPrefetched checks that the CLI succeeded with an ok summary line for each node.
func wantPrefetched(t *testing.T, stdout, stderr string, code int, nodes ...*harness.Node) {
	t.Helper()
	if code != 0 || stderr != "" {
		t.Fatalf("shoal prefetch exited %d with stderr %q, want 0 and nothing", code, stderr)
	}
	for _, n := range nodes {
		found := false
		for line := range strings.SplitSeq(stdout, "\n") {
			if strings.HasPrefix(line, n.AdminURL) && strings.Contains(line, " ok ") {
				found = true
			}
		}
		if !found {
			t.Errorf("shoal prefetch printed no ok summary for %s:\n%s", n.AdminURL, stdout)
		}
	}
}

// TestPrefetchWarmsNode prefetches an image through one node: the origin sends each blob
// once, and a pull through the node afterwards (a real containerd where one can run, else
// the harness's client) costs the origin no blob byte.
func TestPrefetchWarmsNode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/prefetch", "v1", 3, 2<<20)
	n := o.startNode(t, harness.NodeOptions{})

	stdout, stderr, code := prefetchCLI(t, ctx, im.Ref(), "--nodes", n.AdminURL, "--timeout", "2m")
	wantPrefetched(t, stdout, stderr, code, n)
	if err := n.CheckStored(im.Blobs()...); err != nil {
		t.Error(err)
	}
	for _, d := range im.Blobs() {
		if got := o.proxy.Blob(d.Digest); got.Bytes != d.Size {
			t.Errorf("prefetch: origin served blob %s %+v, want its %d bytes once", d.Digest, got, d.Size)
		}
	}
	m, err := n.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("shoal_prefetch_requests_total", harness.Labels{"result": "ok"}); got != 1 {
		t.Errorf("shoal_prefetch_requests_total{result=ok} = %v, want 1", got)
	}

	o.proxy.Reset()
	if containerdUsable(t) {
		t.Log("pulling with a real containerd")
		setUpMirror(t, o, n).pull(t, ctx, im)
	} else {
		t.Log("containerd cannot run here: pulling with the harness's client")
		if err := harness.ResolveTag(ctx, n.URL, im); err != nil {
			t.Fatal(err)
		}
		if err := harness.PullThrough(ctx, n.URL, im); err != nil {
			t.Fatal(err)
		}
	}
	if traffic := originBlobTraffic(o.proxy); len(traffic) > 0 {
		t.Errorf("pull after the prefetch: origin served blob bytes, want none: %v", traffic)
	}
}

// TestPrefetchFleet prefetches a new image through two nodes of a fleet at once, through
// an origin limited like a WAN link: the origin sends about one copy of the image's blobs,
// and both nodes hold it all.
func TestPrefetchFleet(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/prefetch-fleet", "v1", 3, 8<<20)
	seed, boot := o.startSeed(t, harness.NodeOptions{})
	nodes := append([]*harness.Node{seed}, o.join(t, boot, 1, harness.NodeOptions{})...)
	o.proxy.Reset()
	o.proxy.SetRateLimit(12 << 20)

	stdout, stderr, code := prefetchCLI(t, ctx, im.Ref(), "--nodes", nodes[0].AdminURL+","+nodes[1].AdminURL, "--timeout", "2m")
	wantPrefetched(t, stdout, stderr, code, nodes...)
	checkStored(t, ctx, nodes, im)
	sent := originBlobBytes(t, ctx, o.proxy)
	ratio := float64(sent) / float64(im.BlobBytes())
	t.Logf("the origin sent %d blob bytes: %.3fx the image's %d; per blob: %s", sent, ratio, im.BlobBytes(), blobTrafficSummary(o.proxy, im))
	for _, n := range nodes {
		peer, orig := fetchedBytes(t, ctx, n)
		t.Logf("  node %s fetched %s from peers, %s from the origin", n.URL, mib(peer), mib(orig))
	}
	if ratio > 1.25 {
		t.Errorf("prefetching through two nodes cost the origin %.3fx the image's blob bytes (%d of %d), want about one copy (<= 1.25x)", ratio, sent, im.BlobBytes())
	}
}

// TestPrefetchRefused asks a node for an image of a registry it does not mirror, and a
// node that is not there: the CLI exits 1 with one line, and the origin sees nothing.
func TestPrefetchRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/prefetch-refused", "v1", 1, 64<<10)
	n := o.startNode(t, harness.NodeOptions{})
	trap := harness.StartCountingProxy(t, o.reg.URL)
	o.proxy.Reset()

	_, stderr, code := prefetchCLI(t, ctx, im.RefAt(strings.TrimPrefix(trap.URL, "http://")), "--nodes", n.AdminURL)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "not mirrored by this node") {
		t.Errorf("prefetch of an unmirrored registry: exit %d, stderr %q; want 1 and one line saying so", code, stderr)
	}
	if got := len(trap.Requests()) + len(o.proxy.Requests()); got != 0 {
		t.Errorf("prefetch of an unmirrored registry made %d upstream requests, want none", got)
	}

	gone := harness.MustFreeAddr(t)
	_, stderr, code = prefetchCLI(t, ctx, im.Ref(), "--nodes", n.AdminURL+",http://"+gone)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "1 of 2 nodes") || !strings.Contains(stderr, gone) {
		t.Errorf("prefetch with a node that is not there: exit %d, stderr %q; want 1 and one line naming it", code, stderr)
	}
	if err := n.CheckStored(im.Blobs()...); err != nil {
		t.Errorf("the node that is there: %v", err)
	}

	_, stderr, code = prefetchCLI(t, ctx, "--nodes", n.AdminURL)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "no image") {
		t.Errorf("prefetch without an image: exit %d, stderr %q; want 1 and one line", code, stderr)
	}
}
