package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// tokenRegistry is a registry behind the token auth flow: /v2/ and unauthenticated
// requests get a Bearer challenge, /token trades Basic credentials for a token scoped to
// one repository.
type tokenRegistry struct {
	user, pass string // required at /token; "" allows anonymous tokens
	blob       []byte
	// storage, when set, is the base URL blob GETs are redirected to; "self" redirects
	// to /storage/ on the registry itself, which wants the token too.
	storage string

	pings, tokens atomic.Int64
	// reject answers this many blob requests with a bare 401 (no challenge), as if
	// the registry had revoked the token without saying how to get another.
	reject atomic.Int64

	mu    sync.Mutex
	valid map[string]string // token -> scope it grants
	seq   int
}

func newTokenRegistry(t *testing.T, user, pass string, blob []byte, storage string) (*tokenRegistry, *server) {
	t.Helper()
	tr := &tokenRegistry{user: user, pass: pass, blob: blob, storage: storage, valid: map[string]string{}}
	return tr, newServer(t, tr)
}

// expire revokes every token handed out.
func (tr *tokenRegistry) expire() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	clear(tr.valid)
}

func (tr *tokenRegistry) challenge(w http.ResponseWriter, r *http.Request, scope string) {
	v := fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, r.Host)
	if scope != "" {
		v += fmt.Sprintf(`,scope="%s"`, scope)
	}
	w.Header().Set("WWW-Authenticate", v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
}

func (tr *tokenRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v2/":
		tr.pings.Add(1)
		tr.challenge(w, r, "")
	case r.URL.Path == "/token":
		tr.tokens.Add(1)
		user, pass, ok := r.BasicAuth()
		if tr.user != "" && (!ok || user != tr.user || pass != tr.pass) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		tr.mu.Lock()
		tr.seq++
		tok := fmt.Sprintf("token-%d", tr.seq)
		tr.valid[tok] = r.URL.Query().Get("scope")
		tr.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
	case strings.HasPrefix(r.URL.Path, "/storage/"):
		tr.mu.Lock()
		_, ok := tr.valid[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		tr.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Write(tr.blob)
	case strings.HasPrefix(r.URL.Path, "/v2/"):
		repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
		scope := "repository:" + repo + ":pull"
		tr.mu.Lock()
		granted, ok := tr.valid[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		tr.mu.Unlock()
		if !ok || granted != scope {
			tr.challenge(w, r, scope)
			return
		}
		if tr.reject.Add(-1) >= 0 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch tr.storage {
		case "":
		case "self":
			http.Redirect(w, r, "/storage"+r.URL.Path, http.StatusFound)
			return
		default:
			http.Redirect(w, r, tr.storage+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(tr.blob)))
		w.Write(tr.blob)
	default:
		http.NotFound(w, r)
	}
}

// readBlob fetches the whole blob and returns its bytes.
func readBlob(ctx context.Context, c *Client, registry, repo string, d digest.Digest) ([]byte, error) {
	rc, _, err := c.GetBlob(ctx, registry, repo, d, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestTokenAuth(t *testing.T) {
	t.Parallel()
	blob := testBlob(300)
	d := digest.FromBytes(blob)
	tests := []struct {
		name string
		// auths builds the config's "auths" for the registry at host; nil: no config.
		auths   func(host string) map[string]map[string]string
		wantErr error
	}{
		{"auth field", func(h string) map[string]map[string]string {
			return map[string]map[string]string{h: {"auth": basicAuth("alice", "s3cret")}}
		}, nil},
		{"username and password", func(h string) map[string]map[string]string {
			return map[string]map[string]string{h: {"username": "alice", "password": "s3cret"}}
		}, nil},
		{"keyed by URL", func(h string) map[string]map[string]string {
			return map[string]map[string]string{"http://" + h: {"auth": basicAuth("alice", "s3cret")}}
		}, nil},
		{"wrong password", func(h string) map[string]map[string]string {
			return map[string]map[string]string{h: {"auth": basicAuth("alice", "nope")}}
		}, ErrDenied},
		{"other registry's credentials", func(h string) map[string]map[string]string {
			return map[string]map[string]string{"example.com": {"auth": basicAuth("alice", "s3cret")}}
		}, ErrDenied},
		{"anonymous", nil, ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, s := newTokenRegistry(t, "alice", "s3cret", blob, "")
			opts := Options{Upstreams: map[string]string{s.host(): s.URL}}
			if tt.auths != nil {
				opts.DockerConfig = writeDockerConfig(t, tt.auths(s.host()))
			}
			c, w := newClient(t, opts)
			for range 2 {
				got, err := readBlob(t.Context(), c, s.host(), "team/app", d)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GetBlob(%s) = %v, want %v", d, err, tt.wantErr)
				}
				if err == nil && string(got) != string(blob) {
					t.Fatalf("GetBlob(%s) = %d bytes, want %d", d, len(got), len(blob))
				}
			}
			if tt.wantErr == nil {
				// One dance serves every later request for the repository.
				if p, n := tr.pings.Load(), tr.tokens.Load(); p != 1 || n != 1 {
					t.Errorf("after two GetBlob: %d pings, %d token requests, want 1 and 1", p, n)
				}
			}
			if len(w.all()) != 0 {
				t.Errorf("waited %v, want no retries", w.all())
			}
		})
	}
}

func TestTokenAuthScopes(t *testing.T) {
	t.Parallel()
	blob := testBlob(10)
	d := digest.FromBytes(blob)
	tr, s := newTokenRegistry(t, "", "", blob, "")
	c, _ := clientFor(t, s)
	for _, repo := range []string{"a", "b/c", "a"} {
		if _, err := readBlob(t.Context(), c, s.host(), repo, d); err != nil {
			t.Fatalf("GetBlob(%s in %s) = %v", d, repo, err)
		}
	}
	// Tokens are scoped to one repository: two repositories, two tokens.
	if n := tr.tokens.Load(); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
	if n := c.auth.len(); n != 2 {
		t.Errorf("cached transports = %d, want 2", n)
	}
}

func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	blob := testBlob(10)
	d := digest.FromBytes(blob)
	tests := []struct {
		name                 string
		mutate               func(tr *tokenRegistry)
		wantPings, wantToken int64
		wantErr              error
	}{
		// The registry challenges again: the transport fetches a new token by itself.
		{"expired", func(tr *tokenRegistry) { tr.expire() }, 1, 2, nil},
		// A bare 401: the client rebuilds the transport once.
		{"rejected once", func(tr *tokenRegistry) { tr.reject.Store(1) }, 2, 2, nil},
		// Still rejected after the rebuild: denied, with no further rebuilds.
		{"rejected always", func(tr *tokenRegistry) { tr.reject.Store(100) }, 2, 2, ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, s := newTokenRegistry(t, "", "", blob, "")
			c, _ := clientFor(t, s)
			if _, err := readBlob(t.Context(), c, s.host(), "a", d); err != nil {
				t.Fatalf("GetBlob(%s) = %v", d, err)
			}
			tt.mutate(tr)
			if _, err := readBlob(t.Context(), c, s.host(), "a", d); !errors.Is(err, tt.wantErr) {
				t.Fatalf("GetBlob(%s) after %s = %v, want %v", d, tt.name, err, tt.wantErr)
			}
			if p, n := tr.pings.Load(), tr.tokens.Load(); p != tt.wantPings || n != tt.wantToken {
				t.Errorf("%d pings, %d token requests, want %d and %d", p, n, tt.wantPings, tt.wantToken)
			}
		})
	}
}

