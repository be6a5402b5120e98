package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestConcurrentColdBlob has 8 clients ask for the same cold 64 MiB blob at once: all get
// the right bytes and the origin sends the blob once.
func TestConcurrentColdBlob(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	o := startOrigin(t)
	im := o.push(t, "e2e/concurrent", "v1", 1, 64<<20)
	layer := im.Layers[0]
	n := o.startNode(t, harness.NodeOptions{})
	// A 256 MiB/s origin link keeps the download in flight (~0.25 s) while all clients arrive.
	o.proxy.SetRateLimit(256 << 20)

	const clients = 8
	results := make([]fetched, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			results[i], errs[i] = try(ctx, http.MethodGet, blobURL(n.URL, im.Repo, layer.Digest), nil)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d clients got %d MiB in %v", clients, layer.Size>>20, time.Since(began).Round(time.Millisecond))

	for i := range clients {
		if errs[i] != nil {
			t.Errorf("client %d: %v", i, errs[i])
			continue
		}
		if err := wantBlob(results[i], layer); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	got := o.proxy.Blob(layer.Digest)
	if got.Bytes != layer.Size {
		t.Errorf("origin served %d bytes of the blob in %d requests, want exactly one download of %d bytes",
			got.Bytes, got.Requests, layer.Size)
	}
	t.Logf("origin: %d requests, %d GETs, %d bytes for the blob", got.Requests, got.GETs, got.Bytes)
}
