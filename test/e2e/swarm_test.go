package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// The swarm tests run fleets of real nodes on loopback. They join through the first node's
// /status addrs, find each other's blobs through the DHT and pull chunks from each other;
// the counting proxy in front of the registry says what the origin still had to send.
// Clients are the harness's verifying Go client (harness.PullThrough) and, in
// TestSwarmWarmImage, a real containerd.

// p2pListen puts a node's p2p side on a free loopback port.
var p2pListen = []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0"}

// startSeed starts the first node of a fleet and returns it with an address the others
// bootstrap from.
func (o origin) startSeed(t *testing.T, opts harness.NodeOptions) (*harness.Node, string) {
	t.Helper()
	opts.Args = slices.Concat(p2pListen, opts.Args)
	n := o.startNode(t, opts)
	st, err := n.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Addrs) == 0 {
		t.Fatalf("node %s: /status has no addrs to bootstrap from", n.URL)
	}
	return n, st.Addrs[0]
}

// join starts k nodes that bootstrap from boot, each with its own data dir. StartNode
// returns once /readyz answers, which for a node with bootstrap peers means joined.
func (o origin) join(t *testing.T, boot string, k int, opts harness.NodeOptions) []*harness.Node {
	t.Helper()
	if opts.DataDir != "" && k > 1 {
		t.Fatalf("join: %d nodes cannot share data dir %s", k, opts.DataDir)
	}
	nodes := make([]*harness.Node, k)
	for i := range nodes {
		no := opts
		no.Args = slices.Concat(p2pListen, []string{"--bootstrap", boot}, opts.Args)
		nodes[i] = o.startNode(t, no)
	}
	return nodes
}

// pullResult is how one client's pull through one node went.
type pullResult struct {
	node *harness.Node
	err  error
	took time.Duration
}

// startPulls starts one client per node, each waiting for start to be closed: resolve the
// tag (when resolve is set), then harness.PullThrough. The returned function waits for all
// of them.
func startPulls(ctx context.Context, nodes []*harness.Node, im harness.Image, resolve bool, start <-chan struct{}) func() []pullResult {
	res := make([]pullResult, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			<-start
			began := time.Now()
			var err error
			if resolve {
				err = harness.ResolveTag(ctx, n.URL, im)
			}
			if err == nil {
				err = harness.PullThrough(ctx, n.URL, im)
			}
			res[i] = pullResult{node: n, err: err, took: time.Since(began)}
		})
	}
	return func() []pullResult {
		wg.Wait()
		return res
	}
}

// pullAtOnce has every node's client pull im at the same instant, checks every pull and what
// the nodes stored, logs where the bytes came from, and returns the origin's blob bytes as a
// multiple of the image's, with each pull's result.
func pullAtOnce(t *testing.T, ctx context.Context, o origin, nodes []*harness.Node, im harness.Image) (float64, []pullResult) {
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
	return ratio, res
}

// pullNow pulls im through n alone and fails the test if that does not work.
func pullNow(t *testing.T, ctx context.Context, n *harness.Node, im harness.Image) {
	t.Helper()
	if err := harness.ResolveTag(ctx, n.URL, im); err != nil {
		t.Fatal(err)
	}
	if err := harness.PullThrough(ctx, n.URL, im); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitStored(ctx, 10*time.Second, im.Blobs()...); err != nil {
		t.Fatal(err)
	}
}

// checkPulls fails the test for every pull that did not end with exactly the right bytes,
// saying whether the client was handed wrong bytes or saw a failure. It returns the number
// of pulls that succeeded.
func checkPulls(t *testing.T, what string, res []pullResult) int {
	t.Helper()
	ok := 0
	for _, r := range res {
		switch {
		case errors.Is(r.err, harness.ErrBadContent):
			t.Errorf("%s through node %s: the client was handed wrong bytes after %v: %v", what, r.node.URL, r.took, r.err)
		case r.err != nil:
			t.Errorf("%s through node %s failed after %v: %v", what, r.node.URL, r.took, r.err)
		default:
			ok++
		}
	}
	return ok
}

// checkStored fails the test for every node that did not commit the image's blobs intact.
func checkStored(t *testing.T, ctx context.Context, nodes []*harness.Node, im harness.Image) {
	t.Helper()
	for _, n := range nodes {
		if err := n.WaitStored(ctx, 10*time.Second, im.Blobs()...); err != nil {
			t.Error(err)
		}
	}
}

