package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// mirrorSetup points containerd at the node for the origin registry's host. containerd's
// fallback `server` is a second counting proxy, so a pull that quietly bypassed the node
// shows up there instead of passing.
type mirrorSetup struct {
	hostsDir string
	fallback *harness.CountingProxy
}

func setUpMirror(t *testing.T, o origin, n *harness.Node) mirrorSetup {
	t.Helper()
	m := mirrorSetup{hostsDir: t.TempDir(), fallback: harness.StartCountingProxy(t, o.reg.URL)}
	if err := harness.WriteHostsTOML(m.hostsDir, o.reg.Addr, m.fallback.URL, n.URL); err != nil {
		t.Fatal(err)
	}
	return m
}

// pull fetches im with a fresh containerd through the mirror and verifies what it stored.
func (m mirrorSetup) pull(t *testing.T, ctx context.Context, im harness.Image) {
	t.Helper()
	ctr := harness.StartContainerd(t).Ctr()
	if err := ctr.Fetch(ctx, im.Ref(), m.hostsDir); err != nil {
		t.Fatalf("ctr content fetch %s through the node: %v", im.Ref(), err)
	}
	if err := ctr.VerifyContent(ctx, im.Contents()); err != nil {
		t.Errorf("containerd content after the pull: %v", err)
	}
	if reqs := m.fallback.Requests(); len(reqs) > 0 {
		t.Errorf("containerd fell back past the node to the upstream %d times, first: %s", len(reqs), reqs[0])
	}
}

// TestContainerdPull pulls an image with containerd through the node twice, each time with
// a fresh containerd: the first pull comes from the origin, once per blob; the second
// entirely from the node's cache.
func TestContainerdPull(t *testing.T) {
	t.Parallel()
	harness.RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/pull", "v1", 3, 3<<20)
	n := o.startNode(t, harness.NodeOptions{})
	m := setUpMirror(t, o, n)

	m.pull(t, ctx, im)
	for _, d := range im.Blobs() {
		if got := o.proxy.Blob(d.Digest); got.Bytes != d.Size || got.GETs == 0 {
			t.Errorf("first pull: origin served blob %s %+v, want its %d bytes once", d.Digest, got, d.Size)
		}
	}
	cache1, origin1 := served(t, ctx, n)
	if origin1 <= 0 {
		t.Errorf("first pull: shoal_blob_served_bytes_total{source=download} = %v, want > 0", origin1)
	}

	o.proxy.Reset()
	m.pull(t, ctx, im)
	if traffic := originBlobTraffic(o.proxy); len(traffic) > 0 {
		t.Errorf("second pull: origin served blob bytes, want none from a warm node: %v", traffic)
	}
	if got := o.proxy.Total(harness.KindBlob); got.Requests > 0 {
		t.Logf("second pull: origin saw %d bodiless blob requests", got.Requests)
	}
	cache2, origin2 := served(t, ctx, n)
	if cache2-cache1 < float64(im.BlobBytes()) || origin2 != origin1 {
		t.Errorf("second pull: served bytes cache +%v, download +%v; want cache +%d (at least), download +0",
			cache2-cache1, origin2-origin1, im.BlobBytes())
	}
}

// TestRestartKeepsCache restarts the node on the same data dir: what it cached before is
// served again without any blob traffic from the origin.
func TestRestartKeepsCache(t *testing.T) {
	t.Parallel()
	harness.RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/restart", "v1", 2, 2<<20)
	dataDir := t.TempDir()

	first := o.startNode(t, harness.NodeOptions{DataDir: dataDir})
	setUpMirror(t, o, first).pull(t, ctx, im)
	for _, d := range im.Blobs() {
		if got := o.proxy.Blob(d.Digest); got.Bytes != d.Size {
			t.Errorf("pull before restart: origin served blob %s %+v, want its %d bytes once", d.Digest, got, d.Size)
		}
	}
	start := time.Now()
	if err := first.Close(); err != nil {
		t.Fatalf("stop node: %v", err)
	}
	t.Logf("node stopped in %v", time.Since(start).Round(time.Millisecond))

	o.proxy.Reset()
	second := o.startNode(t, harness.NodeOptions{DataDir: dataDir})
	setUpMirror(t, o, second).pull(t, ctx, im)
	if traffic := originBlobTraffic(o.proxy); len(traffic) > 0 {
		t.Errorf("pull after restart: origin served blob bytes, want none: %v", traffic)
	}
	if cache, origin := served(t, ctx, second); origin != 0 || cache < float64(im.BlobBytes()) {
		t.Errorf("pull after restart: served bytes cache %v, origin %v; want cache >= %d, origin 0", cache, origin, im.BlobBytes())
	}
	st, err := second.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cache.Blobs < len(im.Blobs()) || st.Cache.Bytes < im.BlobBytes() {
		t.Errorf("/status after restart: cache %+v, want at least %d blobs, %d bytes", st.Cache, len(im.Blobs()), im.BlobBytes())
	}
}
