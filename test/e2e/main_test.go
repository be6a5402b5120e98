// Package e2e tests a single shoal node end to end, with real processes: the distribution
// registry as origin (behind a counting proxy), containerd and ctr as the client, crane to
// push images, and the OCI conformance suite.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// tools are the third-party programs the suite runs.
var tools = []string{"registry", "crane", "containerd", "ctr", "conformance"}

func TestMain(m *testing.M) {
	var missing []string
	for _, name := range tools {
		if _, err := harness.ToolPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: not installed: %s (run scripts/install-tools.sh)\n", strings.Join(missing, ", "))
		if harness.InCI() {
			fmt.Fprintln(os.Stderr, "e2e: CI=true, so a missing tool is a failure")
			os.Exit(1)
		}
	}
	start := time.Now()
	if _, err := harness.ShoalBinary(); err != nil {
		// Every test that starts a node fails with this error; the others still run.
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: built shoal in %v\n", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	harness.RemoveBuilds()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: leaked goroutines: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// origin is a real registry and the counting proxy in front of it. Images are pushed to
// the registry directly, so the proxy counts only what the node pulls.
type origin struct {
	reg   *harness.Registry
	proxy *harness.CountingProxy
}

func startOrigin(t *testing.T) origin {
	t.Helper()
	harness.RequireTools(t, "registry", "crane")
	reg := harness.StartRegistry(t)
	return origin{reg: reg, proxy: harness.StartCountingProxy(t, reg.URL)}
}

// push pushes a random image to the origin's registry.
func (o origin) push(t *testing.T, repo, tag string, layers int, layerSize int64) harness.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	im, err := harness.PushRandomImage(ctx, o.reg.Addr, repo, tag, layers, layerSize)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// startNode runs a node whose default upstream is the origin (through its proxy) and that
// also mirrors the registry's own host:port, as containerd names it in ns.
func (o origin) startNode(t *testing.T, opts harness.NodeOptions) *harness.Node {
	t.Helper()
	opts.Origin = o.proxy.URL
	opts.Upstreams = append(opts.Upstreams, o.reg.Addr+"="+o.proxy.URL)
	return harness.StartNode(t, opts)
}

// runShoal runs the built `shoal ARGS...` and returns its stdout, its stderr and its exit
// code; it fails t if shoal could not run at all.
func runShoal(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, harness.BuildShoal(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("shoal %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// fetched is the outcome of one GET or HEAD.
type fetched struct {
	status  int
	header  http.Header
	n       int64         // body bytes read
	digest  digest.Digest // of the body read
	body    []byte        // the first 64 KiB of the body
	readErr error         // from reading the body
}

func (f fetched) String() string {
	s := fmt.Sprintf("status %d, %d body bytes hashing to %s", f.status, f.n, f.digest)
	if f.readErr != nil {
		s += fmt.Sprintf(", read error %v", f.readErr)
	}
	if f.status >= 400 && len(f.body) > 0 {
		s += fmt.Sprintf(", body %q", truncate(string(f.body), 300))
	}
	return s
}

var client = &http.Client{
	Timeout: 2 * time.Minute,
	// A redirect is an answer to judge, not to follow.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request and streams the body into a digest. Transport errors fail the test.
func do(t *testing.T, ctx context.Context, method, url string, h http.Header) fetched {
	t.Helper()
	f, err := try(ctx, method, url, h)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func try(ctx context.Context, method, url string, h http.Header) (fetched, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return fetched{}, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return fetched{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	f := fetched{status: resp.StatusCode, header: resp.Header}
	dg := digest.SHA256.Digester()
	head := &prefixWriter{max: 64 << 10}
	f.n, f.readErr = io.Copy(io.MultiWriter(dg.Hash(), head), resp.Body)
	f.digest = dg.Digest()
	f.body = head.b
	return f, nil
}

type prefixWriter struct {
	b   []byte
	max int
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if room := p.max - len(p.b); room > 0 {
		p.b = append(p.b, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func blobURL(base, repo string, d digest.Digest) string {
	return base + "/v2/" + repo + "/blobs/" + d.String()
}

func manifestURL(base, repo, ref string) string {
	return base + "/v2/" + repo + "/manifests/" + ref
}

var acceptManifests = http.Header{"Accept": {harness.ManifestAccept}}

// wantBlob checks that f is a clean 200 carrying exactly d.
func wantBlob(f fetched, d harness.Descriptor) error {
	if f.status != http.StatusOK || f.readErr != nil || f.n != d.Size || f.digest != d.Digest {
		return fmt.Errorf("got %s; want 200 with %d bytes hashing to %s", f, d.Size, d.Digest)
	}
	return nil
}

// ociError checks that f carries an OCI error body: JSON {"errors":[{"code":..}]} with a
// code on every error.
func ociError(f fetched) error {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(f.body, &body); err != nil {
		return fmt.Errorf("body %q is not an OCI error: %w", truncate(string(f.body), 200), err)
	}
	if len(body.Errors) == 0 {
		return fmt.Errorf("body %q has no errors", truncate(string(f.body), 200))
	}
	for _, e := range body.Errors {
		if e.Code == "" {
			return fmt.Errorf("body %q has an error without a code", truncate(string(f.body), 200))
		}
	}
	if ct := f.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("error body has Content-Type %q, want application/json", ct)
	}
	return nil
}

// errorCodes returns the codes of an OCI error body, for messages.
func errorCodes(f fetched) []string {
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(f.body, &body) != nil {
		return nil // not an OCI error body: no codes to name
	}
	var codes []string
	for _, e := range body.Errors {
		codes = append(codes, e.Code)
	}
	return codes
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// served reads shoal_blob_served_bytes_total per source.
func served(t *testing.T, ctx context.Context, n *harness.Node) (cache, download float64) {
	t.Helper()
	m, err := n.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const name = "shoal_blob_served_bytes_total"
	if !m.Has(name) {
		t.Errorf("metric %s is missing from /metrics", name)
	}
	return m.Sum(name, harness.Labels{"source": "cache"}), m.Sum(name, harness.Labels{"source": "download"})
}

// originBlobTraffic lists the blob requests the origin answered with a body.
func originBlobTraffic(p *harness.CountingProxy) []string {
	var out []string
	for _, r := range p.Requests() {
		if r.Kind == harness.KindBlob && r.Bytes > 0 {
			out = append(out, r.String())
		}
	}
	return out
}
