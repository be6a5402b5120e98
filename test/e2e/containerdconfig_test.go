package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// The containerd-config tests run the built `shoal containerd-config` and then let
// containerd follow what it wrote: containerd's own parser (TestContainerdConfigParsed) and
// a real containerd daemon with ctr (the others).

// containerdConfig runs `shoal containerd-config ARGS` and returns what it printed.
func containerdConfig(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	stdout, stderr, code := runShoal(t, ctx, append([]string{"containerd-config"}, args...)...)
	if code != 0 {
		t.Fatalf("shoal containerd-config %q: exit %d\n%s%s", args, code, stdout, stderr)
	}
	return stdout + stderr
}

// wantFetched waits until n's shoal_blob_fetched_bytes_total reads peer and origin: the
// counters settle a moment after the client has read its last byte.
func wantFetched(t *testing.T, ctx context.Context, n *harness.Node, peer, origin int64) {
	t.Helper()
	var gotPeer, gotOrigin float64
	err := harness.Poll(ctx, "shoal_blob_fetched_bytes_total", 10*time.Second, func() error {
		m, err := n.Metrics(ctx)
		if err != nil {
			return err
		}
		const name = "shoal_blob_fetched_bytes_total"
		gotPeer = m.Sum(name, harness.Labels{"source": "peer"})
		gotOrigin = m.Sum(name, harness.Labels{"source": "origin"})
		if gotPeer != float64(peer) || gotOrigin != float64(origin) {
			return fmt.Errorf("got peer %v, origin %v", gotPeer, gotOrigin)
		}
		return nil
	})
	if err != nil {
		t.Errorf("node %s: shoal_blob_fetched_bytes_total{source=peer} = %v, {source=origin} = %v; want %d and %d",
			n.URL, gotPeer, gotOrigin, peer, origin)
	}
}

// wantServed checks that n served clients at least bytes of blobs.
func wantServed(t *testing.T, ctx context.Context, n *harness.Node, want int64) {
	t.Helper()
	cache, download := served(t, ctx, n)
	t.Logf("node %s served %.0f blob bytes from its cache and %.0f from downloads", n.URL, cache, download)
	if cache+download < float64(want) {
		t.Errorf("node %s: shoal_blob_served_bytes_total = cache %v + download %v, want at least the image's %d blob bytes",
			n.URL, cache, download, want)
	}
}

// fetchWith pulls im into containerd through hostsDir and checks what containerd stored.
func fetchWith(t *testing.T, ctx context.Context, ctr harness.Ctr, hostsDir string, im harness.Image) time.Duration {
	t.Helper()
	start := time.Now()
	if err := ctr.Fetch(ctx, im.Ref(), hostsDir); err != nil {
		t.Fatalf("ctr content fetch %s with the hosts.toml shoal wrote: %v", im.Ref(), err)
	}
	took := time.Since(start)
	if err := ctr.VerifyContent(ctx, im.Contents()); err != nil {
		t.Errorf("containerd content after pulling %s: %v", im.Ref(), err)
	}
	return took
}

