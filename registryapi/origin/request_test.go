package origin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// sequence answers the n-th request for a blob with statuses[n] (the last one repeats);
// 200 serves blob.
func sequence(blob []byte, retryAfter string, statuses ...int) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		i := min(int(n.Add(1))-1, len(statuses)-1)
		if statuses[i] != http.StatusOK {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(statuses[i])
			io.WriteString(w, `{"errors":[{"code":"X","message":"try later"}]}`)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.Write(blob)
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	blob := testBlob(100)
	d := digest.FromBytes(blob)
	tests := []struct {
		name       string
		h          http.HandlerFunc
		wantErr    error
		wantGets   int
		wantWaits  int
		wantWaited time.Duration // exact wait expected before the second attempt, if not 0
	}{
		{"ok", sequence(blob, "", 200), nil, 1, 0, 0},
		{"503 then ok", sequence(blob, "", 503, 200), nil, 2, 1, 0},
		{"500 502 then ok", sequence(blob, "", 500, 502, 200), nil, 3, 2, 0},
		{"500 always", sequence(blob, "", 500), ErrUnavailable, 3, 2, 0},
		{"504 always", sequence(blob, "", 504), ErrUnavailable, 3, 2, 0},
		{"501 not retried", sequence(blob, "", 501), ErrUnavailable, 1, 0, 0},
		{"404 not retried", sequence(blob, "", 404), ErrNotFound, 1, 0, 0},
		{"403 not retried", sequence(blob, "", 403), ErrDenied, 1, 0, 0},
		{"400 not retried", sequence(blob, "", 400), ErrUnavailable, 1, 0, 0},
		{"429 then ok", sequence(blob, "", 429, 200), nil, 2, 1, 0},
		{"429 with Retry-After", sequence(blob, "2", 429, 200), nil, 2, 1, 2 * time.Second},
		{"429 with long Retry-After", sequence(blob, "60", 429, 200), ErrTooManyRequests, 1, 0, 0},
		{"429 with bad Retry-After", sequence(blob, "soon", 429, 200), nil, 2, 1, 0},
		{"429 always", sequence(blob, "1", 429), ErrTooManyRequests, 3, 2, time.Second},
		{"ping 503 then ok", func() http.HandlerFunc {
			var pings atomic.Int64
			inner := sequence(blob, "", 200)
			return func(w http.ResponseWriter, r *http.Request) {
				// go-containerregistry pings a plain-http registry twice (as https,
				// which the client pins back to http, then as http) before giving up.
				if r.URL.Path == "/v2/" && pings.Add(1) <= 2 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				inner(w, r)
			}
		}(), nil, 1, 1, 0},
		{"ping 404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, ErrUnavailable, 0, 0, 0},
		{"unsafe realm", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://169.254.169.254/token",service="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, ErrUnavailable, 0, 0, 0},
		{"challenge without realm", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer service="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, ErrUnavailable, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, tt.h)
			c, w := clientFor(t, s)
			got, err := readBlob(t.Context(), c, s.host(), "a", d)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("GetBlob(%s) = %v, want %v", d, err, tt.wantErr)
			}
			if err == nil && string(got) != string(blob) {
				t.Errorf("GetBlob(%s) = %d bytes, want %d", d, len(got), len(blob))
			}
			if n := s.count(http.MethodGet, "/blobs/"+d.String()); n != tt.wantGets {
				t.Errorf("GetBlob(%s) made %d requests, want %d", d, n, tt.wantGets)
			}
			waited := w.all()
			if len(waited) != tt.wantWaits {
				t.Fatalf("GetBlob(%s) waited %v, want %d waits", d, waited, tt.wantWaits)
			}
			for i, wd := range waited {
				lo, hi := baseBackoff<<i/2, baseBackoff<<i
				if tt.wantWaited != 0 {
					lo, hi = tt.wantWaited, tt.wantWaited
				}
				if wd < lo || wd > hi {
					t.Errorf("wait %d = %v, want within [%v, %v]", i, wd, lo, hi)
				}
			}
		})
	}
}

