package prefetcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/node/prefetch"
	"github.com/shoal-dev/shoal/registryapi"
)

// fakeManifests serves nothing and counts what it was asked.
type fakeManifests struct{ calls atomic.Int64 }

func (f *fakeManifests) Manifest(context.Context, registryapi.Repo, string, []string) (registryapi.Manifest, error) {
	f.calls.Add(1)
	return registryapi.Manifest{}, registryapi.ErrNotFound
}

// fakeStore is a cache and a downloader: a download takes until release is closed (or
// fails, for a digest in fail), and records how many run at once.
type fakeStore struct {
	mu       sync.Mutex
	held     map[digest.Digest]bool
	fail     map[digest.Digest]bool
	running  int
	most     int
	release  chan struct{}
	openings atomic.Int64
}

func (f *fakeStore) Touch(d digest.Digest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.held[d] {
		return errors.New("not held")
	}
	return nil
}

func (f *fakeStore) Stat(d digest.Digest) error { return f.Touch(d) }

func (f *fakeStore) Open(ctx context.Context, repo registryapi.Repo, d digest.Digest) (Download, error) {
	f.openings.Add(1)
	return &fakeDownload{f: f, d: d}, nil
}

func (f *fakeStore) Done(digest.Digest) (int64, bool) { return 0, false }

type fakeDownload struct {
	f *fakeStore
	d digest.Digest
}

func (d *fakeDownload) Size() int64  { return 1 }
func (d *fakeDownload) Close() error { return nil }
func (d *fakeDownload) Wait(ctx context.Context) error {
	f := d.f
	f.mu.Lock()
	f.running++
	f.most = max(f.most, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	f.mu.Lock()
	failed := f.fail[d.d]
	f.mu.Unlock()
	if failed {
		return errors.New("origin unavailable")
	}
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[d.d] = true
	return nil
}

func testPlan(n int) *plan {
	pl := &plan{repo: registryapi.Repo{Registry: "registry.example.com", Name: "team/app"}}
	for i := range n {
		pl.blobs = append(pl.blobs, &blob{digest: digest.FromString(fmt.Sprint(i)), size: 1})
		pl.total++
	}
	return pl
}

// TestRun fetches more blobs than run at once: never more than blobWorkers wait at a time,
// and every blob ends done, or cached when it was held before.
func TestRun(t *testing.T) {
	t.Parallel()
	pl := testPlan(3 * blobWorkers)
	f := &fakeStore{held: map[digest.Digest]bool{pl.blobs[0].digest: true}, release: make(chan struct{})}
	h := &Handler{opts: Options{Cache: f, Downloads: f}}
	done := make(chan error, 1)
	go func() { done <- h.run(t.Context(), pl) }()
	close(f.release)
	if err := <-done; err != nil {
		t.Fatalf("run = %v, want nil", err)
	}
	if f.most > blobWorkers || f.most == 0 {
		t.Errorf("downloads waited on at once = %d, want 1 to %d", f.most, blobWorkers)
	}
	if got := pl.blobs[0].state.Load(); got != blobCached {
		t.Errorf("held blob state = %d, want cached", got)
	}
	for i, b := range pl.blobs[1:] {
		if got := b.state.Load(); got != blobDone {
			t.Errorf("blob %d state = %d, want done", i+1, got)
		}
	}
	if got, want := f.openings.Load(), int64(len(pl.blobs)-1); got != want {
		t.Errorf("downloads opened = %d, want %d", got, want)
	}
}

// TestRunFails stops at the first failed blob and starts no more.
func TestRunFails(t *testing.T) {
	t.Parallel()
	pl := testPlan(10 * blobWorkers)
	// The failing blob fails at once; the others wait until the run gives up on them, so
	// the run cannot have opened every download before it saw the failure.
	f := &fakeStore{held: map[digest.Digest]bool{}, fail: map[digest.Digest]bool{pl.blobs[0].digest: true}, release: make(chan struct{})}
	h := &Handler{opts: Options{Cache: f, Downloads: f}}
	err := h.run(t.Context(), pl)
	if err == nil || !strings.Contains(err.Error(), pl.blobs[0].digest.String()) {
		t.Errorf("run = %v, want the failed blob's error", err)
	}
	if got := f.openings.Load(); got == int64(len(pl.blobs)) {
		t.Errorf("downloads opened = %d, want the run to stop before the last", got)
	}
}

func TestPrefetchBusy(t *testing.T) {
	t.Parallel()
	m := &fakeManifests{}
	h, err := New(Options{Manifests: m, Registries: []string{"registry.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	h.slots = make(chan struct{}, 1)
	h.slots <- struct{}{}
	body, _ := json.Marshal(prefetch.Request{Image: "registry.example.com/team/app:v1"})
	req := httptest.NewRequest(http.MethodPost, prefetch.Path, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "running") {
		t.Errorf("POST /prefetch with every slot taken = %d %q, want 429 with Retry-After", w.Code, w.Body)
	}
	if got := testutil.ToFloat64(h.results.WithLabelValues(resultBusy)); got != 1 {
		t.Errorf("busy count = %v, want 1", got)
	}
	if got := m.calls.Load(); got != 0 {
		t.Errorf("manifest requests = %d, want 0", got)
	}
}