// fetchedBytes reads shoal_blob_fetched_bytes_total of n by source.
func fetchedBytes(t *testing.T, ctx context.Context, n *harness.Node) (peer, origin float64) {
	t.Helper()
	m, err := n.Metrics(ctx)
	if err != nil {
		t.Errorf("node %s: %v", n.URL, err)
		return 0, 0
	}
	const name = "shoal_blob_fetched_bytes_total"
	if !m.Has(name) {
		t.Errorf("node %s: metric %s is missing from /metrics", n.URL, name)
	}
	return m.Sum(name, harness.Labels{"source": "peer"}), m.Sum(name, harness.Labels{"source": "origin"})
}

// originBlobBytes waits for the origin's requests to end and returns the blob body bytes it
// sent since the last Reset.
func originBlobBytes(t *testing.T, ctx context.Context, p *harness.CountingProxy) int64 {
	t.Helper()
	if err := p.WaitIdle(ctx, 15*time.Second); err != nil {
		t.Errorf("the origin is still serving after every client is done: %v", err)
	}
	return p.Total(harness.KindBlob).Bytes
}

// containerdUsable reports whether containerd can be started here: as root with containerd
// and ctr installed. In CI it must be (RequireContainerd fails the test otherwise).
func containerdUsable(t *testing.T) bool {
	t.Helper()
	if harness.InCI() {
		harness.RequireContainerd(t)
		return true
	}
	if os.Geteuid() != 0 {
		return false
	}
	for _, name := range []string{"containerd", "ctr"} {
		if _, err := harness.ToolPath(name); err != nil {
			return false
		}
	}
	return true
}

// blobTrafficSummary says, per blob of im, how much the origin sent and in how many requests.
func blobTrafficSummary(p *harness.CountingProxy, im harness.Image) string {
	var parts []string
	for _, d := range im.Blobs() {
		if c := p.Blob(d.Digest); c.Requests > 0 {
			parts = append(parts, fmt.Sprintf("%s… (%d bytes) %.2fx in %d requests",
				d.Digest.Encoded()[:12], d.Size, float64(c.Bytes)/float64(d.Size), c.Requests))
		}
	}
	return strings.Join(parts, "; ")
}

func mib(n float64) string { return fmt.Sprintf("%.1f MiB", n/(1<<20)) }

// TestSwarmWarmImage has one node of six pull an image from the origin; then the other five
// pull it at once, one of them through a real containerd. The origin sends them no blob byte
// (tags still resolve there), each gets and keeps the right bytes, and each reports bytes
// fetched from peers.
func TestSwarmWarmImage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/swarm-warm", "v1", 3, 8<<20)
	first, boot := o.startSeed(t, harness.NodeOptions{})
	others := o.join(t, boot, 5, harness.NodeOptions{})

	pullNow(t, ctx, first, im)
	if got := originBlobBytes(t, ctx, o.proxy); got < im.BlobBytes() {
		t.Fatalf("first pull: the origin sent %d blob bytes, want the image's %d", got, im.BlobBytes())
	}
	o.proxy.Reset()

	useCtr := containerdUsable(t)
	goClients := others
	var ctr harness.Ctr
	var mirror mirrorSetup
	if useCtr {
		mirror = setUpMirror(t, o, others[0])
		ctr = harness.StartContainerd(t).Ctr()
		goClients = others[1:]
	} else {
		t.Log("containerd is not usable here (not root, or not installed): every client is the Go client")
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Minute)
	defer pcancel()
	start := make(chan struct{})
	wait := startPulls(pctx, goClients, im, true, start)
	began := time.Now()
	close(start)
	if useCtr {
		if err := ctr.Fetch(pctx, im.Ref(), mirror.hostsDir); err != nil {
			t.Errorf("ctr content fetch %s through node %s: %v", im.Ref(), others[0].URL, err)
		} else if err := ctr.VerifyContent(pctx, im.Contents()); err != nil {
			t.Errorf("containerd content after the pull through node %s: %v", others[0].URL, err)
		}
		if reqs := mirror.fallback.Requests(); len(reqs) > 0 {
			t.Errorf("containerd went past node %s to the upstream %d times, first: %s", others[0].URL, len(reqs), reqs[0])
		}
		t.Logf("containerd pulled through node %s in %v", others[0].URL, time.Since(began).Round(time.Millisecond))
	}
	res := wait()
	t.Logf("5 nodes pulled %s of blobs each from the fleet in %v", mib(float64(im.BlobBytes())), time.Since(began).Round(time.Millisecond))
	checkPulls(t, "warm pull", res)
	checkStored(t, ctx, others, im)

	if sent := originBlobBytes(t, ctx, o.proxy); sent != 0 {
		t.Errorf("the origin sent %d blob bytes for an image a fleet member already held, want 0: %s",
			sent, blobTrafficSummary(o.proxy, im))
	}
	for _, r := range o.proxy.Requests() {
		if r.Kind == harness.KindManifest && r.Ref == im.Manifest.Digest.String() && r.Bytes > 0 {
			t.Errorf("the origin served the manifest by digest (%s); a manifest a peer holds should come from the peer", r)
		}
	}
	for i, n := range others {
		peer, orig := fetchedBytes(t, ctx, n)
		t.Logf("node %d (%s): fetched %s from peers, %s from the origin", i+2, n.URL, mib(peer), mib(orig))
		if peer <= 0 {
			t.Errorf("node %d (%s): shoal_blob_fetched_bytes_total{source=peer} = %v, want > 0", i+2, n.URL, peer)
		}
	}
}

