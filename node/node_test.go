package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client keeps no idle connections, so none outlive a test.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// countingOrigin is an in-process registry that counts what it serves.
type countingOrigin struct {
	*httptest.Server
	blobGets  atomic.Int64
	blobBytes atomic.Int64
	manifests atomic.Int64
	requests  atomic.Int64
	down      atomic.Bool
}

func newOrigin(t *testing.T) *countingOrigin {
	t.Helper()
	o := &countingOrigin{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.down.Load() {
			// Behave like a host that dropped off the network.
			hj, ok := w.(http.Hijacker)
			if ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			return
		}
		o.requests.Add(1)
		cw := &countingWriter{ResponseWriter: w}
		reg.ServeHTTP(cw, r)
		switch {
		case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet:
			o.blobGets.Add(1)
			o.blobBytes.Add(cw.n)
		case strings.Contains(r.URL.Path, "/manifests/"):
			o.manifests.Add(1)
		}
	}))
	t.Cleanup(o.Close)
	return o
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (o *countingOrigin) host() string { return strings.TrimPrefix(o.URL, "http://") }

func (o *countingOrigin) push(t *testing.T, repoTag string) v1.Image {
	t.Helper()
	img, err := random.Image(256<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	o.upload(t, repoTag, func(ref name.Reference) error { return remote.Write(ref, img) })
	return img
}

// upload writes to repoTag at o, then zeroes o's counts.
func (o *countingOrigin) upload(t *testing.T, repoTag string, write func(name.Reference) error) {
	t.Helper()
	ref, err := name.ParseReference(o.host()+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(ref); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	o.requests.Store(0)
	o.blobGets.Store(0)
	o.blobBytes.Store(0)
	o.manifests.Store(0)
}

// startNode runs a node against the origin until the test ends.
func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.RegistryAddr = "127.0.0.1:0"
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n
}

func get(t *testing.T, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, body
}

// pullImage fetches an image's manifest by tag, then its config and layers, through the node,
// checking every digest; it returns the number of blob bytes received.
func pullImage(t *testing.T, n *Node, repo, tag, ns string) int64 {
	t.Helper()
	base := "http://" + n.RegistryAddr() + "/v2/" + repo
	q := ""
	if ns != "" {
		q = "?ns=" + ns
	}
	resp, body := get(t, base+"/manifests/"+tag+q, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest %s: %d %s", tag, resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Docker-Content-Digest"), fmt.Sprintf("sha256:%x", sha256.Sum256(body)); got != want {
		t.Fatalf("manifest Docker-Content-Digest = %s, want %s", got, want)
	}
	var m v1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		resp, blob := get(t, base+"/blobs/"+desc.Digest.String()+q, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET blob %s: %d %s", desc.Digest, resp.StatusCode, blob)
		}
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(blob)); got != desc.Digest.String() {
			t.Fatalf("blob %s has digest %s", desc.Digest, got)
		}
		total += int64(len(blob))
	}
	return total
}

func TestPullThroughThenFromCache(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL})

	pulled := pullImage(t, n, "team/app", "v1", "")
	if got := o.blobBytes.Load(); got != pulled {
		t.Errorf("origin blob bytes after first pull = %d, want %d", got, pulled)
	}
	before := o.blobGets.Load()
	pullImage(t, n, "team/app", "v1", o.host())
	if got := o.blobGets.Load(); got != before {
		t.Errorf("origin blob requests during the cached pull = %d, want 0", got-before)
	}
}

func TestConcurrentClientsOneOriginDownload(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL})
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	url := "http://" + n.RegistryAddr() + "/v2/team/app/blobs/" + d.String()

	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := get(t, url, nil)
			if resp.StatusCode != http.StatusOK || fmt.Sprintf("sha256:%x", sha256.Sum256(body)) != d.String() {
				t.Errorf("GET blob = %d, %d bytes with wrong digest", resp.StatusCode, len(body))
			}
		}()
	}
	wg.Wait()
	if got := o.blobGets.Load(); got != 1 {
		t.Errorf("origin blob GETs = %d, want 1", got)
	}
}

func TestStaleTagWhileOriginDown(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL, TagTTL: time.Nanosecond})
	pullImage(t, n, "team/app", "v1", "")

	o.down.Store(true)
	pullImage(t, n, "team/app", "v1", "")

	resp, body := get(t, "http://"+n.RegistryAddr()+"/v2/team/app/manifests/never-seen", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") {
		t.Errorf("GET unseen tag with origin down = %d %s, want 503 UNAVAILABLE", resp.StatusCode, body)
	}
}