// TestContainerdConfigParsed reads the files `shoal containerd-config` writes with
// containerd's own hosts.toml parser: the hosts containerd tries, in order, with their
// capabilities, for listed registries and, through _default, for any other.
func TestContainerdConfigParsed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	const node, node2 = "http://127.0.0.1:5080", "https://10.0.0.7:5443"
	args := []string{"--hosts-dir", dir, "--mirror", node, "--mirror", node2 + "/",
		"--registry", "docker.io", "--registry", "localhost:5000=http://localhost:5000",
		"--registry", "ghcr.io", "--registry", "[fd00::5]:5000", "--default", "--dial-timeout", "300ms"}
	containerdConfig(t, ctx, args...)

	const mirrorCaps = docker.HostCapabilityPull | docker.HostCapabilityResolve
	const allCaps = docker.HostCapabilityPull | docker.HostCapabilityResolve | docker.HostCapabilityPush | docker.HostCapabilityReferrers
	type host struct {
		Scheme, Host, Path string
		Caps               docker.HostCapabilities
	}
	mirrors := []host{{"http", "127.0.0.1:5080", "/v2", mirrorCaps}, {"https", "10.0.0.7:5443", "/v2", mirrorCaps}}
	tests := []struct {
		registry string
		dir      string // the directory containerd reads
		server   host
	}{
		{"docker.io", "docker.io", host{"https", "registry-1.docker.io", "/v2", allCaps}},
		{"localhost:5000", "localhost:5000", host{"http", "localhost:5000", "/v2", allCaps}},
		{"ghcr.io", "ghcr.io", host{"https", "ghcr.io", "/v2", allCaps}},
		{"[fd00::5]:5000", "[fd00::5]:5000", host{"https", "[fd00::5]:5000", "/v2", allCaps}},
		// Not listed: _default sends it to the node, then to the registry itself.
		{"quay.io", "_default", host{"https", "quay.io", "/v2", allCaps}},
	}
	hostsFor := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(dir)})
	for _, tt := range tests {
		got, err := hostsFor(tt.registry)
		if err != nil {
			t.Errorf("ConfigureHosts(%s) = %v", tt.registry, err)
			continue
		}
		want := append(append([]host(nil), mirrors...), tt.server)
		var have []host
		for _, h := range got {
			have = append(have, host{h.Scheme, h.Host, h.Path, h.Capabilities})
		}
		if fmt.Sprint(have) != fmt.Sprint(want) {
			t.Errorf("containerd's hosts for %s = %+v, want %+v", tt.registry, have, want)
		}
		// dial_timeout gives a host its own client; the server, without one, keeps the shared one.
		if len(got) == 3 && (got[0].Client == got[2].Client || got[1].Client == got[2].Client) {
			t.Errorf("containerd's hosts for %s: the mirrors share the server's client, so dial_timeout was not read", tt.registry)
		}
		if d, err := config.HostDirFromRoot(dir)(tt.registry); err != nil || d != filepath.Join(dir, tt.dir) {
			t.Errorf("containerd reads %s from %q (%v), want %s", tt.registry, d, err, filepath.Join(dir, tt.dir))
		}
	}

	// After --remove no directory is left to hide _default, and with _default gone too
	// containerd finds nothing and goes to the registry alone.
	containerdConfig(t, ctx, "--hosts-dir", dir, "--registry", "localhost:5000", "--remove")
	if d, err := config.HostDirFromRoot(dir)("localhost:5000"); err != nil || d != filepath.Join(dir, "_default") {
		t.Errorf("after --remove of localhost:5000 containerd reads it from %q (%v), want _default", d, err)
	}
	containerdConfig(t, ctx, append(args, "--remove")...)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("after --remove of everything the hosts dir holds %v (%v), want nothing", entries, err)
	}
	got, err := hostsFor("docker.io")
	if err != nil || len(got) != 1 || got[0].Host != "registry-1.docker.io" {
		t.Errorf("after --remove containerd's hosts for docker.io = %+v (%v), want only registry-1.docker.io", got, err)
	}
}