// TestSwarmColdImage has six joined nodes pull a new image at the same instant through an
// origin limited to 12 MiB/s, as a registry behind a WAN link: the origin sends at most
// 1.25 copies of the image's blobs, and every node gets and keeps the right bytes.
func TestSwarmColdImage(t *testing.T) {
	// Not parallel: it moves the most data, and its durations are only worth logging on an
	// otherwise idle machine.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/swarm-cold", "v1", 4, 16<<20)
	seed, boot := o.startSeed(t, harness.NodeOptions{})
	nodes := append([]*harness.Node{seed}, o.join(t, boot, 5, harness.NodeOptions{})...)

	const originRate = 12 << 20
	o.proxy.SetRateLimit(originRate)
	oneCopy := time.Duration(float64(im.BlobBytes()) / originRate * float64(time.Second))
	// Six copies from the origin alone would take 6*oneCopy (~32 s); pullAtOnce allows that
	// and more, so a fleet that does not share still ends with a ratio rather than a timeout.
	ratio, res := pullAtOnce(t, ctx, o, nodes, im)
	t.Logf("one copy at the origin's %s/s takes %v; per blob: %s", mib(originRate), oneCopy.Round(time.Millisecond), blobTrafficSummary(o.proxy, im))
	for i, r := range res {
		peer, orig := fetchedBytes(t, ctx, r.node)
		t.Logf("  node %d (%s): %v, fetched %s from peers, %s from the origin", i+1, r.node.URL, r.took.Round(time.Millisecond), mib(peer), mib(orig))
	}
	if ratio > 1.25 {
		t.Errorf("six nodes pulling a cold image at once cost the origin %.3fx the image's blob bytes (%d), want <= 1.25x",
			ratio, im.BlobBytes())
	}
}

// corruptCase is when the holder's copy rots relative to its serving it.
type corruptCase int

const (
	// corruptAfterServing: the holder has served the blob to a peer (so it has its chunk
	// list at hand) before the byte flips; that peer then leaves, so the holder is the only
	// peer source left.
	corruptAfterServing corruptCase = iota
	// corruptBeforeServing: the byte flips right after the holder's own download, before any
	// peer asked for the blob.
	corruptBeforeServing
	// corruptWhileStopped: the byte flips while the holder is stopped; after its restart it
	// knows the blob only from its disk.
	corruptWhileStopped
)

// TestSwarmCorruptPeer flips a byte in the middle of a layer on the disk of the only node
// holding it, then has two new nodes pull the image at once. They must both end with the
// right bytes, never handing wrong bytes to a client or failing the pull, and the fleet must
// notice: a puller reports a ban or a chunk failure, or the holder drops its bad copy.
func TestSwarmCorruptPeer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		when corruptCase
	}{
		{"after serving a peer", corruptAfterServing},
		{"before serving", corruptBeforeServing},
		{"while stopped", corruptWhileStopped},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testCorruptPeer(t, c.when)
		})
	}
}

