package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/prefetch"
)

// prefetchAnswer is a /prefetch response: its status and its lines, each decoded strictly.
type prefetchAnswer struct {
	status int
	header http.Header
	lines  []prefetch.Progress
	raw    string
}

func (a prefetchAnswer) last() prefetch.Progress {
	if len(a.lines) == 0 {
		return prefetch.Progress{}
	}
	return a.lines[len(a.lines)-1]
}

// postPrefetch sends body to the node's /prefetch with the content type given and reads
// the whole answer.
func postPrefetch(t *testing.T, ctx context.Context, n *Node, contentType, body string) prefetchAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.AdminAddr()+"/prefetch", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST /prefetch: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST /prefetch: read body: %v", err)
	}
	a := prefetchAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var p prefetch.Progress
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("POST /prefetch: line %q does not decode: %v", sc.Text(), err)
		}
		a.lines = append(a.lines, p)
	}
	return a
}

func prefetchBody(image string, platforms ...string) string {
	b, _ := json.Marshal(prefetch.Request{Image: image, Platforms: platforms})
	return string(b)
}

// wantStored fails t unless the node holds every blob of img.
func wantStored(t *testing.T, n *Node, img v1.Image) {
	t.Helper()
	for _, d := range imageBlobs(t, img) {
		if _, err := n.store.Stat(digest.Digest(d.Digest.String())); err != nil {
			t.Errorf("store.Stat(%s) = %v, want the blob held", d.Digest, err)
		}
	}
}

func imageBlobs(t *testing.T, img v1.Image) []v1.Descriptor {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return append([]v1.Descriptor{m.Config}, m.Layers...)
}

func blobBytes(t *testing.T, imgs ...v1.Image) int64 {
	t.Helper()
	var total int64
	for _, img := range imgs {
		for _, d := range imageBlobs(t, img) {
			total += d.Size
		}
	}
	return total
}

// checkProgress checks the lines of a successful prefetch: running lines, then one ok;
// counts that never go backwards and end complete.
func checkProgress(t *testing.T, a prefetchAnswer, wantBlobs int, wantBytes int64) {
	t.Helper()
	if a.status != http.StatusOK || len(a.lines) < 2 {
		t.Fatalf("POST /prefetch = %d with %d lines %q, want 200 with progress lines", a.status, len(a.lines), a.raw)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type = %q, want application/x-ndjson", ct)
	}
	var prev prefetch.Progress
	for i, p := range a.lines {
		want := prefetch.StatusRunning
		if i == len(a.lines)-1 {
			want = prefetch.StatusOK
		}
		if p.Status != want || p.Error != "" {
			t.Errorf("line %d = %+v, want status %s", i+1, p, want)
		}
		if p.BlobsTotal != wantBlobs || p.BytesTotal != wantBytes || p.Digest == "" || p.Image == "" {
			t.Errorf("line %d = %+v, want %d blobs of %d bytes in all, with image and digest", i+1, p, wantBlobs, wantBytes)
		}
		if p.BytesDone < prev.BytesDone || p.BlobsDone < prev.BlobsDone || p.Seconds < prev.Seconds {
			t.Errorf("line %d = %+v went back from %+v", i+1, p, prev)
		}
		prev = p
	}
	if last := a.last(); last.BlobsDone != wantBlobs || last.BytesDone != wantBytes {
		t.Errorf("last line = %+v, want all %d blobs and %d bytes done", last, wantBlobs, wantBytes)
	}
}