// TestContainerdConfigPull has a real containerd follow the files containerd-config wrote:
// it pulls through the node, which takes the blobs from the origin; a second node joined to
// the first serves another containerd from its peer; and with the first node stopped, its
// containerd falls back straight to the upstream and still pulls.
func TestContainerdConfigPull(t *testing.T) {
	t.Parallel()
	harness.RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/ccfg", "v1", 2, 2<<20)
	fresh := o.push(t, "e2e/ccfg-fallback", "v1", 2, 1<<20)
	// containerd's fallback server: a counting proxy of its own, so a pull that went past
	// the node shows here.
	upstream := harness.StartCountingProxy(t, o.reg.URL)
	registry := o.reg.Addr + "=" + upstream.URL

	first, boot := o.startSeed(t, harness.NodeOptions{})
	second := o.join(t, boot, 1, harness.NodeOptions{})[0]
	dir1, dir2 := t.TempDir(), t.TempDir()
	containerdConfig(t, ctx, "--hosts-dir", dir1, "--mirror", first.URL, "--registry", registry)
	containerdConfig(t, ctx, "--hosts-dir", dir2, "--mirror", second.URL, "--registry", registry)

	// (1) Through the first node, which fetches every blob from the origin.
	ctr1 := harness.StartContainerd(t).Ctr()
	took := fetchWith(t, ctx, ctr1, dir1, im)
	t.Logf("containerd pulled %s through node 1 in %v", im.Ref(), took.Round(time.Millisecond))
	if reqs := upstream.Requests(); len(reqs) > 0 {
		t.Errorf("containerd went past node 1 to the upstream %d times, first: %s", len(reqs), reqs[0])
	}
	if got := originBlobBytes(t, ctx, o.proxy); got != im.BlobBytes() {
		t.Errorf("node 1 took %d blob bytes from the origin, want the image's %d: %s", got, im.BlobBytes(), blobTrafficSummary(o.proxy, im))
	}
	wantFetched(t, ctx, first, 0, im.BlobBytes())
	wantServed(t, ctx, first, im.BlobBytes())
	if err := first.WaitStored(ctx, 10*time.Second, im.Blobs()...); err != nil {
		t.Fatal(err)
	}

	// (3) Through the second node, from its peer: the origin sends no blob byte.
	o.proxy.Reset()
	ctr2 := harness.StartContainerd(t).Ctr()
	took = fetchWith(t, ctx, ctr2, dir2, im)
	t.Logf("containerd pulled %s through node 2 in %v", im.Ref(), took.Round(time.Millisecond))
	if reqs := upstream.Requests(); len(reqs) > 0 {
		t.Errorf("containerd went past node 2 to the upstream %d times, first: %s", len(reqs), reqs[0])
	}
	if sent := originBlobBytes(t, ctx, o.proxy); sent != 0 {
		t.Errorf("the origin sent %d blob bytes for an image node 1 held, want 0: %s", sent, blobTrafficSummary(o.proxy, im))
	}
	// The manifest by digest comes from the peer too, unless node 2 asked the origin for it.
	wantPeer := im.BlobBytes()
	if c := o.proxy.Manifest(im.Manifest.Digest.String()); c.Bytes == 0 {
		wantPeer += im.Manifest.Size
		t.Logf("node 2 took the manifest (%d bytes) from node 1 as well", im.Manifest.Size)
	}
	wantFetched(t, ctx, second, wantPeer, 0)
	wantServed(t, ctx, second, im.BlobBytes())

	// (2) Node 1 stopped: containerd falls back to the server at once and still pulls.
	if err := first.Close(); err != nil {
		t.Fatalf("stop node 1: %v", err)
	}
	o.proxy.Reset()
	took = fetchWith(t, ctx, ctr1, dir1, fresh)
	t.Logf("containerd pulled %s from the upstream with node 1 down in %v", fresh.Ref(), took.Round(time.Millisecond))
	for _, d := range fresh.Blobs() {
		if c := upstream.Blob(d.Digest); c.Bytes != d.Size {
			t.Errorf("with node 1 down the upstream served blob %s %+v, want its %d bytes", d.Digest, c, d.Size)
		}
	}
	if sent := originBlobBytes(t, ctx, o.proxy); sent != 0 {
		t.Errorf("with node 1 down a node still fetched %d blob bytes from the origin, want 0", sent)
	}
}