func testCorruptPeer(t *testing.T, when corruptCase) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/swarm-corrupt", "v1", 1, 12<<20) // three 4 MiB chunks and a bit
	layer := im.Layers[0]
	holderDir := t.TempDir()
	holder, boot := o.startSeed(t, harness.NodeOptions{DataDir: holderDir})
	pullNow(t, ctx, holder, im)
	path := holder.BlobPath(layer.Digest)
	off := layer.Size / 2 // inside the second chunk

	switch when {
	case corruptAfterServing:
		first := o.join(t, boot, 1, harness.NodeOptions{})[0]
		if err := harness.PullThrough(ctx, first.URL, im); err != nil {
			t.Fatalf("pull through a first peer while the holder was intact: %v", err)
		}
		m, err := holder.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The manifest and the config are a few hundred bytes: this much means the layer's
		// chunks went from the holder to the first peer.
		if up := m.Sum("shoal_chunk_uploaded_bytes_total", nil); up < float64(layer.Size) {
			t.Errorf("the holder sent the first peer %v chunk bytes, want at least the layer's %d: the case 'corrupted after serving a peer' is not exercised",
				up, layer.Size)
		}
		if err := first.Close(); err != nil {
			t.Errorf("stop the first peer: %v", err)
		}
		if err := harness.FlipByte(path, off); err != nil {
			t.Fatal(err)
		}
	case corruptBeforeServing:
		if err := harness.FlipByte(path, off); err != nil {
			t.Fatal(err)
		}
	case corruptWhileStopped:
		if err := holder.Close(); err != nil {
			t.Fatalf("stop the holder: %v", err)
		}
		if err := harness.FlipByte(path, off); err != nil {
			t.Fatal(err)
		}
		_, boot = o.startSeed(t, harness.NodeOptions{DataDir: holderDir})
	}
	t.Logf("flipped byte %d of %s on the holder's disk", off, layer.Digest)

	o.proxy.Reset()
	pullers := o.join(t, boot, 2, harness.NodeOptions{})
	pctx, pcancel := context.WithTimeout(ctx, time.Minute)
	defer pcancel()
	start := make(chan struct{})
	wait := startPulls(pctx, pullers, im, false, start)
	close(start)
	res := wait()
	checkPulls(t, "pull next to a corrupt holder", res)
	checkStored(t, ctx, pullers, im)

	var flagged float64
	for _, n := range pullers {
		m, err := n.Metrics(ctx)
		if err != nil {
			t.Error(err)
			continue
		}
		bans, failures := m.Sum("shoal_peer_bans_total", nil), m.Sum("shoal_chunk_failures_total", nil)
		flagged += bans + failures
		peer, orig := fetchedBytes(t, ctx, n)
		t.Logf("puller %s: bans %v, chunk failures %v (present: %v, %v); fetched %s from peers, %s from the origin",
			n.URL, bans, failures, m.Has("shoal_peer_bans_total"), m.Has("shoal_chunk_failures_total"), mib(peer), mib(orig))
	}
	t.Logf("the origin sent %d bytes of the layer (%d bytes)", o.proxy.Blob(layer.Digest).Bytes, layer.Size)
	got, _, err := harness.FileDigest(path, layer.Digest.Algorithm())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.Log("the holder dropped its corrupt copy")
	case err != nil:
		t.Error(err)
	case got == layer.Digest:
		t.Log("the holder's copy is intact again")
	case flagged == 0:
		t.Errorf("no puller reported a ban or a chunk failure (shoal_peer_bans_total and shoal_chunk_failures_total sum to 0) and the holder still keeps its corrupt copy of %s (hashing to %s)",
			layer.Digest, got)
	}
}

// TestSwarmPeerKilled has a node pull a 64 MiB layer that only one peer holds, with the
// origin slow (12 MiB/s) and the holder's uploads capped at 16 MiB/s; the holder is killed
// with SIGKILL once it has sent two chunks. The pull still completes with the right bytes,
// the rest coming from the origin, which does not resend what the holder already delivered.
func TestSwarmPeerKilled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/swarm-kill", "v1", 1, 64<<20)
	layer := im.Layers[0]
	const (
		chunk       = 4 << 20
		originRate  = 12 << 20
		killAfter   = 2 * chunk
		waitForKill = 20 * time.Second
	)
	chunkArgs := []string{"--chunk-size", "4MiB"}
	holder, boot := o.startSeed(t, harness.NodeOptions{Args: slices.Concat(chunkArgs, []string{"--upload-limit", "16MiB"})})
	pullNow(t, ctx, holder, im)
	puller := o.join(t, boot, 1, harness.NodeOptions{Args: chunkArgs})[0]
	o.proxy.Reset()
	o.proxy.SetRateLimit(originRate)

	pctx, pcancel := context.WithTimeout(ctx, 90*time.Second)
	defer pcancel()
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- harness.PullThrough(pctx, puller.URL, im) }()

	var sent float64
	finished := false
	var pullErr error
	deadline := time.NewTimer(waitForKill)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