func TestPrefetchImage(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL})
	blobs, size := len(imageBlobs(t, img)), blobBytes(t, img)

	a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(o.host()+"/team/app:v1"))
	checkProgress(t, a, blobs, size)
	if got, want := a.last().Image, o.host()+"/team/app:v1"; got != want {
		t.Errorf("image = %q, want %q", got, want)
	}
	if d, _ := img.Digest(); a.last().Digest.String() != d.String() || a.last().Manifests != 1 {
		t.Errorf("last line = %+v, want digest %s and 1 manifest", a.last(), d)
	}
	wantStored(t, n, img)
	if got := o.blobBytes.Load(); got != size {
		t.Errorf("origin blob bytes = %d, want the image's %d once", got, size)
	}

	// A pull now costs the origin no blob, and a second prefetch finds everything cached.
	before := o.blobGets.Load()
	pullImage(t, n, "team/app", "v1", o.host())
	a = postPrefetch(t, t.Context(), n, "application/json; charset=utf-8", prefetchBody(o.host()+"/team/app:v1"))
	checkProgress(t, a, blobs, size)
	if a.last().BytesCached != size {
		t.Errorf("second prefetch: bytesCached = %d, want %d", a.last().BytesCached, size)
	}
	if got := o.blobGets.Load(); got != before {
		t.Errorf("origin blob GETs after the prefetch = %d, want 0", got-before)
	}

	resp, body := get(t, "http://"+n.AdminAddr()+"/metrics", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `shoal_prefetch_requests_total{result="ok"} 2`) {
		t.Errorf("/metrics lacks shoal_prefetch_requests_total{result=\"ok\"} 2")
	}
}

// TestPrefetchByDigest prefetches by digest and with Docker's tag@digest form.
func TestPrefetchByDigest(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL})
	d, _ := img.Digest()
	a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(o.host()+"/team/app:ignored@"+d.String()))
	checkProgress(t, a, len(imageBlobs(t, img)), blobBytes(t, img))
	wantStored(t, n, img)
}

// pushIndex pushes an index of two random images, linux/amd64 and linux/arm64/v8.
func pushIndex(t *testing.T, o *countingOrigin, repoTag string) (amd64, arm64 v1.Image) {
	t.Helper()
	var err error
	if amd64, err = random.Image(128<<10, 2); err != nil {
		t.Fatal(err)
	}
	if arm64, err = random.Image(128<<10, 2); err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	o.upload(t, repoTag, func(ref name.Reference) error { return remote.WriteIndex(ref, idx) })
	return amd64, arm64
}

func TestPrefetchIndex(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	amd64, arm64 := pushIndex(t, o, "team/multi:v1")
	ref := o.host() + "/team/multi:v1"

	t.Run("all platforms", func(t *testing.T) {
		n := startNode(t, Config{Origin: o.URL})
		a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(ref))
		checkProgress(t, a, len(imageBlobs(t, amd64))+len(imageBlobs(t, arm64)), blobBytes(t, amd64, arm64))
		if a.last().Manifests != 2 {
			t.Errorf("manifests = %d, want 2", a.last().Manifests)
		}
		wantStored(t, n, amd64)
		wantStored(t, n, arm64)
	})
	t.Run("one platform", func(t *testing.T) {
		n := startNode(t, Config{Origin: o.URL})
		// arm64 without a variant matches the index's arm64/v8.
		a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(ref, "linux/arm64"))
		checkProgress(t, a, len(imageBlobs(t, arm64)), blobBytes(t, arm64))
		wantStored(t, n, arm64)
		m, _ := amd64.Manifest()
		if _, err := n.store.Stat(digest.Digest(m.Layers[0].Digest.String())); err == nil {
			t.Errorf("a linux/arm64 prefetch fetched a layer of the linux/amd64 image")
		}
	})
	t.Run("no such platform", func(t *testing.T) {
		n := startNode(t, Config{Origin: o.URL})
		a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(ref, "linux/s390x"))
		if a.status != http.StatusNotFound || a.last().Status != prefetch.StatusError || !strings.Contains(a.last().Error, "linux/s390x") {
			t.Errorf("POST /prefetch for a platform the index lacks = %d %q, want 404 naming it", a.status, a.raw)
		}
	})
}

