package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
	"github.com/shoal-dev/shoal/registryapi/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newMirror builds a real mirror (a store in a temporary directory, the downloader running,
// the origin client) against h, and returns it with h's registry key.
func newMirror(t *testing.T, h http.Handler) (*Mirror, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	key, err := registryapi.NormalizeNamespace(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(origin.Options{Upstreams: map[string]string{key: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	dl := swarm.New(swarm.Options{Store: st, Origin: o})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("downloader Run: %v", err)
		}
		o.CloseIdleConnections()
		st.Close()
	})
	m, err := New(Options{Store: st, Downloads: dl, Origin: o, TagTTL: time.Second, TagMaxStale: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return m, key
}

func newRegistry() http.Handler { return registry.New(registry.Logger(log.New(io.Discard, "", 0))) }

// TestConformance runs registryapi's source suite against the real mirror, with an
// in-process origin and no fleet.
func TestConformance(t *testing.T) {
	t.Parallel()
	m, key := newMirror(t, newRegistry())
	repo := registryapi.Repo{Registry: key, Name: "team/app"}
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(key+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	content, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	body, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	mt, _ := img.MediaType()
	want := registryapi.Manifest{Digest: digest.Digest(d.String()), MediaType: string(mt), Body: body}
	// Twice each: first from the origin, then from what the mirror kept.
	for _, pass := range []string{"origin", "cache"} {
		t.Run(pass, func(t *testing.T) {
			t.Run("blobs", func(t *testing.T) { sourcetest.BlobSource(t, m, repo, content) })
			t.Run("manifests", func(t *testing.T) { sourcetest.ManifestSource(t, m, repo, "v1", want) })
		})
	}
}

// TestCancelledCallerLeavesFlight: a client that leaves while the origin is slow to answer
// a tag does not wait for the shared request, which goes on for the others.
func TestCancelledCallerLeavesFlight(t *testing.T) {
	t.Parallel()
	reg := newRegistry()
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	m, key := newMirror(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/slow") {
			select {
			case held <- struct{}{}:
			default:
			}
			<-release
		}
		reg.ServeHTTP(w, r)
	}))
	repo := registryapi.Repo{Registry: key, Name: "team/app"}
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := m.Manifest(context.Background(), repo, "slow", nil)
		first <- err
	}()
	<-held
	late := make(chan error, 1)
	go func() {
		_, err := m.Manifest(ctx, repo, "slow", nil)
		late <- err
	}()
	cancel()
	select {
	case err := <-late:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Manifest with a cancelled context = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled caller waited for the shared origin request")
	}
	close(release)
	if err := <-first; !errors.Is(err, registryapi.ErrNotFound) {
		t.Errorf("Manifest(slow) for the caller that stayed = %v, want the origin's answer (not found)", err)
	}
}

func TestEdgeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   error
		want error
	}{
		{origin.ErrNotFound, registryapi.ErrNotFound},
		{origin.ErrUnknownRegistry, registryapi.ErrNotFound},
		{origin.ErrDenied, registryapi.ErrDenied},
		{origin.ErrTooManyRequests, registryapi.ErrTooManyRequests},
		{origin.ErrUnavailable, registryapi.ErrUnavailable},
		{origin.ErrDigestMismatch, registryapi.ErrUnavailable},
		{origin.ErrTooLarge, registryapi.ErrTooLarge},
		{fmt.Errorf("wrapped: %w", origin.ErrNotFound), registryapi.ErrNotFound},
	}
	for _, tt := range tests {
		if got := EdgeError(tt.in); !errors.Is(got, tt.want) || !errors.Is(got, tt.in) {
			t.Errorf("EdgeError(%v) = %v, want it to wrap %v and the original", tt.in, got, tt.want)
		}
	}
	other := errors.New("disk full")
	if got := EdgeError(other); got != other {
		t.Errorf("EdgeError(%v) = %v, want it unchanged", other, got)
	}
}