func TestCredentialsReload(t *testing.T) {
	t.Parallel()
	blob := testBlob(10)
	d := digest.FromBytes(blob)
	_, s := newTokenRegistry(t, "alice", "new-password", blob, "")
	path := writeDockerConfig(t, map[string]map[string]string{s.host(): {"auth": basicAuth("alice", "old")}})
	c, _ := newClient(t, Options{Upstreams: map[string]string{s.host(): s.URL}, DockerConfig: path})
	if _, err := readBlob(t.Context(), c, s.host(), "a", d); !errors.Is(err, ErrDenied) {
		t.Fatalf("GetBlob(%s) with the old password = %v, want %v", d, err, ErrDenied)
	}
	b, err := json.Marshal(map[string]any{"auths": map[string]any{s.host(): map[string]string{"auth": basicAuth("alice", "new-password")}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readBlob(t.Context(), c, s.host(), "a", d); err != nil {
		t.Fatalf("GetBlob(%s) after the config changed = %v, want nil", d, err)
	}
	// A config that turns unreadable keeps the last good credentials.
	if err := os.WriteFile(path, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.auth.mu.Lock()
	e := c.auth.m[authKey{s.host(), "a"}]
	c.auth.mu.Unlock()
	c.auth.remove(e)
	if _, err := readBlob(t.Context(), c, s.host(), "a", d); err != nil {
		t.Fatalf("GetBlob(%s) after the config broke = %v, want nil", d, err)
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	blob := testBlob(10)
	d := digest.FromBytes(blob)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "bob" || pass != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v2/" {
			w.Write(blob)
		}
	})
	tests := []struct {
		name    string
		user    string
		wantErr error
	}{
		{"right", "bob", nil},
		{"wrong", "eve", ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, h)
			path := writeDockerConfig(t, map[string]map[string]string{s.host(): {"username": tt.user, "password": "pw"}})
			c, _ := newClient(t, Options{Upstreams: map[string]string{s.host(): s.URL}, DockerConfig: path})
			got, err := readBlob(t.Context(), c, s.host(), "a", d)
			if !errors.Is(err, tt.wantErr) || (err == nil && string(got) != string(blob)) {
				t.Errorf("GetBlob(%s) = %d bytes, %v, want %d bytes, %v", d, len(got), err, len(blob), tt.wantErr)
			}
		})
	}
}

