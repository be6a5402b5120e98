// Command demo shows what shoal does, end to end, with the real programs: the distribution
// registry as the origin (behind a proxy that counts what it sends), a generated image pushed
// with crane, a fleet of three shoal nodes joined on loopback, and containerd fetching the
// image through each node in turn, each time with a fresh containerd so nothing is reused
// client-side. It then reports where the bytes of each pull came from: the origin once, peers
// after that. Run it as root with `make demo`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
	case interrupted:
		fmt.Fprintln(os.Stderr, "demo: interrupted; everything was stopped")
		os.Exit(130)
	default:
		msg, rest, more := strings.Cut(err.Error(), "\n")
		if more && verbose {
			msg += "\n" + rest
		} else if more {
			msg += " (-v for details)"
		}
		fmt.Fprintln(os.Stderr, "demo:", msg)
		os.Exit(1)
	}
}

// verbose makes a failure print the whole error, with the tails of the programs' logs.
var verbose bool

// fleetSize is how many nodes the demo runs. Pull i goes through node i, so the first pull
// fills the fleet from the origin and the others take the image from peers.
const fleetSize = 3

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	layers := fs.Int("layers", 3, "layers in the generated image")
	layerSize := fs.String("layer-size", "8MiB", "random bytes per layer (B, KiB, MiB, GiB)")
	keep := fs.Bool("keep", false, "keep the temp dir with data, configs and logs")
	fs.BoolVar(&verbose, "v", false, "on failure, print the whole error with log tails")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: go run ./cmd/demo [flags]  (as root; make demo installs the tools first)")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return err
	}
	size, err := units.Parse(*layerSize)
	if err != nil || size < 1 || size > 1<<30 || *layers < 1 || *layers > 100 {
		return fmt.Errorf("want --layers from 1 to 100 and --layer-size from 1B to 1GiB, got %d and %q", *layers, *layerSize)
	}
	if err := checkTools(); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if *keep {
			fmt.Fprintf(stdout, "kept %s (data, configs and logs)\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	plural := map[bool]string{true: "s"}[fleetSize > 1]
	fmt.Fprintf(stdout, "shoal demo: a real registry as the origin, a fleet of %d shoal node%s, containerd pulling through each\n\n", fleetSize, plural)
	bin, err := step(ctx, stdout, "build shoal", 3*time.Minute, func(ctx context.Context) (string, error) {
		return buildShoal(ctx, dir)
	})
	if err != nil {
		return err
	}
	reg, err := step(ctx, stdout, "start the origin registry", 30*time.Second, func(ctx context.Context) (*harness.Registry, error) {
		return harness.RunRegistry(ctx, mkdir(dir, "registry"))
	})
	if err != nil {
		return err
	}
	defer reg.Close()
	proxy, err := harness.NewCountingProxy(reg.URL)
	if err != nil {
		return err
	}
	defer proxy.Close()
	fmt.Fprintf(stdout, "  origin: registry at %s, counted by a proxy at %s\n", reg.URL, proxy.URL)

	what := fmt.Sprintf("push demo/app:v1 with crane (%d random layers of %s)", *layers, units.Human(size))
	im, err := step(ctx, stdout, what, time.Minute, func(ctx context.Context) (harness.Image, error) {
		return harness.PushRandomImage(ctx, reg.Addr, "demo/app", "v1", *layers, size)
	})
	if err != nil {
		return err
	}

	var nodes []*harness.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	var boot string
	for i := range fleetSize {
		what := fmt.Sprintf("start shoal node %d (origin: the proxy)", i+1)
		args := []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/0"}
		if boot != "" {
			what = fmt.Sprintf("start shoal node %d (origin: the proxy; joins the fleet through node 1)", i+1)
			args = append(args, "--bootstrap", boot)
		}
		nodeDir := mkdir(dir, fmt.Sprintf("node-%d", i+1))
		n, err := step(ctx, stdout, what, 30*time.Second, func(ctx context.Context) (*harness.Node, error) {
			// The node mirrors the registry under its own name (containerd's ns) and sends
			// requests without ns there too, always through the counting proxy.
			return harness.RunNode(ctx, harness.NodeOptions{
				Binary:    bin,
				DataDir:   mkdir(nodeDir, "data"),
				LogPath:   filepath.Join(nodeDir, "node.log"),
				Origin:    proxy.URL,
				Upstreams: []string{reg.Addr + "=" + proxy.URL},
				Args:      args,
			})
		})
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		st, err := n.Status(ctx)
		if err != nil {
			return err
		}
		if boot == "" && len(st.Addrs) > 0 {
			boot = st.Addrs[0]
		}
		fmt.Fprintf(stdout, "  node %d: mirror at %s, metrics at %s/metrics, peer %s\n", i+1, n.URL, n.AdminURL, st.PeerID)
	}

	var pulls []pullResult
	for i, fleet := range []string{"nobody holds the image", "node 1 holds it", "nodes 1 and 2 hold it"} {
		via := nodes[i]
		what := fmt.Sprintf("pull %d with a fresh containerd through node %d (%s), verify", i+1, i+1, fleet)
		p, err := step(ctx, stdout, what, 2*time.Minute, func(ctx context.Context) (pullResult, error) {
			return pull(ctx, mkdir(dir, fmt.Sprintf("pull-%d", i+1)), im, proxy, nodes, via)
		})
		if err != nil {
			return err
		}
		pulls = append(pulls, p)
	}

	report(stdout, im, pulls)
	for i, p := range pulls[1:] {
		if p.originBlobs > 0 {
			return fmt.Errorf("pull %d: the origin sent %s of blobs, want none once a fleet member holds the image", i+2, units.Human(p.originBlobs))
		}
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			return fmt.Errorf("shoal node did not shut down cleanly: %w", err)
		}
	}
	return nil
}