func TestPrefetchRefused(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := startNode(t, Config{Origin: o.URL})
	good := prefetchBody(o.host() + "/team/app:v1")
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		want        string // in the error message
	}{
		{"not json", "application/json", "image=x", http.StatusBadRequest, "bad body"},
		{"unknown field", "application/json", `{"image":"` + o.host() + `/team/app:v1","force":true}`, http.StatusBadRequest, "unknown field"},
		{"trailing data", "application/json", good + `{}`, http.StatusBadRequest, "after the JSON"},
		{"wrong type", "application/json", `{"image":["x"]}`, http.StatusBadRequest, "bad body"},
		{"empty body", "application/json", "", http.StatusBadRequest, "bad body"},
		{"no image", "application/json", `{}`, http.StatusBadRequest, "no image"},
		{"huge", "application/json", `{"image":"` + strings.Repeat("a", 20<<10) + `"}`, http.StatusRequestEntityTooLarge, "exceeds"},
		{"no content type", "", good, http.StatusUnsupportedMediaType, "Content-Type"},
		{"form content type", "application/x-www-form-urlencoded", good, http.StatusUnsupportedMediaType, "Content-Type"},
		{"bad reference", "application/json", prefetchBody(o.host() + "/Team/App:v1"), http.StatusBadRequest, "invalid image reference"},
		{"bad tag", "application/json", prefetchBody(o.host() + "/team/app:-v1"), http.StatusBadRequest, "bad tag"},
		{"bad digest", "application/json", prefetchBody(o.host() + "/team/app@sha256:beef"), http.StatusBadRequest, "bad digest"},
		{"unconfigured registry", "application/json", prefetchBody("evil.example.com/team/app:v1"), http.StatusForbidden, "evil.example.com is not mirrored"},
		{"unconfigured port", "application/json", prefetchBody("127.0.0.1:1/team/app:v1"), http.StatusForbidden, "not mirrored"},
		{"docker hub short form", "application/json", prefetchBody("nginx:1.27"), http.StatusForbidden, "docker.io is not mirrored"},
		{"bad platform", "application/json", prefetchBody(o.host()+"/team/app:v1", "linux"), http.StatusBadRequest, "invalid platform"},
		{"too many platforms", "application/json", prefetchBody(o.host()+"/team/app:v1", strings.Split(strings.Repeat("linux/amd64,", 17), ",")[:17]...), http.StatusBadRequest, "platforms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := postPrefetch(t, t.Context(), n, tt.contentType, tt.body)
			if a.status != tt.status || len(a.lines) != 1 || a.last().Status != prefetch.StatusError || !strings.Contains(a.last().Error, tt.want) {
				t.Errorf("POST /prefetch %.60q = %d %q, want %d with an error containing %q", tt.body, a.status, a.raw, tt.status, tt.want)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("error Content-Type = %q, want application/json", ct)
			}
		})
	}
	resp, _ := get(t, "http://"+n.AdminAddr()+"/prefetch", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /prefetch = %d, want 405", resp.StatusCode)
	}
	if got := o.requests.Load(); got != 0 {
		t.Errorf("origin requests = %d, want none for refused prefetches", got)
	}
	_, body := get(t, "http://"+n.AdminAddr()+"/metrics", nil)
	if want := fmt.Sprintf(`shoal_prefetch_requests_total{result="invalid"} %d`, len(tests)); !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

func TestPrefetchUnknownImage(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := startNode(t, Config{Origin: o.URL})
	a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(o.host()+"/team/none:v1"))
	if a.status != http.StatusNotFound || a.last().Status != prefetch.StatusError || a.last().Error == "" {
		t.Errorf("POST /prefetch of an unknown image = %d %q, want 404 with an error", a.status, a.raw)
	}
}

func TestPrefetchImageTooLargeForCache(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	n := startNode(t, Config{Origin: o.URL, CacheSize: 64 << 10})
	a := postPrefetch(t, t.Context(), n, "application/json", prefetchBody(o.host()+"/team/app:v1"))
	if a.status != http.StatusUnprocessableEntity || !strings.Contains(a.last().Error, "cache") {
		t.Errorf("POST /prefetch of an image larger than the cache = %d %q, want 422", a.status, a.raw)
	}
	if got := o.blobGets.Load(); got != 0 {
		t.Errorf("origin blob GETs = %d, want 0", got)
	}
}