func TestRedirectDropsAuthorization(t *testing.T) {
	t.Parallel()
	blob := testBlob(5000)
	d := digest.FromBytes(blob)
	tests := []struct {
		name           string
		offset, length int64
	}{
		{"whole", 0, -1},
		{"range", 100, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storage := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(blob)))
			}))
			_, s := newTokenRegistry(t, "alice", "pw", blob, storage.URL)
			path := writeDockerConfig(t, map[string]map[string]string{s.host(): {"auth": basicAuth("alice", "pw")}})
			c, _ := newClient(t, Options{Upstreams: map[string]string{s.host(): s.URL}, DockerConfig: path})
			rc, size, err := c.GetBlob(t.Context(), s.host(), "a", d, tt.offset, tt.length)
			if err != nil {
				t.Fatalf("GetBlob(%s, %d, %d) = %v", d, tt.offset, tt.length, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			end := int64(len(blob))
			if tt.length >= 0 {
				end = tt.offset + tt.length
			}
			if err != nil || string(got) != string(blob[tt.offset:end]) || size != int64(len(blob)) {
				t.Errorf("GetBlob(%s, %d, %d) = %d bytes (size %d), %v, want %d (size %d)",
					d, tt.offset, tt.length, len(got), size, err, end-tt.offset, len(blob))
			}
			// The registry saw the token; the storage host, on another port of the
			// same address, must not.
			if auth := s.last().Header.Get("Authorization"); !strings.HasPrefix(auth, "Bearer ") {
				t.Errorf("registry saw Authorization %q, want a bearer token", auth)
			}
			if n := storage.count(http.MethodGet, "/v2/a/blobs/"+d.String()); n != 1 {
				t.Errorf("storage saw %d blob requests, want 1", n)
			}
			storage.mu.Lock()
			defer storage.mu.Unlock()
			for _, r := range storage.reqs {
				if r.URL.Path != "/v2/a/blobs/"+d.String() {
					continue
				}
				if auth := r.Header.Get("Authorization"); auth != "" {
					t.Errorf("storage saw Authorization %q, want none", auth)
				}
				if got, want := r.Header.Get("Range"), s.last().Header.Get("Range"); got != want {
					t.Errorf("storage saw Range %q, want %q", got, want)
				}
			}
		})
	}
}

func TestRedirectToSameHostKeepsAuthorization(t *testing.T) {
	t.Parallel()
	blob := testBlob(100)
	d := digest.FromBytes(blob)
	// Registries that front their own storage redirect to another path on the same
	// host, which wants the token as well.
	_, s := newTokenRegistry(t, "", "", blob, "self")
	c, _ := clientFor(t, s)
	got, err := readBlob(t.Context(), c, s.host(), "a", d)
	if err != nil || string(got) != string(blob) {
		t.Errorf("GetBlob(%s) = %d bytes, %v, want %d bytes", d, len(got), err, len(blob))
	}
	if n := s.count(http.MethodGet, "/storage/v2/a/blobs/"+d.String()); n != 1 {
		t.Errorf("storage requests = %d, want 1", n)
	}
}

func TestTokenAuthConcurrent(t *testing.T) {
	t.Parallel()
	blob := testBlob(1000)
	d := digest.FromBytes(blob)
	tr, s := newTokenRegistry(t, "", "", blob, "")
	c, _ := clientFor(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			got, err := readBlob(t.Context(), c, s.host(), "a", d)
			if err == nil && string(got) != string(blob) {
				err = fmt.Errorf("got %d bytes, want %d", len(got), len(blob))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("GetBlob(%s) = %v", d, err)
		}
	}
	if p, n := tr.pings.Load(), tr.tokens.Load(); p != 1 || n != 1 {
		t.Errorf("16 concurrent GetBlob: %d pings, %d token requests, want 1 and 1", p, n)
	}
}

