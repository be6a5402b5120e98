package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestTamperedOrigin has the origin flip a byte of a layer. The node must never complete a
// clean 200 of wrong bytes, and must not keep them: once the origin is honest again, the
// blob is fetched afresh and served correctly, which shows no copy of the bad bytes was
// committed.
func TestTamperedOrigin(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/tamper", "v1", 1, 6<<20) // more than one 4 MiB chunk
	layer := im.Layers[0]
	n := o.startNode(t, harness.NodeOptions{})
	u := blobURL(n.URL, im.Repo, layer.Digest)

	o.proxy.SetTamper(layer.Digest)
	for i := range 2 {
		start := time.Now()
		f, err := try(ctx, http.MethodGet, u, nil)
		switch {
		case err != nil:
			t.Logf("tampered GET %d: transport error after %v: %v", i, time.Since(start), err)
		case f.status == http.StatusOK && f.readErr == nil && f.n == layer.Size:
			t.Errorf("tampered GET %d: clean 200 with all %d bytes (digest %s, want %s); the client cannot tell it got wrong data",
				i, f.n, f.digest, layer.Digest)
		case f.status == http.StatusOK && f.readErr == nil:
			t.Errorf("tampered GET %d: 200 ending cleanly after %d of %d bytes; want the transfer aborted (an error reading the body)",
				i, f.n, layer.Size)
		case f.status == http.StatusOK:
			t.Logf("tampered GET %d: 200 aborted after %d bytes: %v (good)", i, f.n, f.readErr)
		case f.status >= 500 || f.status == http.StatusNotFound:
			t.Logf("tampered GET %d: %s (good)", i, f)
			if err := ociError(f); err != nil {
				t.Errorf("tampered GET %d: %v", i, err)
			}
		default:
			t.Errorf("tampered GET %d: %s; want an aborted 200, a 5xx or a 404", i, f)
		}
	}
	if got := o.proxy.Blob(layer.Digest); got.GETs == 0 {
		t.Fatalf("the node never asked the origin for the tampered blob: %+v", got)
	}
	o.proxy.SetTamper()
	o.proxy.Reset()
	f := do(t, ctx, http.MethodGet, u, nil)
	if err := wantBlob(f, layer); err != nil {
		t.Errorf("GET after tampering stopped: %v", err)
	}
	if got := o.proxy.Blob(layer.Digest); got.Bytes < layer.Size {
		t.Errorf("GET after tampering stopped: origin served %+v, want a fresh fetch of all %d bytes", got, layer.Size)
	}
	// And now it is cached.
	o.proxy.Reset()
	if err := wantBlob(do(t, ctx, http.MethodGet, u, nil), layer); err != nil {
		t.Errorf("cached GET: %v", err)
	}
	if traffic := originBlobTraffic(o.proxy); len(traffic) > 0 {
		t.Errorf("cached GET reached the origin: %v", traffic)
	}
}

// TestOriginDown takes the origin down after a first pull: cached blobs and manifests are
// still served, a tag resolved before is served stale, and what was never fetched fails
// fast with an OCI error.
func TestOriginDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/down", "v1", 2, 1<<20)
	const tagTTL = time.Second
	n := o.startNode(t, harness.NodeOptions{Args: []string{"--tag-ttl", tagTTL.String()}})
	cached, unseen := im.Layers[0], im.Layers[1]

	tagURL := manifestURL(n.URL, im.Repo, im.Tag)
	if f := do(t, ctx, http.MethodGet, tagURL, acceptManifests); f.status != http.StatusOK || f.digest != im.Manifest.Digest {
		t.Fatalf("GET manifest by tag: %s; want 200 with %s", f, im.Manifest.Digest)
	}
	if err := wantBlob(do(t, ctx, http.MethodGet, manifestURL(n.URL, im.Repo, im.Manifest.Digest.String()), acceptManifests), im.Manifest); err != nil {
		t.Fatalf("GET manifest by digest: %v", err)
	}
	for _, d := range []harness.Descriptor{im.Config, cached} {
		if err := wantBlob(do(t, ctx, http.MethodGet, blobURL(n.URL, im.Repo, d.Digest), nil), d); err != nil {
			t.Fatalf("GET blob %s: %v", d.Digest, err)
		}
	}

	if err := o.proxy.SetDown(true); err != nil {
		t.Fatal(err)
	}
	// Let the tag resolution expire, so that the node has to ask the origin and fall back.
	time.Sleep(tagTTL + 500*time.Millisecond)

	t.Run("cached blob", func(t *testing.T) {
		if err := wantBlob(do(t, ctx, http.MethodGet, blobURL(n.URL, im.Repo, cached.Digest), nil), cached); err != nil {
			t.Error(err)
		}
	})
	t.Run("cached manifest by digest", func(t *testing.T) {
		f := do(t, ctx, http.MethodGet, manifestURL(n.URL, im.Repo, im.Manifest.Digest.String()), acceptManifests)
		if err := wantBlob(f, im.Manifest); err != nil {
			t.Error(err)
		}
	})
	t.Run("stale tag", func(t *testing.T) {
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			f := do(t, ctx, method, tagURL, acceptManifests)
			got := f.header.Get("Docker-Content-Digest")
			if f.status != http.StatusOK || got != im.Manifest.Digest.String() {
				t.Errorf("%s manifest by tag with the origin down: %s, Docker-Content-Digest %q; want 200 with %s",
					method, f, got, im.Manifest.Digest)
			}
			if method == http.MethodGet && f.digest != im.Manifest.Digest {
				t.Errorf("GET manifest by tag with the origin down: body hashes to %s, want %s", f.digest, im.Manifest.Digest)
			}
		}
	})
	for _, c := range []struct {
		name, url string
		header    http.Header
	}{
		{"never-seen blob", blobURL(n.URL, im.Repo, unseen.Digest), nil},
		{"never-seen tag", manifestURL(n.URL, im.Repo, "never-pushed"), acceptManifests},
		{"never-seen repo", manifestURL(n.URL, "e2e/other", im.Tag), acceptManifests},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			f, err := try(rctx, http.MethodGet, c.url, c.header)
			took := time.Since(start)
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("GET %s with the origin down hung for %v", c.url, took)
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.status != http.StatusServiceUnavailable && f.status != http.StatusNotFound &&
				f.status != http.StatusBadGateway && f.status != http.StatusGatewayTimeout {
				t.Errorf("GET with the origin down: %s; want 503 (or 404/502/504)", f)
			}
			if err := ociError(f); err != nil {
				t.Errorf("GET with the origin down: %v", err)
			}
			t.Logf("answered %d %v in %v", f.status, errorCodes(f), took.Round(time.Millisecond))
		})
	}

	if err := o.proxy.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if err := wantBlob(do(t, ctx, http.MethodGet, blobURL(n.URL, im.Repo, unseen.Digest), nil), unseen); err != nil {
		t.Errorf("GET never-seen blob once the origin is back: %v", err)
	}
}