// TestContainerdConfigDefault writes only _default: containerd pulls an unlisted registry
// through the node and, with the node stopped, from the registry itself.
func TestContainerdConfigDefault(t *testing.T) {
	t.Parallel()
	harness.RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/ccfg-default", "v1", 2, 1<<20)
	fresh := o.push(t, "e2e/ccfg-default-fallback", "v1", 1, 1<<20)
	n := o.startNode(t, harness.NodeOptions{})
	dir := t.TempDir()
	out := containerdConfig(t, ctx, "--hosts-dir", dir, "--mirror", n.URL, "--default")
	if _, err := os.Stat(filepath.Join(dir, "_default", "hosts.toml")); err != nil {
		t.Fatalf("containerd-config --default printed %q and wrote no _default/hosts.toml: %v", out, err)
	}

	ctr := harness.StartContainerd(t).Ctr()
	fetchWith(t, ctx, ctr, dir, im)
	wantFetched(t, ctx, n, 0, im.BlobBytes())
	wantServed(t, ctx, n, im.BlobBytes())

	if err := n.Close(); err != nil {
		t.Fatalf("stop node: %v", err)
	}
	o.proxy.Reset()
	took := fetchWith(t, ctx, ctr, dir, fresh)
	t.Logf("containerd pulled %s from the registry itself with the node down in %v", fresh.Ref(), took.Round(time.Millisecond))
	if got := o.proxy.Requests(); len(got) > 0 {
		t.Errorf("with the node down something still went through the origin proxy: %v", got)
	}
}

// TestContainerdConfigRemove replaces an operator's hosts.toml (which sends containerd to
// a mirror of their own), runs twice, pulls through the node, and removes: the operator's
// file is back byte for byte, and containerd follows it again.
func TestContainerdConfigRemove(t *testing.T) {
	t.Parallel()
	harness.RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/ccfg-remove", "v1", 1, 1<<20)
	after := o.push(t, "e2e/ccfg-remove-after", "v1", 1, 1<<20)
	n := o.startNode(t, harness.NodeOptions{})

	// The operator's file sends containerd to a mirror of their own. (containerd 1.6 ignores
	// a hosts.toml without any [host] table, so it has one.)
	dir := t.TempDir()
	theirs := harness.StartCountingProxy(t, o.reg.URL)
	if err := harness.WriteHostsTOML(dir, o.reg.Addr, o.reg.URL, theirs.URL); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, o.reg.Addr, "hosts.toml")
	original, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	args := []string{"--hosts-dir", dir, "--mirror", n.URL, "--registry", o.reg.Addr + "=" + o.reg.URL}
	containerdConfig(t, ctx, args...)
	containerdConfig(t, ctx, args...)
	if backup, err := os.ReadFile(path + ".shoal-backup"); err != nil || !bytes.Equal(backup, original) {
		t.Fatalf("after two runs the backup holds %q (%v), want the operator's file %q", backup, err, original)
	}

	ctr := harness.StartContainerd(t).Ctr()
	fetchWith(t, ctx, ctr, dir, im)
	wantFetched(t, ctx, n, 0, im.BlobBytes())
	if reqs := theirs.Requests(); len(reqs) > 0 {
		t.Errorf("with shoal's hosts.toml containerd still used the operator's mirror %d times, first: %s", len(reqs), reqs[0])
	}

	out := containerdConfig(t, ctx, append(args, "--remove")...)
	restored, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(restored, original) {
		t.Fatalf("after --remove (%q) hosts.toml is %q (%v), want the operator's %q", out, restored, err, original)
	}
	if _, err := os.Lstat(path + ".shoal-backup"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after --remove the backup is still there (%v)", err)
	}

	fetchWith(t, ctx, ctr, dir, after)
	for _, d := range after.Blobs() {
		if c := theirs.Blob(d.Digest); c.Bytes != d.Size {
			t.Errorf("after --remove the operator's mirror served blob %s %+v, want its %d bytes", d.Digest, c, d.Size)
		}
	}
	wantFetched(t, ctx, n, 0, im.BlobBytes())
}