func TestAuthCache(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newAuthCache(2)
	builds := 0
	ok := func(context.Context) (http.RoundTripper, error) { builds++; return http.DefaultTransport, nil }
	fail := func(context.Context) (http.RoundTripper, error) { builds++; return nil, errors.New("boom") }
	k := func(repo string) authKey { return authKey{"r", repo} }

	if _, fresh, err := a.get(ctx, k("a"), ok); err != nil || !fresh {
		t.Fatalf("get(a) = %v, fresh %v, want nil, fresh", err, fresh)
	}
	if _, fresh, err := a.get(ctx, k("a"), ok); err != nil || fresh || builds != 1 {
		t.Fatalf("get(a) again = %v, fresh %v after %d builds, want cached", err, fresh, builds)
	}
	if _, _, err := a.get(ctx, k("b"), ok); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.get(ctx, k("a"), ok); err != nil { // a is now the most recently used
		t.Fatal(err)
	}
	if _, _, err := a.get(ctx, k("c"), ok); err != nil { // evicts b
		t.Fatal(err)
	}
	if n := a.len(); n != 2 {
		t.Errorf("len = %d, want 2", n)
	}
	if _, ok := a.m[k("b")]; ok {
		t.Errorf("b still cached, want it evicted as least recently used")
	}
	if _, _, err := a.get(ctx, k("d"), fail); err == nil {
		t.Errorf("get(d) with a failing build = nil, want the error")
	}
	if _, ok := a.m[k("d")]; ok {
		t.Errorf("failed build cached, want it dropped")
	}
}

func TestAuthCacheSharedBuild(t *testing.T) {
	t.Parallel()
	k := authKey{"r", "a"}
	tests := []struct {
		name string
		// builderErr is what the first build returns; cancel also cancels the
		// builder's own context first.
		builderErr error
		cancel     bool
		// waiterBuilds reports whether the waiter is expected to build for itself.
		waiterBuilds bool
		wantErr      error
	}{
		{"builder succeeds", nil, false, false, nil},
		{"builder fails", errors.New("registry down"), false, false, errors.New("registry down")},
		{"builder cancelled", context.Canceled, true, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				a := newAuthCache(4)
				bctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				release := make(chan struct{})
				go func() {
					// Its result is the second caller's to check, below.
					_, _, _ = a.get(bctx, k, func(ctx context.Context) (http.RoundTripper, error) {
						<-release
						if tt.builderErr != nil {
							return nil, tt.builderErr
						}
						return http.DefaultTransport, nil
					})
				}()
				synctest.Wait() // the builder owns the entry

				var built bool
				var e *authEntry
				var fresh bool
				var err error
				done := make(chan struct{})
				go func() {
					defer close(done)
					e, fresh, err = a.get(t.Context(), k, func(context.Context) (http.RoundTripper, error) {
						built = true
						return http.DefaultTransport, nil
					})
				}()
				synctest.Wait() // the waiter waits on the entry in flight
				if tt.cancel {
					cancel()
				}
				close(release)
				<-done
				if built != tt.waiterBuilds || fresh != tt.waiterBuilds {
					t.Errorf("waiter built %v (fresh %v), want %v", built, fresh, tt.waiterBuilds)
				}
				if (err == nil) != (tt.wantErr == nil) || (err != nil && err.Error() != tt.wantErr.Error()) {
					t.Errorf("waiter get = %v, want %v", err, tt.wantErr)
				}
				if err == nil && e == nil {
					t.Errorf("waiter got no entry")
				}
			})
		})
	}
}

func TestBasicAuthRedirect(t *testing.T) {
	t.Parallel()
	blob := testBlob(100)
	d := digest.FromBytes(blob)
	storage := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(blob)
	}))
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "bob" || pass != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v2/" {
			http.Redirect(w, r, storage.URL+"/x", http.StatusTemporaryRedirect)
		}
	}))
	path := writeDockerConfig(t, map[string]map[string]string{s.host(): {"username": "bob", "password": "pw"}})
	c, _ := newClient(t, Options{Upstreams: map[string]string{s.host(): s.URL}, DockerConfig: path})
	got, err := readBlob(t.Context(), c, s.host(), "a", d)
	if err != nil || string(got) != string(blob) {
		t.Fatalf("GetBlob(%s) = %d bytes, %v, want %d bytes", d, len(got), err, len(blob))
	}
	if r := storage.last(); r == nil || r.Header.Get("Authorization") != "" {
		t.Errorf("storage request = %v, want one without Authorization", r)
	}
}
