package origin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waits records the pauses a client makes between attempts instead of sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// newClient returns a client whose backoff is recorded rather than slept.
func newClient(t *testing.T, opts Options) (*Client, *waits) {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	t.Cleanup(c.CloseIdleConnections)
	w := &waits{}
	c.wait = w.wait
	return c, w
}

// server is an httptest server that counts and records the requests it sees.
type server struct {
	*httptest.Server
	n    atomic.Int64
	mu   sync.Mutex
	reqs []*http.Request
}

func newServer(t *testing.T, h http.Handler) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.n.Add(1)
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(context.Background()))
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// host is the server's host:port, the registry key tests use.
func (s *server) host() string { return strings.TrimPrefix(s.URL, "http://") }

// count returns how many requests matched method and a path suffix ("" matches all).
func (s *server) count(method, pathSuffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if (method == "" || r.Method == method) && strings.HasSuffix(r.URL.Path, pathSuffix) {
			n++
		}
	}
	return n
}

func (s *server) last() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return nil
	}
	return s.reqs[len(s.reqs)-1]
}

// clientFor returns a client configured with s as the only upstream, under s.host().
func clientFor(t *testing.T, s *server) (*Client, *waits) {
	t.Helper()
	return newClient(t, Options{Upstreams: map[string]string{s.host(): s.URL}})
}

// ggcrRegistry starts go-containerregistry's in-process registry holding a random image
// at test/app:v1 and a random index at test/index:v1.
func ggcrRegistry(t *testing.T) (*server, v1.Image, v1.ImageIndex) {
	t.Helper()
	s := newServer(t, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	img, err := random.Image(3000, 2)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(1000, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ref, err := name.ParseReference(s.host() + "/test/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push image: %v", err)
	}
	ref, err = name.ParseReference(s.host() + "/test/index:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push index: %v", err)
	}
	return s, img, idx
}

// writeDockerConfig writes a docker config.json with the given "auths" and returns its path.
func writeDockerConfig(t *testing.T, auths map[string]map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

func TestNew(t *testing.T) {
	t.Parallel()
	goodConfig := writeDockerConfig(t, map[string]map[string]string{"example.com": {"auth": basicAuth("u", "p")}})
	badConfig := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badConfig, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"none", Options{}, false},
		{"http", Options{Upstreams: map[string]string{"127.0.0.1:5000": "http://127.0.0.1:5000"}}, false},
		{"https with slash", Options{Upstreams: map[string]string{"docker.io": "https://registry-1.docker.io/"}}, false},
		{"ipv6", Options{Upstreams: map[string]string{"[::1]:5000": "http://[::1]:5000"}}, false},
		{"config", Options{DockerConfig: goodConfig}, false},
		{"empty key", Options{Upstreams: map[string]string{"": "https://example.com"}}, true},
		{"no scheme", Options{Upstreams: map[string]string{"r": "example.com"}}, true},
		{"ftp", Options{Upstreams: map[string]string{"r": "ftp://example.com"}}, true},
		{"no host", Options{Upstreams: map[string]string{"r": "https://"}}, true},
		{"port only", Options{Upstreams: map[string]string{"r": "https://:443"}}, true},
		{"userinfo", Options{Upstreams: map[string]string{"r": "https://u:p@example.com"}}, true},
		{"query", Options{Upstreams: map[string]string{"r": "https://example.com?a=b"}}, true},
		{"empty query", Options{Upstreams: map[string]string{"r": "https://example.com?"}}, true},
		{"fragment", Options{Upstreams: map[string]string{"r": "https://example.com#x"}}, true},
		{"path", Options{Upstreams: map[string]string{"r": "https://example.com/v2"}}, true},
		{"unparsable", Options{Upstreams: map[string]string{"r": "http://[::1"}}, true},
		{"missing config", Options{DockerConfig: filepath.Join(t.TempDir(), "nope.json")}, true},
		{"malformed config", Options{DockerConfig: badConfig}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New(%+v) = %v, want error %v", tt.opts, err, tt.wantErr)
			}
			if c != nil {
				c.CloseIdleConnections()
			}
		})
	}
}

func TestNewDockerHubHost(t *testing.T) {
	t.Parallel()
	c, err := New(Options{Upstreams: map[string]string{"docker.io": "https://docker.io"}})
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	// go-containerregistry authenticates against index.docker.io for "docker.io";
	// requests must go to the same host for the token to be attached.
	if got, want := c.upstreams["docker.io"].host, "index.docker.io"; got != want {
		t.Errorf("host = %q, want %q", got, want)
	}
}

