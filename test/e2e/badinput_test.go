package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestBadRequests sends malformed and unsupported requests to a running node over real
// HTTP. Each gets a 4xx with an OCI error body (no body for HEAD); none reaches the origin
// unless it is a well-formed read.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/bad", "v1", 1, 64<<10)
	layer := im.Layers[0]
	// A registry the node is not configured for: if an ns ever turned into an outbound
	// request, this proxy would see the connection.
	trap := harness.StartCountingProxy(t, o.reg.URL)
	n := o.startNode(t, harness.NodeOptions{})

	// Warm the blob, so that the Range cases below are served from the cache.
	if err := wantBlob(do(t, ctx, http.MethodGet, blobURL(n.URL, im.Repo, layer.Digest), nil), layer); err != nil {
		t.Fatal(err)
	}
	o.proxy.Reset()

	unknown := digest.FromString("never pushed")
	repo := im.Repo
	cases := []struct {
		name    string
		method  string
		path    string // raw, sent as is
		header  http.Header
		body    string
		status  []int // any of these; default 400 or 404
		offline bool  // the origin must see nothing
	}{
		{name: "digest too short", path: "/v2/" + repo + "/blobs/sha256:abc", status: []int{400, 404}, offline: true},
		{name: "digest not hex", path: "/v2/" + repo + "/blobs/sha256:" + strings.Repeat("z", 64), status: []int{400, 404}, offline: true},
		{name: "digest upper-case hex", path: "/v2/" + repo + "/blobs/sha256:" + strings.ToUpper(layer.Digest.Encoded()), status: []int{400, 404}, offline: true},
		{name: "digest unknown algorithm", path: "/v2/" + repo + "/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: []int{400, 404}, offline: true},
		{name: "digest without algorithm", path: "/v2/" + repo + "/blobs/" + layer.Digest.Encoded(), status: []int{400, 404}, offline: true},
		{name: "digest empty", path: "/v2/" + repo + "/blobs/", status: []int{400, 404, 405}, offline: true},
		{name: "manifest bad digest", path: "/v2/" + repo + "/manifests/sha256:baddigeststring", status: []int{400, 404}, offline: true},
		{name: "tag too long", path: "/v2/" + repo + "/manifests/" + strings.Repeat("t", 129), status: []int{400, 404}, offline: true},
		{name: "tag bad characters", path: "/v2/" + repo + "/manifests/-bad%25tag", status: []int{400, 404}, offline: true},
		{name: "name upper case", path: "/v2/E2E/Bad/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "name dot-dot", path: "/v2/e2e/../etc/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "name encoded slash", path: "/v2/e2e%2Fbad/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "name double slash", path: "/v2/e2e//bad/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "name too long", path: "/v2/" + strings.Repeat("a/", 130) + "b/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "unknown endpoint", path: "/v2/" + repo + "/things/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "not v2", path: "/v1/" + repo + "/blobs/" + layer.Digest.String(), status: []int{400, 404}, offline: true},
		{name: "unknown ns", path: "/v2/" + repo + "/blobs/" + unknown.String() + "?ns=" + url.QueryEscape(trap.Addr), status: []int{404}, offline: true},
		{name: "unknown ns for cached blob", path: "/v2/" + repo + "/blobs/" + layer.Digest.String() + "?ns=" + url.QueryEscape(trap.Addr), status: []int{404}, offline: true},
		{name: "unknown ns manifest", path: "/v2/" + repo + "/manifests/" + im.Tag + "?ns=" + url.QueryEscape(trap.Addr), header: acceptManifests, status: []int{404}, offline: true},
		{name: "unknown ns hostname", path: "/v2/" + repo + "/manifests/" + im.Tag + "?ns=localhost.invalid", header: acceptManifests, status: []int{404}, offline: true},
		{name: "ns with path", path: "/v2/" + repo + "/manifests/" + im.Tag + "?ns=" + url.QueryEscape(o.reg.Addr+"/x"), header: acceptManifests, status: []int{400, 404}, offline: true},
		{name: "ns with userinfo", path: "/v2/" + repo + "/manifests/" + im.Tag + "?ns=" + url.QueryEscape("user@"+trap.Addr), header: acceptManifests, status: []int{400, 404}, offline: true},
		{name: "repeated ns", path: "/v2/" + repo + "/manifests/" + im.Tag + "?ns=" + url.QueryEscape(o.reg.Addr) + "&ns=" + url.QueryEscape(trap.Addr), header: acceptManifests, status: []int{400, 404}, offline: true},
		{name: "upload POST", method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", status: []int{401, 403, 404, 405}, offline: true},
		{name: "upload PUT", method: http.MethodPut, path: "/v2/" + repo + "/blobs/uploads/x?digest=" + layer.Digest.String(), body: "x", status: []int{401, 403, 404, 405}, offline: true},
		{name: "upload PATCH", method: http.MethodPatch, path: "/v2/" + repo + "/blobs/uploads/x", body: "x", status: []int{401, 403, 404, 405}, offline: true},
		{name: "manifest PUT", method: http.MethodPut, path: "/v2/" + repo + "/manifests/v2", header: http.Header{"Content-Type": {im.Manifest.MediaType}}, body: string(im.ManifestBytes), status: []int{401, 403, 404, 405}, offline: true},
		{name: "manifest DELETE", method: http.MethodDelete, path: "/v2/" + repo + "/manifests/" + im.Manifest.Digest.String(), status: []int{401, 403, 404, 405}, offline: true},
		{name: "blob DELETE", method: http.MethodDelete, path: "/v2/" + repo + "/blobs/" + layer.Digest.String(), status: []int{401, 403, 404, 405}, offline: true},
		{name: "blob HEAD bad digest", method: http.MethodHead, path: "/v2/" + repo + "/blobs/sha256:abc", status: []int{400, 404}, offline: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodGet
			}
			o.proxy.Reset()
			before := trap.Connections()
			f := doRaw(t, ctx, method, n.URL, c.path, c.header, c.body)
			if !oneOf(f.status, c.status) {
				t.Errorf("%s %s: %s; want one of %v", method, c.path, f, c.status)
			}
			if method != http.MethodHead {
				if err := ociError(f); err != nil {
					t.Errorf("%s %s: %d: %v", method, c.path, f.status, err)
				}
			}
			if c.offline {
				if reqs := o.proxy.Requests(); len(reqs) > 0 {
					t.Errorf("%s %s reached the origin: %v", method, c.path, reqs)
				}
			}
			if got := trap.Connections() - before; got > 0 {
				t.Errorf("%s %s: the node opened %d connections to the registry named in ns, which it is not configured for", method, c.path, got)
			}
		})
	}

	t.Run("headers", func(t *testing.T) {
		for _, c := range []struct {
			method, url string
			d           harness.Descriptor
		}{
			{http.MethodHead, blobURL(n.URL, im.Repo, layer.Digest), layer},
			{http.MethodGet, blobURL(n.URL, im.Repo, layer.Digest), layer},
			{http.MethodHead, manifestURL(n.URL, im.Repo, im.Tag), im.Manifest},
			{http.MethodGet, manifestURL(n.URL, im.Repo, im.Tag), im.Manifest},
			{http.MethodHead, manifestURL(n.URL, im.Repo, im.Manifest.Digest.String()), im.Manifest},
		} {
			f := do(t, ctx, c.method, c.url, acceptManifests)
			wantN := c.d.Size
			if c.method == http.MethodHead {
				wantN = 0
			}
			if f.status != http.StatusOK || f.n != wantN {
				t.Errorf("%s %s: %s; want 200 with %d body bytes", c.method, c.url, f, wantN)
			}
			if got := f.header.Get("Content-Length"); got != fmt.Sprint(c.d.Size) {
				t.Errorf("%s %s: Content-Length %q, want %d", c.method, c.url, got, c.d.Size)
			}
			if got := f.header.Get("Docker-Content-Digest"); got != c.d.Digest.String() {
				t.Errorf("%s %s: Docker-Content-Digest %q, want %s", c.method, c.url, got, c.d.Digest)
			}
			if c.d == im.Manifest {
				if got := f.header.Get("Content-Type"); got != c.d.MediaType {
					t.Errorf("%s %s: Content-Type %q, want %s", c.method, c.url, got, c.d.MediaType)
				}
			}
		}
		f := do(t, ctx, http.MethodGet, n.URL+"/v2/", nil)
		if f.status != http.StatusOK || f.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("GET /v2/: %s, Docker-Distribution-API-Version %q; want 200, registry/2.0", f, f.header.Get("Docker-Distribution-API-Version"))
		}
	})

	t.Run("range", func(t *testing.T) {
		u := blobURL(n.URL, im.Repo, layer.Digest)
		whole := do(t, ctx, http.MethodGet, u, nil)
		if err := wantBlob(whole, layer); err != nil {
			t.Fatal(err)
		}
		size := layer.Size
		for _, c := range []struct {
			rng        string
			status     int
			start, end int64 // the bytes of a 206, end exclusive
		}{
			{"bytes=0-99", 206, 0, 100},
			{"bytes=100-", 206, 100, size},
			{"bytes=-100", 206, size - 100, size},
			{fmt.Sprintf("bytes=%d-%d", size-10, size+1000), 206, size - 10, size},
			{fmt.Sprintf("bytes=%d-", size), 416, 0, 0},
			{fmt.Sprintf("bytes=%d-%d", size+10, size+20), 416, 0, 0},
		} {
			o.proxy.Reset()
			f := doRange(t, ctx, u, c.rng)
			if f.status != c.status {
				t.Errorf("Range %s: %s; want %d", c.rng, f, c.status)
				continue
			}
			if c.status == 206 {
				want := blobSlice(t, ctx, o, im, layer, c.start, c.end)
				if !bytes.Equal(f.full, want) {
					t.Errorf("Range %s: 206 with %d bytes that are not bytes [%d,%d) of the blob", c.rng, len(f.full), c.start, c.end)
				}
				if cr, want := f.header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", c.start, c.end-1, size); cr != want {
					t.Errorf("Range %s: Content-Range %q, want %q", c.rng, cr, want)
				}
			} else if cr, want := f.header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); cr != want {
				t.Errorf("Range %s: 416 with Content-Range %q, want %q", c.rng, cr, want)
			}
			if traffic := originBlobTraffic(o.proxy); len(traffic) > 0 {
				t.Errorf("Range %s on a cached blob reached the origin: %v", c.rng, traffic)
			}
		}
		// Malformed Range headers are ignored (RFC 9110 14.2) or refused; never an error
		// status other than 416, never wrong bytes.
		for _, rng := range []string{"bytes=abc", "bytes=10-5", "bits=0-10", "bytes=--1", "bytes=99999999999999999999-"} {
			f := doRange(t, ctx, u, rng)
			switch f.status {
			case 200:
				if digest.FromBytes(f.full) != layer.Digest {
					t.Errorf("Range %q: 200 with wrong bytes", rng)
				}
			case 416:
			case 206:
				t.Errorf("Range %q: 206 for a malformed range (Content-Range %q)", rng, f.header.Get("Content-Range"))
			default:
				t.Errorf("Range %q: %d, want 200 (header ignored) or 416", rng, f.status)
			}
		}
	})
}