func TestUnknownNamespaceMakesNoRequest(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := startNode(t, Config{Origin: o.URL})
	resp, body := get(t, "http://"+n.RegistryAddr()+"/v2/team/app/manifests/v1?ns=evil.example.com", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown ns = %d %s, want 404", resp.StatusCode, body)
	}
	if got := o.requests.Load(); got != 0 {
		t.Errorf("origin requests = %d, want 0", got)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL, CacheSize: 1 << 30})
	pulled := pullImage(t, n, "team/app", "v1", "")

	resp, body := get(t, "http://"+n.AdminAddr()+"/status", nil)
	var st Status
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/status = %d %s (%v)", resp.StatusCode, body, err)
	}
	if st.Cache.Bytes < pulled || st.Cache.CapacityBytes != 1<<30 || st.RegistryAddr != n.RegistryAddr() {
		t.Errorf("/status = %+v, want cache >= %d bytes of 1 GiB", st, pulled)
	}
	// A second pull comes from the cache: the origin saved exactly what it sent the first time.
	if again := pullImage(t, n, "team/app", "v1", ""); again != pulled {
		t.Fatalf("second pull got %d bytes, first %d", again, pulled)
	}
	fams, err := n.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	saved := -1.0
	for _, f := range fams {
		if f.GetName() == "shoal_origin_bytes_saved_total" {
			saved = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if saved != float64(pulled) {
		t.Errorf("shoal_origin_bytes_saved_total = %v after one cached pull of %d bytes", saved, pulled)
	}
	_, body = get(t, "http://"+n.AdminAddr()+"/metrics", nil)
	for _, want := range []string{`shoal_blob_served_bytes_total{source="download"}`, `shoal_blob_fetched_bytes_total{source="origin"}`, "shoal_store_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, _ := get(t, "http://"+n.AdminAddr()+path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("%s = %d, want 200", path, resp.StatusCode)
		}
	}
}

func TestUpstreamTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		origin    string
		upstreams map[string]string
		want      map[string]string
		def       string
		err       bool
	}{
		{name: "origin only", origin: "http://127.0.0.1:5000", want: map[string]string{"127.0.0.1:5000": "http://127.0.0.1:5000"}, def: "127.0.0.1:5000"},
		{name: "docker hub alias", upstreams: map[string]string{"docker.io": ""}, want: map[string]string{"docker.io": "https://registry-1.docker.io"}, def: "docker.io"},
		{name: "hub origin", origin: "https://registry-1.docker.io", want: map[string]string{"docker.io": "https://registry-1.docker.io"}, def: "docker.io"},
		{name: "host without url", upstreams: map[string]string{"ghcr.io": ""}, want: map[string]string{"ghcr.io": "https://ghcr.io"}},
		{name: "both", origin: "http://o:1", upstreams: map[string]string{"Quay.io": "https://quay.io/"}, want: map[string]string{"o:1": "http://o:1", "quay.io": "https://quay.io"}, def: "o:1"},
		{name: "none", err: true},
		{name: "bad scheme", origin: "ftp://x", err: true},
		{name: "path", origin: "http://x/v2", err: true},
		{name: "userinfo", upstreams: map[string]string{"x": "https://u:p@x"}, err: true},
		{name: "query", origin: "http://x?y=1", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, def, err := upstreamTable(tt.origin, tt.upstreams)
			if (err != nil) != tt.err {
				t.Fatalf("upstreamTable() error = %v, want error %v", err, tt.err)
			}
			if tt.err {
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || def != tt.def {
				t.Errorf("upstreamTable() = %v, %q; want %v, %q", got, def, tt.want, tt.def)
			}
		})
	}
}

// TestReadyzNeedsWritableCache: a node whose cache cannot take new content says so on /readyz.
func TestReadyzNeedsWritableCache(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	dir := t.TempDir()
	n := startNode(t, Config{Origin: o.URL, DataDir: dir})
	if resp, body := get(t, "http://"+n.AdminAddr()+"/readyz", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz = %d %s, want 200", resp.StatusCode, body)
	}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, "http://"+n.AdminAddr()+"/readyz", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "not writable") {
		t.Errorf("/readyz with the cache unwritable = %d %s, want 503", resp.StatusCode, body)
	}
	if resp, _ := get(t, "http://"+n.AdminAddr()+"/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d, want 200: the process is alive", resp.StatusCode)
	}
}