watch:
	for {
		select {
		case pullErr = <-done:
			finished = true
			break watch
		case <-deadline.C:
			break watch
		case <-tick.C:
			if m, err := holder.Metrics(ctx); err == nil {
				sent = m.Sum("shoal_chunk_uploaded_bytes_total", nil)
			}
			if sent >= killAfter {
				break watch
			}
		}
	}
	if finished {
		t.Errorf("the pull ended after %v (err %v) before the holder was killed; the holder had sent %s, want %s first: the puller did not fetch from the holder",
			time.Since(began).Round(time.Millisecond), pullErr, mib(sent), mib(killAfter))
		return
	}
	if sent < killAfter {
		t.Errorf("the holder sent the puller only %s in %v, want %s: the puller is not fetching from it (killing it anyway)",
			mib(sent), waitForKill, mib(killAfter))
	}
	killedAt := time.Since(began)
	holder.Kill()
	pullErr = <-done
	took := time.Since(began)
	t.Logf("killed the holder %v into the pull, after it had sent %s; the pull ended after %v",
		killedAt.Round(time.Millisecond), mib(sent), took.Round(time.Millisecond))
	switch {
	case errors.Is(pullErr, harness.ErrBadContent):
		t.Errorf("pull after the holder was killed: the client was handed wrong bytes: %v", pullErr)
	case pullErr != nil:
		t.Errorf("pull after the holder was killed failed: %v", pullErr)
	default:
		checkStored(t, ctx, []*harness.Node{puller}, im)
	}
	if err := o.proxy.WaitIdle(ctx, 15*time.Second); err != nil {
		t.Errorf("the origin is still serving after the pull: %v", err)
	}
	fromOrigin := o.proxy.Blob(layer.Digest).Bytes
	peer, orig := fetchedBytes(t, ctx, puller)
	t.Logf("the origin sent %s of the layer's %s; the puller counts %s from peers, %s from the origin",
		mib(float64(fromOrigin)), mib(float64(layer.Size)), mib(peer), mib(orig))
	if sent >= killAfter && fromOrigin > layer.Size-chunk {
		t.Errorf("the origin sent %d of the layer's %d bytes after the holder had delivered %s: the puller refetched what it already had, want at most %d",
			fromOrigin, layer.Size, mib(sent), layer.Size-chunk)
	}
	if peer <= 0 {
		t.Errorf("puller: shoal_blob_fetched_bytes_total{source=peer} = %v, want > 0", peer)
	}
}

// TestSwarmOriginDown has a node pull an image, a second node join afterwards, and the
// origin go down: the second node still serves the image by digest (manifest and blobs),
// with the right bytes, from the first.
func TestSwarmOriginDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/swarm-down", "v1", 2, 6<<20)
	holder, boot := o.startSeed(t, harness.NodeOptions{})
	pullNow(t, ctx, holder, im)
	// The puller joins after the holder got the image, so it learns of it only through what
	// the holder announced.
	puller := o.join(t, boot, 1, harness.NodeOptions{})[0]
	if err := o.proxy.SetDown(true); err != nil {
		t.Fatal(err)
	}
	o.proxy.Reset()

	pctx, pcancel := context.WithTimeout(ctx, time.Minute)
	defer pcancel()
	began := time.Now()
	err := harness.PullThrough(pctx, puller.URL, im)
	took := time.Since(began)
	switch {
	case errors.Is(err, harness.ErrBadContent):
		t.Errorf("pull by digest with the origin down: the client was handed wrong bytes: %v", err)
	case err != nil:
		t.Errorf("pull by digest with the origin down, the image held by a peer, failed after %v: %v", took.Round(time.Millisecond), err)
	default:
		t.Logf("pulled %s by digest with the origin down in %v", mib(float64(im.TotalSize())), took.Round(time.Millisecond))
		checkStored(t, ctx, []*harness.Node{puller}, im)
	}
	peer, orig := fetchedBytes(t, ctx, puller)
	t.Logf("puller: fetched %s from peers, %s from the origin", mib(peer), mib(orig))
	if peer < float64(im.BlobBytes()) {
		t.Errorf("puller: shoal_blob_fetched_bytes_total{source=peer} = %v, want >= the image's %d blob bytes", peer, im.BlobBytes())
	}
	if reqs := o.proxy.Requests(); len(reqs) > 0 {
		var lines []string
		for _, r := range reqs {
			lines = append(lines, r.String())
		}
		t.Logf("requests cut by the down origin: %s", strings.Join(lines, "; "))
	}
}