// pullResult is where the bytes of one pull came from.
type pullResult struct {
	duration                     time.Duration
	originBlobs, originManifests int64   // response bytes the origin sent
	cache, download              float64 // blob bytes the nodes served: from disk, or while downloading
	fromOrigin, fromPeers        float64 // blob bytes the nodes fetched, by source
	verified                     int     // digests checked in containerd's content store
}

// pull starts a containerd in dir, fetches im through the node via and verifies every
// digest containerd stored.
func pull(ctx context.Context, dir string, im harness.Image, proxy *harness.CountingProxy, nodes []*harness.Node, via *harness.Node) (pullResult, error) {
	hosts := filepath.Join(dir, "hosts")
	if err := harness.WriteHostsTOML(hosts, im.Registry, proxy.URL, via.URL); err != nil {
		return pullResult{}, err
	}
	ctd, err := harness.RunContainerd(ctx, mkdir(dir, "containerd"))
	if err != nil {
		return pullResult{}, err
	}
	defer ctd.Close()
	ctr := ctd.Ctr()

	before, err := served(ctx, nodes)
	if err != nil {
		return pullResult{}, err
	}
	proxy.Reset()
	start := time.Now()
	if err := ctr.Fetch(ctx, im.Ref(), hosts); err != nil {
		return pullResult{}, err
	}
	res := pullResult{duration: time.Since(start)}
	if err := ctr.VerifyContent(ctx, im.Contents()); err != nil {
		return pullResult{}, fmt.Errorf("containerd content after the pull: %w", err)
	}
	res.verified = len(im.Contents())
	res.originBlobs = proxy.Total(harness.KindBlob).Bytes
	res.originManifests = proxy.Total(harness.KindManifest).Bytes

	// A node counts a blob once its response is done, which may be a moment after ctr has
	// read the last byte.
	want := float64(im.BlobBytes())
	deadline := time.Now().Add(2 * time.Second)
	for {
		after, err := served(ctx, nodes)
		if err != nil {
			return pullResult{}, err
		}
		res.cache = after["cache"] - before["cache"]
		res.download = after["download"] - before["download"]
		res.fromOrigin = after["fetched origin"] - before["fetched origin"]
		res.fromPeers = after["fetched peer"] - before["fetched peer"]
		total := res.cache + res.download
		if total >= want {
			return res, nil
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the nodes served %s of the image's %s of blobs: containerd went around them",
				units.Human(int64(total)), units.Human(im.BlobBytes()))
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// served sums over the nodes shoal_blob_served_bytes_total by source ("cache", "download")
// and shoal_blob_fetched_bytes_total by source ("fetched origin", "fetched peer"); a source a
// node does not report counts as 0.
func served(ctx context.Context, nodes []*harness.Node) (map[string]float64, error) {
	sum := map[string]float64{}
	for _, n := range nodes {
		m, err := n.Metrics(ctx)
		if err != nil {
			return nil, err
		}
		for _, src := range []string{"cache", "download"} {
			sum[src] += m.Sum("shoal_blob_served_bytes_total", harness.Labels{"source": src})
		}
		for _, src := range []string{"origin", "peer"} {
			sum["fetched "+src] += m.Sum("shoal_blob_fetched_bytes_total", harness.Labels{"source": src})
		}
	}
	return sum, nil
}

func report(w io.Writer, im harness.Image, pulls []pullResult) {
	fmt.Fprintf(w, "\nimage %s: %s (manifest, config and %d layers, %d digests)\n\n",
		im.Ref(), units.Human(im.TotalSize()), len(im.Layers), len(im.Contents()))
	row := func(label string, cell func(p pullResult) string) {
		fmt.Fprintf(w, "  %-30s", label)
		for _, p := range pulls {
			fmt.Fprintf(w, "%14s", cell(p))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  %-30s", "")
	for i := range pulls {
		fmt.Fprintf(w, "%14s", fmt.Sprintf("pull %d", i+1))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-30s", "")
	for i := range pulls {
		fmt.Fprintf(w, "%14s", fmt.Sprintf("via node %d", i+1))
	}
	fmt.Fprintln(w)
	row("duration of ctr content fetch", func(p pullResult) string { return p.duration.Round(time.Millisecond).String() })
	row("origin sent: blobs", func(p pullResult) string { return units.Human(p.originBlobs) })
	row("origin sent: manifests", func(p pullResult) string { return units.Human(p.originManifests) })
	row("node fetched: from the origin", func(p pullResult) string { return units.Human(int64(p.fromOrigin)) })
	row("node fetched: from peers", func(p pullResult) string { return units.Human(int64(p.fromPeers)) })
	row("node served: from its cache", func(p pullResult) string { return units.Human(int64(p.cache)) })
	row("node served: as it downloaded", func(p pullResult) string { return units.Human(int64(p.download)) })
	row("containerd: digests verified", func(p pullResult) string { return fmt.Sprintf("%d of %d", p.verified, len(im.Contents())) })

	fmt.Fprintln(w, "  (origin, nodes and containerd share this machine, so durations are close; the point is")
	fmt.Fprintln(w, "  which bytes crossed the origin's link)")

	var originTotal int64
	var peerTotal float64
	for _, p := range pulls {
		originTotal += p.originBlobs
		peerTotal += p.fromPeers
	}
	fmt.Fprintf(w, "\n%d pulls through %d nodes: the origin sent %s of blobs (%.2fx the image's %s), peers %s\n",
		len(pulls), len(pulls), units.Human(originTotal), float64(originTotal)/float64(max(im.BlobBytes(), 1)), units.Human(im.BlobBytes()), units.Human(int64(peerTotal)))
}

// step runs fn with its own timeout and prints what it did and how long it took.
func step[T any](ctx context.Context, w io.Writer, what string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	fmt.Fprintf(w, "- %s ... ", what)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	v, err := fn(ctx)
	switch {
	case err == nil:
		fmt.Fprintf(w, "%v\n", time.Since(start).Round(10*time.Millisecond))
	case errors.Is(ctx.Err(), context.Canceled):
		fmt.Fprintln(w, "interrupted")
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		fmt.Fprintln(w, "failed")
		err = fmt.Errorf("%s: not done within %v: %w", what, timeout, err)
	default:
		fmt.Fprintln(w, "failed")
		err = fmt.Errorf("%s: %w", what, err)
	}
	return v, err
}

// checkTools names everything missing in one line, with what to do about it.
func checkTools() error {
	if os.Geteuid() != 0 {
		return errors.New("containerd needs root: run the demo as root (sudo make demo)")
	}
	var missing []string
	for _, name := range []string{"go", "registry", "crane", "containerd", "ctr"} {
		if _, err := harness.ToolPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not installed: %s (run scripts/install-tools.sh, or make demo)", strings.Join(missing, ", "))
	}
	return nil
}

// buildShoal builds cmd/shoal into dir, or returns $SHOAL_BIN when it is set. Unlike
// harness.ShoalBinary it stops the build when ctx ends.
func buildShoal(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("SHOAL_BIN"); p != "" {
		return filepath.Abs(p)
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "shoal")
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-o", out, "./cmd/shoal")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/shoal in %s: %w\n%s", root, err, msg)
	}
	return out, nil
}

// mkdir makes dir/name (the parent exists; errors surface when the directory is used).
func mkdir(dir, name string) string {
	p := filepath.Join(dir, name)
	_ = os.MkdirAll(p, 0o755) // a failure shows where the directory is used
	return p
}