// TestPrefetchClientLeaves drops the client while the origin holds the blobs back: the
// prefetch ends as canceled, and the downloads it started still complete afterwards.
func TestPrefetchClientLeaves(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	gated, held, open := gatedServer(t, o.Config.Handler)
	n := startNode(t, Config{Origin: gated.URL})
	ref := strings.TrimPrefix(gated.URL, "http://") + "/team/app:v1"

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.AdminAddr()+"/prefetch", strings.NewReader(prefetchBody(ref)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var first prefetch.Progress
	if err := json.NewDecoder(resp.Body).Decode(&first); err != nil || first.Status != prefetch.StatusRunning {
		t.Fatalf("first progress line = %+v, %v; want running", first, err)
	}
	eventually(t, "blob requests to reach the origin", func() bool { return held.Load() > 0 })
	cancel()
	resp.Body.Close()

	eventually(t, "the prefetch to count as canceled", func() bool {
		_, body := get(t, "http://"+n.AdminAddr()+"/metrics", nil)
		return strings.Contains(string(body), `shoal_prefetch_requests_total{result="canceled"} 1`)
	})
	open()
	// The downloads started before the client left finish on their own; the rest are
	// fetched by the next pull.
	pullImage(t, n, "team/app", "v1", "")
	wantStored(t, n, img)
}

// gatedServer serves h but holds every blob GET until open is called (or the request ends).
func gatedServer(t *testing.T, h http.Handler) (srv *httptest.Server, held *atomic.Int64, open func()) {
	t.Helper()
	var gateOpen atomic.Bool
	gate := make(chan struct{})
	open = func() {
		if gateOpen.CompareAndSwap(false, true) {
			close(gate)
		}
	}
	held = new(atomic.Int64)
	srv = holdBlobs(t, h, func(r *http.Request) bool {
		held.Add(1)
		select {
		case <-gate:
			return true
		case <-r.Context().Done():
			return false
		}
	})
	t.Cleanup(open)
	return srv, held, open
}

// holdBlobs serves h, each blob GET first waiting in hold, which reports false when the
// request ended meanwhile.
func holdBlobs(t *testing.T, h http.Handler, hold func(r *http.Request) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && !hold(r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPrefetchNodeStops stops a node in the middle of a prefetch: the client gets a last
// line saying it failed, and the node stops promptly.
func TestPrefetchNodeStops(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.push(t, "team/app:v1")
	gated, held, _ := gatedServer(t, o.Config.Handler)
	n, err := New(Config{Origin: gated.URL, RegistryAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- n.Run(ctx) }()

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+n.AdminAddr()+"/prefetch", strings.NewReader(prefetchBody(strings.TrimPrefix(gated.URL, "http://")+"/team/app:v1")))
	req.Header.Set("Content-Type", "application/json")
	eventually(t, "the node to serve", func() bool {
		select {
		case <-n.ready:
			return true
		default:
			return false
		}
	})
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var line prefetch.Progress
	if err := dec.Decode(&line); err != nil || line.Status != prefetch.StatusRunning {
		t.Fatalf("first progress line = %+v, %v; want running", line, err)
	}
	eventually(t, "blob requests to reach the origin", func() bool { return held.Load() > 0 })
	began := time.Now()
	cancel()
	for line.Status == prefetch.StatusRunning {
		if err := dec.Decode(&line); err != nil {
			t.Fatalf("progress after the node stopped: %v, want a last line", err)
		}
	}
	if line.Status != prefetch.StatusError || line.Error == "" {
		t.Errorf("last line = %+v, want an error", line)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the node did not stop within 15s of a prefetch")
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the node took %v to stop during a prefetch", took)
	}
}