// rangeFetched is a response whose whole body is kept.
type rangeFetched struct {
	status int
	header http.Header
	full   []byte
}

func (f rangeFetched) String() string {
	return fmt.Sprintf("status %d, %d bytes, Content-Range %q", f.status, len(f.full), f.header.Get("Content-Range"))
}

func doRange(t *testing.T, ctx context.Context, u, rng string) rangeFetched {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", rng)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s Range %s: %v", u, rng, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("GET %s Range %s: read body: %v", u, rng, err)
	}
	return rangeFetched{status: resp.StatusCode, header: resp.Header, full: b.Bytes()}
}

// blobSlice reads bytes [start,end) of a blob straight from the registry.
func blobSlice(t *testing.T, ctx context.Context, o origin, im harness.Image, d harness.Descriptor, start, end int64) []byte {
	t.Helper()
	f := doRange(t, ctx, blobURL(o.reg.URL, im.Repo, d.Digest), fmt.Sprintf("bytes=%d-%d", start, end-1))
	if f.status != http.StatusPartialContent {
		t.Fatalf("registry: GET Range bytes=%d-%d: %s", start, end-1, f)
	}
	return f.full
}

// doRaw sends a request whose path and query go on the wire exactly as given.
func doRaw(t *testing.T, ctx context.Context, method, base, rawPath string, h http.Header, body string) fetched {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(rawPath, "?")
	u.Opaque = "//" + u.Host + path
	u.RawQuery = query
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	var req *http.Request
	if rd != nil {
		req, err = http.NewRequestWithContext(ctx, method, u.String(), rd)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, u.String(), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	req.URL = u
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	defer resp.Body.Close()
	f := fetched{status: resp.StatusCode, header: resp.Header}
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", method, rawPath, err)
	}
	f.body = b.Bytes()
	f.n = int64(b.Len())
	f.digest = digest.FromBytes(f.body)
	return f
}

func oneOf(status int, want []int) bool {
	for _, w := range want {
		if status == w {
			return true
		}
	}
	return false
}