func TestRetryMethods(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	d := digest.FromBytes(body)
	var n atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if n.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	c, w := clientFor(t, s)
	ctx := t.Context()
	if _, err := c.GetManifest(ctx, s.host(), "a", "v1", nil); err != nil {
		t.Errorf("GetManifest = %v, want a retried success", err)
	}
	if _, err := c.HeadManifest(ctx, s.host(), "a", "v1", nil); err != nil {
		t.Errorf("HeadManifest = %v, want a retried success", err)
	}
	if _, err := c.HeadBlob(ctx, s.host(), "a", d); err != nil {
		t.Errorf("HeadBlob = %v, want a retried success", err)
	}
	if got := len(w.all()); got != 3 {
		t.Errorf("waits = %d, want 3 (one per call)", got)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	s := newServer(t, http.NotFoundHandler())
	s.Close() // nothing listens there any more
	c, w := clientFor(t, s)
	d := digest.FromString("x")
	if _, _, err := c.GetBlob(t.Context(), s.host(), "a", d, 0, -1); !errors.Is(err, ErrUnavailable) {
		t.Errorf("GetBlob(%s) = %v, want %v", d, err, ErrUnavailable)
	}
	if got := len(w.all()); got != maxAttempts-1 {
		t.Errorf("waits = %d, want %d", got, maxAttempts-1)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	c, _ := clientFor(t, s)
	waiting := make(chan struct{})
	c.wait = func(ctx context.Context, d time.Duration) error {
		close(waiting)
		return sleep(ctx, time.Hour)
	}
	go func() {
		<-waiting
		cancel()
	}()
	d := digest.FromString("x")
	if _, _, err := c.GetBlob(ctx, s.host(), "a", d, 0, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("GetBlob(%s) = %v, want %v", d, err, context.Canceled)
	}
	if n := s.count(http.MethodGet, "/blobs/"+d.String()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestCancelled(t *testing.T) {
	t.Parallel()
	s := newServer(t, sequence(testBlob(10), "", 200))
	c, _ := clientFor(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := digest.FromString("x")
	if _, _, err := c.GetBlob(ctx, s.host(), "a", d, 0, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("GetBlob(%s) with a cancelled context = %v, want %v", d, err, context.Canceled)
	}
}

func TestRedirectLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	c, w := clientFor(t, s)
	d := digest.FromString("x")
	if _, _, err := c.GetBlob(t.Context(), s.host(), "a", d, 0, -1); !errors.Is(err, ErrUnavailable) {
		t.Errorf("GetBlob(%s) = %v, want %v", d, err, ErrUnavailable)
	}
	if n := s.count(http.MethodGet, "/blobs/"+d.String()); n != maxRedirects+1 {
		t.Errorf("requests = %d, want %d", n, maxRedirects+1)
	}
	if len(w.all()) != 0 {
		t.Errorf("waited %v, want no retry after too many redirects", w.all())
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"3", 3 * time.Second},
		{" 7 ", 7 * time.Second},
		{"99999999999999", time.Hour},
		{"soon", 0},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"3", "-1", "Mon, 02 Jan 2006 15:04:05 GMT", "", "9999999999999999999"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, want >= 0", s, d)
		}
	})
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		hi := baseBackoff << (attempt - 1)
		for range 100 {
			if got := retryBackoff.Delay(attempt); got < hi/2 || got > hi {
				t.Fatalf("retryBackoff.Delay(%d) = %v, want within [%v, %v]", attempt, got, hi/2, hi)
			}
		}
	}
}

func TestStatusErrorIs(t *testing.T) {
	t.Parallel()
	sentinels := []error{ErrNotFound, ErrDenied, ErrTooManyRequests, ErrUnavailable}
	tests := []struct {
		code int
		want error
	}{
		{404, ErrNotFound},
		{401, ErrDenied},
		{403, ErrDenied},
		{429, ErrTooManyRequests},
		{500, ErrUnavailable},
		{503, ErrUnavailable},
		{400, ErrUnavailable},
		{418, ErrUnavailable},
	}
	for _, tt := range tests {
		err := error(&StatusError{StatusCode: tt.code})
		for _, s := range sentinels {
			if got, want := errors.Is(err, s), s == tt.want; got != want {
				t.Errorf("errors.Is(StatusError(%d), %v) = %v, want %v", tt.code, s, got, want)
			}
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	t.Parallel()
	up := &upstream{scheme: "https", host: "reg.example:5000"}
	tests := []struct {
		to       string
		wantAuth bool
	}{
		{"https://reg.example:5000/v2/a/blobs/x", true},
		{"https://REG.example:5000/storage", true},
		{"https://reg.example:6000/storage", false},
		{"https://reg.example/storage", false},
		{"http://reg.example:5000/storage", false},
		{"https://cdn.reg.example:5000/storage", false},
		{"https://storage.example/x", false},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, tt.to, nil)
		req.Header.Set("Authorization", "Bearer t")
		if err := up.checkRedirect(req, make([]*http.Request, 1)); err != nil {
			t.Fatalf("checkRedirect(%s) = %v", tt.to, err)
		}
		if got := req.Header.Get("Authorization") != ""; got != tt.wantAuth {
			t.Errorf("checkRedirect(%s) kept Authorization = %v, want %v", tt.to, got, tt.wantAuth)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "https://reg.example:5000/", nil)
	if err := up.checkRedirect(req, make([]*http.Request, maxRedirects)); err != nil {
		t.Errorf("checkRedirect after %d redirects = %v, want nil", maxRedirects-1, err)
	}
	if err := up.checkRedirect(req, make([]*http.Request, maxRedirects+1)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("checkRedirect after %d redirects = %v, want %v", maxRedirects, err, ErrUnavailable)
	}
}