func TestUnknownRegistry(t *testing.T) {
	t.Parallel()
	s := newServer(t, http.NotFoundHandler())
	c, _ := clientFor(t, s)
	d := digest.FromString("x")
	ctx := t.Context()
	calls := []struct {
		name string
		call func(registry string) error
	}{
		{"GetManifest", func(r string) error { _, err := c.GetManifest(ctx, r, "test/app", "v1", nil); return err }},
		{"HeadManifest", func(r string) error { _, err := c.HeadManifest(ctx, r, "test/app", "v1", nil); return err }},
		{"GetBlob", func(r string) error {
			rc, _, err := c.GetBlob(ctx, r, "test/app", d, 0, -1)
			if rc != nil {
				rc.Close()
			}
			return err
		}},
		{"HeadBlob", func(r string) error { _, err := c.HeadBlob(ctx, r, "test/app", d); return err }},
	}
	for _, tt := range calls {
		// The upstream's URL and host name are not keys either.
		for _, registry := range []string{"docker.io", "", s.URL, "evil.example.com"} {
			if err := tt.call(registry); !errors.Is(err, ErrUnknownRegistry) {
				t.Errorf("%s(%q) = %v, want %v", tt.name, registry, err, ErrUnknownRegistry)
			}
		}
	}
	if n := s.n.Load(); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

func TestUserAgent(t *testing.T) {
	t.Parallel()
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
	}))
	c, _ := newClient(t, Options{Upstreams: map[string]string{"r": s.URL}, UserAgent: "shoal/test"})
	if _, err := c.HeadBlob(t.Context(), "r", "a", digest.FromString("x")); err != nil {
		t.Fatalf("HeadBlob = %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reqs {
		if got := r.UserAgent(); got != "shoal/test" {
			t.Errorf("%s %s User-Agent = %q, want %q", r.Method, r.URL.Path, got, "shoal/test")
		}
	}
}

func TestHTTPS(t *testing.T) {
	t.Parallel()
	blob := testBlob(100)
	d := digest.FromBytes(blob)
	s := httptest.NewTLSServer(rangeHandler(blob))
	t.Cleanup(s.Close)
	host := strings.TrimPrefix(s.URL, "https://")

	// go-containerregistry would guess plain http for a loopback address; the
	// configured https URL wins.
	c, _ := newClient(t, Options{Upstreams: map[string]string{"r": s.URL}, Transport: s.Client().Transport})
	got, err := readBlob(t.Context(), c, "r", "a", d)
	if err != nil || string(got) != string(blob) {
		t.Errorf("GetBlob(%s) over https = %d bytes, %v, want %d bytes", d, len(got), err, len(blob))
	}

	// A certificate the node does not trust is not worth retrying.
	c, w := newClient(t, Options{Upstreams: map[string]string{host: s.URL}})
	if _, err := readBlob(t.Context(), c, host, "a", d); !errors.Is(err, ErrUnavailable) {
		t.Errorf("GetBlob(%s) with an untrusted certificate = %v, want %v", d, err, ErrUnavailable)
	}
	if len(w.all()) != 0 {
		t.Errorf("waited %v, want no retry on a certificate error", w.all())
	}
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPinnedTransport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		upstream, in, want string
	}{
		{"http://reg.example:5000", "https://reg.example:5000/v2/", "http://reg.example:5000/v2/"},
		{"https://10.0.0.1", "http://10.0.0.1/v2/", "https://10.0.0.1/v2/"},
		{"https://reg.example", "https://reg.example/v2/", "https://reg.example/v2/"},
		// Other hosts (token realms, blob storage) keep their own scheme.
		{"https://reg.example", "http://auth.example/token", "http://auth.example/token"},
	}
	for _, tt := range tests {
		var got *http.Request
		inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			got = r
			return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
		})
		c, err := New(Options{Upstreams: map[string]string{"r": tt.upstream}, Transport: inner, UserAgent: "ua"})
		if err != nil {
			t.Fatalf("New = %v", err)
		}
		req, _ := http.NewRequest(http.MethodGet, tt.in, nil)
		if _, err := c.upstreams["r"].rt.RoundTrip(req); err != nil {
			t.Fatalf("RoundTrip(%s) = %v", tt.in, err)
		}
		if got.URL.String() != tt.want || got.UserAgent() != "ua" {
			t.Errorf("RoundTrip(%s) sent %s with User-Agent %q, want %s with %q", tt.in, got.URL, got.UserAgent(), tt.want, "ua")
		}
		if req.URL.String() != tt.in || req.UserAgent() != "" {
			t.Errorf("RoundTrip(%s) modified the caller's request", tt.in)
		}
	}
}
