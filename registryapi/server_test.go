package registryapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociIndex    = "application/vnd.oci.image.index.v1+json"
)

var (
	testBlob       = []byte("0123456789abcdefghij") // 20 bytes: ranges are easy to read
	testBlobDigest = digest.FromBytes(testBlob)
	testManifest   = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	testManDigest  = digest.FromBytes(testManifest)
	absentDigest   = digest.FromString("absent")
)

type fixture struct {
	src *fakeSource
	srv *Server
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newFixture(t *testing.T, edit ...func(*Options)) *fixture {
	t.Helper()
	fx := &fixture{src: newFakeSource(t), reg: prometheus.NewRegistry(), log: new(bytes.Buffer)}
	fx.src.addBlob(testBlob)
	fx.src.addManifest("latest", ociManifest, testManifest)
	opts := Options{
		Blobs:      fx.src,
		Manifests:  fx.src,
		Registries: []string{"docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000"},
		Default:    "docker.io",
		Logger:     slog.New(slog.NewTextHandler(fx.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: fx.reg,
	}
	for _, e := range edit {
		e(&opts)
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer() = %v", err)
	}
	fx.srv = srv
	return fx
}

// do serves one request in process. header alternates names and values.
func (fx *fixture) do(method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	fx.srv.ServeHTTP(w, r)
	return w
}

// errorCode returns the OCI error code of a response body, or "" when there is none.
func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if w.Code < 400 || w.Body.Len() == 0 {
		return ""
	}
	var body errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	if len(body.Errors) != 1 {
		t.Fatalf("error body %q: want one error", w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	return body.Errors[0].Code
}

func TestNewServer(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t)
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io"}}, true},
		{"default", Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io", "docker.io"}, Default: "docker.io"}, true},
		{"default alias", Options{Blobs: src, Manifests: src, Registries: []string{"docker.io"}, Default: "registry-1.docker.io"}, true},
		{"no blobs", Options{Manifests: src, Registries: []string{"ghcr.io"}}, false},
		{"no manifests", Options{Blobs: src, Registries: []string{"ghcr.io"}}, false},
		{"no registries", Options{Blobs: src, Manifests: src}, false},
		{"invalid registry", Options{Blobs: src, Manifests: src, Registries: []string{"https://ghcr.io"}}, false},
		{"aliases twice", Options{Blobs: src, Manifests: src, Registries: []string{"docker.io", "index.docker.io"}}, false},
		{"default not mirrored", Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io"}, Default: "quay.io"}, false},
		{"invalid default", Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io"}, Default: "a b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewServer(tt.opts)
			if (err == nil) != tt.ok {
				t.Errorf("NewServer(%+v) = %v, want ok=%v", tt.opts, err, tt.ok)
			}
		})
	}

	t.Run("one registerer, two servers", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		opts := Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io"}, Registerer: reg}
		if _, err := NewServer(opts); err != nil {
			t.Fatalf("first NewServer() = %v", err)
		}
		if _, err := NewServer(opts); err == nil {
			t.Error("second NewServer() on the same registerer = nil, want an error")
		}
	})
}

func TestBase(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	for _, tt := range []struct{ method, target, body string }{
		{"GET", "/v2/", "{}"},
		{"GET", "/v2", "{}"},
		{"GET", "/v2/?ns=evil.example.com", "{}"},
		{"HEAD", "/v2/", ""},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			t.Parallel()
			w := fx.do(tt.method, tt.target)
			if w.Code != http.StatusOK || w.Body.String() != tt.body {
				t.Errorf("%s %s = %d %q, want 200 %q", tt.method, tt.target, w.Code, w.Body, tt.body)
			}
			if v := w.Header().Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
				t.Errorf("Docker-Distribution-Api-Version = %q", v)
			}
			if v := w.Header().Get("WWW-Authenticate"); v != "" {
				t.Errorf("WWW-Authenticate = %q, want none: a mirror never challenges", v)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	blob := "/blobs/" + testBlobDigest.String()
	long := strings.Repeat("a", 120) + "/" + strings.Repeat("b", 134) // 255 bytes
	tests := []struct {
		method, target string
		status         int
		code           string
		call           string // source method the request reaches, "" for none
		repo           string // repository name the source sees
	}{
		{"GET", "/v2/library/alpine" + blob, 200, "", "OpenBlob", "library/alpine"},
		{"HEAD", "/v2/library/alpine" + blob, 200, "", "StatBlob", "library/alpine"},
		{"GET", "/v2/library/alpine/manifests/latest", 200, "", "Manifest", "library/alpine"},
		{"HEAD", "/v2/library/alpine/manifests/latest", 200, "", "StatManifest", "library/alpine"},
		{"GET", "/v2/library/alpine/manifests/" + testManDigest.String(), 200, "", "Manifest", "library/alpine"},
		{"GET", "/v2/a/blobs/b" + blob, 200, "", "OpenBlob", "a/blobs/b"},
		{"GET", "/v2/a/manifests/blobs/manifests/latest", 200, "", "Manifest", "a/manifests/blobs"},
		{"GET", "/v2/a.b_c__d--e/f-g" + blob, 200, "", "OpenBlob", "a.b_c__d--e/f-g"},
		{"GET", "/v2/" + long + blob, 200, "", "OpenBlob", long},
		{"GET", "/v2/x/manifests/Tag_1.0-rc", 404, "MANIFEST_UNKNOWN", "Manifest", "library/x"},
		{"GET", "/v2/x/manifests/sha256", 404, "MANIFEST_UNKNOWN", "Manifest", "library/x"},
		{"GET", "/v2/x/manifests/" + digest.SHA384.FromString("m").String(), 404, "MANIFEST_UNKNOWN", "Manifest", "library/x"},
		{"GET", "/v2/x/manifests/" + digest.SHA512.FromString("m").String(), 404, "MANIFEST_UNKNOWN", "Manifest", "library/x"},
		{"GET", "/v2/x/blobs/" + absentDigest.String(), 404, "BLOB_UNKNOWN", "OpenBlob", "library/x"},

		// Write methods: a read-only mirror.
		{"POST", "/v2/x/blobs/uploads/", 405, "UNSUPPORTED", "", ""},
		{"PUT", "/v2/x/manifests/latest", 405, "UNSUPPORTED", "", ""},
		{"PATCH", "/v2/x/blobs/uploads/123", 405, "UNSUPPORTED", "", ""},
		{"DELETE", "/v2/x" + blob, 405, "UNSUPPORTED", "", ""},
		{"DELETE", "/v2/x/manifests/latest", 405, "UNSUPPORTED", "", ""},
		{"OPTIONS", "/v2/", 405, "UNSUPPORTED", "", ""},
		{"POST", "/v2/Bad%2Fname/blobs/uploads/", 405, "UNSUPPORTED", "", ""},

		// Endpoints a pull-through mirror leaves to the next host.
		{"GET", "/v2/x/tags/list", 404, "UNSUPPORTED", "", ""},
		{"GET", "/v2/x/referrers/" + testManDigest.String(), 404, "UNSUPPORTED", "", ""},
		{"GET", "/v2/x/blobs/uploads/123", 404, "UNSUPPORTED", "", ""},
		{"GET", "/v2/_catalog", 404, "UNSUPPORTED", "", ""},
		{"GET", "/v2" + blob, 404, "UNSUPPORTED", "", ""},

		// Not the registry API at all.
		{"GET", "/", 404, "UNSUPPORTED", "", ""},
		{"GET", "/v2x", 404, "UNSUPPORTED", "", ""},
		{"GET", "/v1/x/blobs/" + testBlobDigest.String(), 404, "UNSUPPORTED", "", ""},
		{"POST", "/healthz", 404, "UNSUPPORTED", "", ""},

		// Hostile or malformed names.
		{"GET", "/v2/Alpine" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo%2Fbar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/fo%6F" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo%00" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo/%2E%2E/bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo/../bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo/./bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo//bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2//foo" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo/" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/-foo" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo-" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo___bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/foo..bar" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/" + long + "c" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/" + strings.Repeat("a/", 5000) + "a" + blob, 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/x/blobs/uploads/", 400, "NAME_INVALID", "", ""},

		// Malformed references.
		{"GET", "/v2/x/blobs/latest", 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/blobs/sha256:abc", 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/blobs/" + strings.ToUpper(testBlobDigest.Encoded()), 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/blobs/sha256:" + strings.ToUpper(testBlobDigest.Encoded()), 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/manifests/sha256:baddigeststring", 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/manifests/latest:1", 400, "DIGEST_INVALID", "", ""},
		{"GET", "/v2/x/manifests/-latest", 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/x/manifests/.latest", 400, "NAME_INVALID", "", ""},
		{"GET", "/v2/x/manifests/" + strings.Repeat("t", 129), 400, "NAME_INVALID", "", ""},
		{"HEAD", "/v2/x/manifests/la%74est", 400, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.forbidden = tt.call == ""
			w := fx.do(tt.method, tt.target)
			if w.Code != tt.status {
				t.Errorf("%s %s = %d, want %d (body %q)", tt.method, tt.target, w.Code, tt.status, w.Body)
			}
			if code := errorCode(t, w); code != tt.code {
				t.Errorf("%s %s: error code %q, want %q", tt.method, tt.target, code, tt.code)
			}
			if tt.status == http.StatusMethodNotAllowed && w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want GET, HEAD", w.Header().Get("Allow"))
			}
			calls := fx.src.called()
			if tt.call == "" {
				return
			}
			if len(calls) != 1 || calls[0].method != tt.call || calls[0].repo.Name != tt.repo {
				t.Errorf("%s %s: source calls %+v, want one %s for %s", tt.method, tt.target, calls, tt.call, tt.repo)
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	const path = "/v2/team/app/manifests/latest"
	tests := []struct {
		query    string
		status   int
		code     string
		registry string // what the source sees; "" when it must not be called
		echo     string // OCI-Namespace
	}{
		{"", 200, "", "docker.io", ""},
		{"?ns=docker.io", 200, "", "docker.io", "docker.io"},
		{"?ns=index.docker.io", 200, "", "docker.io", "index.docker.io"},
		{"?ns=registry-1.docker.io", 200, "", "docker.io", "registry-1.docker.io"},
		{"?ns=Docker.IO", 200, "", "docker.io", "Docker.IO"},
		{"?ns=ghcr.io", 200, "", "ghcr.io", "ghcr.io"},
		{"?ns=127.0.0.1%3A5000", 200, "", "127.0.0.1:5000", "127.0.0.1:5000"},
		{"?ns=127.0.0.1:5000", 200, "", "127.0.0.1:5000", "127.0.0.1:5000"},
		{"?ns=127.0.0.1:05000", 200, "", "127.0.0.1:5000", "127.0.0.1:05000"},
		{"?ns=%5B::1%5D:5000", 200, "", "[::1]:5000", "[::1]:5000"},
		{"?ns=[0:0::1]:5000", 200, "", "[::1]:5000", "[0:0::1]:5000"},
		{"?other=1&ns=ghcr.io", 200, "", "ghcr.io", "ghcr.io"},

		// Well-formed but not mirrored here: 404, and no request leaves the node.
		{"?ns=evil.example.com", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=169.254.169.254", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=localhost:5000", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=127.0.0.1:5001", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=127.0.0.1", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=docker.io:443", 404, "NAME_UNKNOWN", "", ""},
		{"?ns=%5B::2%5D:5000", 404, "NAME_UNKNOWN", "", ""},

		// Malformed.
		{"?ns=http://x", 400, "NAME_INVALID", "", ""},
		{"?ns=http%3A%2F%2Fghcr.io", 400, "NAME_INVALID", "", ""},
		{"?ns=a%20b", 400, "NAME_INVALID", "", ""},
		{"?ns=a+b", 400, "NAME_INVALID", "", ""},
		{"?ns=@evil", 400, "NAME_INVALID", "", ""},
		{"?ns=user@ghcr.io", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io/path", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io%2F..%2F", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io:", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io:0", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io:65536", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io:+80", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io:1:2", 400, "NAME_INVALID", "", ""},
		{"?ns=-ghcr.io", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr..io", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io.", 400, "NAME_INVALID", "", ""},
		{"?ns=gh_cr.io", 400, "NAME_INVALID", "", ""},
		{"?ns=::1", 400, "NAME_INVALID", "", ""},
		{"?ns=%5B::1%25eth0%5D:5000", 400, "NAME_INVALID", "", ""},
		{"?ns=%5B1.2.3.4%5D", 400, "NAME_INVALID", "", ""},
		{"?ns=%5B::1", 400, "NAME_INVALID", "", ""},
		{"?ns=%5B::1%5Dx", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io%0d%0aX-Injected:1", 400, "NAME_INVALID", "", ""},
		{"?ns=" + strings.Repeat("a.", 128) + "io", 400, "NAME_INVALID", "", ""},
		{"?ns=", 400, "NAME_INVALID", "", ""},
		{"?ns", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io&ns=docker.io", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io&ns=ghcr.io", 400, "NAME_INVALID", "", ""},
		{"?ns=%zz", 400, "NAME_INVALID", "", ""},
		{"?ns=ghcr.io;x=1", 400, "NAME_INVALID", "", ""},
	}
	for _, tt := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+" "+tt.query, func(t *testing.T) {
				t.Parallel()
				fx := newFixture(t)
				fx.src.forbidden = tt.registry == ""
				w := fx.do(method, path+tt.query)
				if w.Code != tt.status {
					t.Fatalf("%s %s = %d, want %d", method, tt.query, w.Code, tt.status)
				}
				if method == "GET" {
					if code := errorCode(t, w); code != tt.code {
						t.Errorf("%s: error code %q, want %q", tt.query, code, tt.code)
					}
				} else if w.Body.Len() != 0 {
					t.Errorf("HEAD %s: body %q, want none", tt.query, w.Body)
				}
				if got := w.Header().Get("OCI-Namespace"); got != tt.echo {
					t.Errorf("%s: OCI-Namespace = %q, want %q", tt.query, got, tt.echo)
				}
				if tt.registry == "" {
					return
				}
				calls := fx.src.called()
				if len(calls) != 1 || calls[0].repo.Registry != tt.registry {
					t.Errorf("%s: source calls %+v, want one for registry %s", tt.query, calls, tt.registry)
				}
			})
		}
	}
}

func TestNamespaceWithoutDefault(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, func(o *Options) { o.Default = "" })
	fx.src.forbidden = true
	for _, target := range []string{
		"/v2/team/app/manifests/latest",
		"/v2/team/app/blobs/" + testBlobDigest.String(),
	} {
		w := fx.do("GET", target)
		if w.Code != http.StatusNotFound || errorCode(t, w) != "NAME_UNKNOWN" {
			t.Errorf("GET %s = %d %q, want 404 NAME_UNKNOWN", target, w.Code, w.Body)
		}
	}
}

func TestDockerHubLibrary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		registries []string
		target     string
		want       Repo
	}{
		{nil, "/v2/alpine/manifests/latest?ns=docker.io", Repo{"docker.io", "library/alpine"}},
		{nil, "/v2/alpine/manifests/latest?ns=registry-1.docker.io", Repo{"docker.io", "library/alpine"}},
		{nil, "/v2/alpine/manifests/latest", Repo{"docker.io", "library/alpine"}},
		{nil, "/v2/library/alpine/manifests/latest?ns=docker.io", Repo{"docker.io", "library/alpine"}},
		{nil, "/v2/bitnami/redis/manifests/latest?ns=docker.io", Repo{"docker.io", "bitnami/redis"}},
		{nil, "/v2/alpine/manifests/latest?ns=ghcr.io", Repo{"ghcr.io", "alpine"}},
		{nil, "/v2/alpine/blobs/" + testBlobDigest.String() + "?ns=docker.io", Repo{"docker.io", "library/alpine"}},
		// Sources see the registry key as configured.
		{[]string{"index.docker.io"}, "/v2/alpine/manifests/latest?ns=docker.io", Repo{"index.docker.io", "library/alpine"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.registries, tt.target), func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, func(o *Options) {
				if tt.registries != nil {
					o.Registries, o.Default = tt.registries, ""
				}
			})
			if w := fx.do("GET", tt.target); w.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %q", tt.target, w.Code, w.Body)
			}
			if calls := fx.src.called(); len(calls) != 1 || calls[0].repo != tt.want {
				t.Errorf("GET %s: source calls %+v, want one for %v", tt.target, calls, tt.want)
			}
		})
	}
}

func TestBlobGet(t *testing.T) {
	t.Parallel()
	target := "/v2/library/alpine/blobs/" + testBlobDigest.String()
	etag := `"` + testBlobDigest.String() + `"`
	tests := []struct {
		name         string
		header       []string
		status       int
		body         string
		contentRange string
		opened       bool
	}{
		{"whole", nil, 200, string(testBlob), "", true},
		{"first bytes", []string{"Range", "bytes=0-4"}, 206, "01234", "bytes 0-4/20", true},
		{"open ended", []string{"Range", "bytes=15-"}, 206, "fghij", "bytes 15-19/20", true},
		{"from zero", []string{"Range", "bytes=0-"}, 206, string(testBlob), "bytes 0-19/20", true},
		{"suffix", []string{"Range", "bytes=-3"}, 206, "hij", "bytes 17-19/20", true},
		{"suffix longer than blob", []string{"Range", "bytes=-100"}, 206, string(testBlob), "bytes 0-19/20", true},
		{"end clipped", []string{"Range", "bytes=10-1000"}, 206, "abcdefghij", "bytes 10-19/20", true},
		{"last byte", []string{"Range", "bytes=19-19"}, 206, "j", "bytes 19-19/20", true},
		{"unit case", []string{"Range", "Bytes=1-2"}, 206, "12", "bytes 1-2/20", true},
		{"whitespace", []string{"Range", "bytes= 1-2 "}, 206, "12", "bytes 1-2/20", true},
		{"multi range served whole", []string{"Range", "bytes=0-1,5-6"}, 200, string(testBlob), "", true},
		{"empty elements", []string{"Range", "bytes=,3-4,"}, 206, "34", "bytes 3-4/20", true},
		{"if-range match", []string{"Range", "bytes=0-1", "If-Range", etag}, 206, "01", "bytes 0-1/20", true},
		{"if-range other etag", []string{"Range", "bytes=0-1", "If-Range", `"sha256:other"`}, 200, string(testBlob), "", true},
		{"if-range weak", []string{"Range", "bytes=0-1", "If-Range", "W/" + etag}, 200, string(testBlob), "", true},
		{"if-range date", []string{"Range", "bytes=0-1", "If-Range", "Wed, 21 Oct 2015 07:28:00 GMT"}, 200, string(testBlob), "", true},
		{"if-range mismatch ignores malformed", []string{"Range", "bytes=abc", "If-Range", `"x"`}, 200, string(testBlob), "", true},

		{"start at end", []string{"Range", "bytes=20-"}, 416, "", "bytes */20", true},
		{"start past end", []string{"Range", "bytes=5000-10000"}, 416, "", "bytes */20", true},
		{"empty suffix", []string{"Range", "bytes=-0"}, 416, "", "bytes */20", true},

		// Malformed: refused before the blob is opened.
		{"not numbers", []string{"Range", "bytes=abc"}, 416, "", "", false},
		{"backwards", []string{"Range", "bytes=5-2"}, 416, "", "", false},
		{"other unit", []string{"Range", "items=0-1"}, 416, "", "", false},
		{"no unit", []string{"Range", "0-1"}, 416, "", "", false},
		{"no dash", []string{"Range", "bytes=5"}, 416, "", "", false},
		{"two dashes", []string{"Range", "bytes=1-2-3"}, 416, "", "", false},
		{"negative", []string{"Range", "bytes=--1"}, 416, "", "", false},
		{"plus sign", []string{"Range", "bytes=+1-2"}, 416, "", "", false},
		{"overflow", []string{"Range", "bytes=99999999999999999999-"}, 416, "", "", false},
		{"overflow suffix", []string{"Range", "bytes=-99999999999999999999"}, 416, "", "", false},
		{"empty set", []string{"Range", "bytes="}, 416, "", "", false},
		{"multi with bad part", []string{"Range", "bytes=0-1,x"}, 416, "", "", false},
		{"two headers", []string{"Range", "bytes=0-1", "Range", "bytes=2-3"}, 416, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.forbidden = !tt.opened
			var blob *memBlob
			fx.src.blob = func(c []byte) Blob { blob = newMemBlob(c); return blob }
			w := fx.do("GET", target, tt.header...)
			if w.Code != tt.status {
				t.Fatalf("GET %v = %d %q, want %d", tt.header, w.Code, w.Body, tt.status)
			}
			h := w.Header()
			if got := h.Get("Content-Range"); got != tt.contentRange {
				t.Errorf("Content-Range = %q, want %q", got, tt.contentRange)
			}
			if tt.opened && (blob == nil || blob.closed.Load() != 1) {
				t.Errorf("blob opened: %v, want opened and closed once", blob != nil)
			}
			if tt.status == http.StatusRequestedRangeNotSatisfiable {
				if code := errorCode(t, w); code != "RANGE_INVALID" {
					t.Errorf("error code %q, want RANGE_INVALID", code)
				}
				return
			}
			if w.Body.String() != tt.body {
				t.Errorf("body %q, want %q", w.Body, tt.body)
			}
			want := map[string]string{
				"Content-Length":        fmt.Sprint(len(tt.body)),
				"Content-Type":          "application/octet-stream",
				"Docker-Content-Digest": testBlobDigest.String(),
				"Accept-Ranges":         "bytes",
				"Etag":                  etag,
				"Cache-Control":         "max-age=31536000",
				"OCI-Namespace":         "",
			}
			for k, v := range want {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestBlobHead(t *testing.T) {
	t.Parallel()
	for _, rng := range []string{"", "bytes=0-1", "bytes=abc"} {
		t.Run(rng, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			w := fx.do("HEAD", "/v2/library/alpine/blobs/"+testBlobDigest.String()+"?ns=docker.io", "Range", rng)
			if w.Code != http.StatusOK || w.Body.Len() != 0 {
				t.Fatalf("HEAD = %d with %d body bytes, want 200 and none", w.Code, w.Body.Len())
			}
			h := w.Header()
			for k, v := range map[string]string{
				"Content-Length":        "20",
				"Docker-Content-Digest": testBlobDigest.String(),
				"Content-Type":          "application/octet-stream",
				"Accept-Ranges":         "bytes",
				"Etag":                  `"` + testBlobDigest.String() + `"`,
				"OCI-Namespace":         "docker.io",
				"Content-Range":         "",
			} {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if calls := fx.src.called(); len(calls) != 1 || calls[0].method != "StatBlob" {
				t.Errorf("source calls %+v, want one StatBlob (HEAD must not open the blob)", calls)
			}
		})
	}
}

func TestEmptyBlob(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	d := fx.src.addBlob(nil)
	target := "/v2/x/blobs/" + d.String()
	for _, tt := range []struct {
		rng    string
		status int
	}{
		{"", 200},
		{"bytes=-5", 200},
		{"bytes=0-", 416},
	} {
		w := fx.do("GET", target, "Range", tt.rng)
		if w.Code != tt.status || w.Header().Get("Content-Length") != fmt.Sprint(w.Body.Len()) {
			t.Errorf("GET Range %q = %d, Content-Length %q, want %d", tt.rng, w.Code, w.Header().Get("Content-Length"), tt.status)
		}
	}
}

func TestManifestGet(t *testing.T) {
	t.Parallel()
	withoutType := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}`)
	notJSON := []byte("not json")
	tests := []struct {
		name      string
		m         Manifest // served for every reference
		ref       string
		status    int
		mediaType string
		digest    digest.Digest
	}{
		{"by tag", Manifest{testManDigest, ociManifest, testManifest}, "latest", 200, ociManifest, testManDigest},
		{"by digest", Manifest{testManDigest, ociManifest, testManifest}, testManDigest.String(), 200, ociManifest, testManDigest},
		{"digest left to the edge", Manifest{"", ociManifest, testManifest}, "latest", 200, ociManifest, testManDigest},
		{"digest left to the edge by digest", Manifest{"", ociManifest, testManifest}, testManDigest.String(), 200, ociManifest, testManDigest},
		{"sha512", Manifest{digest.SHA512.FromBytes(testManifest), ociManifest, testManifest}, "latest", 200, ociManifest, digest.SHA512.FromBytes(testManifest)},
		{"media type from body", Manifest{digest.FromBytes(withoutType), "", withoutType}, "latest", 200, ociIndex, digest.FromBytes(withoutType)},
		{"no media type at all", Manifest{digest.FromBytes(notJSON), "", notJSON}, "latest", 200, "application/octet-stream", digest.FromBytes(notJSON)},

		// A source that hands over the wrong bytes is never served.
		{"body does not match digest", Manifest{absentDigest, ociManifest, testManifest}, "latest", 500, "", ""},
		{"other digest than asked", Manifest{testManDigest, ociManifest, testManifest}, absentDigest.String(), 500, "", ""},
		{"wrong body for digest asked", Manifest{"", ociManifest, testManifest}, absentDigest.String(), 500, "", ""},
		{"invalid digest from source", Manifest{"sha256:nope", ociManifest, testManifest}, "latest", 500, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.manifests[tt.ref] = tt.m
			w := fx.do("GET", "/v2/library/alpine/manifests/"+tt.ref)
			if w.Code != tt.status {
				t.Fatalf("GET = %d %q, want %d", w.Code, w.Body, tt.status)
			}
			if tt.status != http.StatusOK {
				if code := errorCode(t, w); code != "UNKNOWN" {
					t.Errorf("error code %q, want UNKNOWN", code)
				}
				return
			}
			if !bytes.Equal(w.Body.Bytes(), tt.m.Body) {
				t.Errorf("body %q, want %q exactly", w.Body, tt.m.Body)
			}
			h := w.Header()
			for k, v := range map[string]string{
				"Content-Type":          tt.mediaType,
				"Content-Length":        fmt.Sprint(len(tt.m.Body)),
				"Docker-Content-Digest": tt.digest.String(),
				"Etag":                  `"` + tt.digest.String() + `"`,
			} {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestManifestHead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		m      Manifest
		ref    string
		status int
		digest string // Docker-Content-Digest
	}{
		{"by tag", Manifest{testManDigest, ociManifest, testManifest}, "latest", 200, testManDigest.String()},
		{"by digest", Manifest{testManDigest, ociManifest, testManifest}, testManDigest.String(), 200, testManDigest.String()},
		{"tag without digest", Manifest{"", ociManifest, testManifest}, "latest", 200, ""},
		{"digest from request", Manifest{"", ociManifest, testManifest}, testManDigest.String(), 200, testManDigest.String()},
		{"other digest than asked", Manifest{absentDigest, ociManifest, testManifest}, testManDigest.String(), 500, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.manifests[tt.ref] = tt.m
			w := fx.do("HEAD", "/v2/library/alpine/manifests/"+tt.ref)
			if w.Code != tt.status || w.Body.Len() != 0 {
				t.Fatalf("HEAD = %d with %d body bytes, want %d and none", w.Code, w.Body.Len(), tt.status)
			}
			if calls := fx.src.called(); len(calls) != 1 || calls[0].method != "StatManifest" {
				t.Errorf("source calls %+v, want one StatManifest", calls)
			}
			if tt.status != http.StatusOK {
				return
			}
			h := w.Header()
			for k, v := range map[string]string{
				"Content-Type":          ociManifest,
				"Content-Length":        fmt.Sprint(len(tt.m.Body)),
				"Docker-Content-Digest": tt.digest,
			} {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestManifestAccept(t *testing.T) {
	t.Parallel()
	many := strings.Repeat("a/b,", 100)
	tests := []struct {
		name   string
		header []string
		want   []string
	}{
		{"none", nil, nil},
		{"one line", []string{"Accept", ociIndex + ", " + ociManifest + ",*/*"}, []string{ociIndex, ociManifest, "*/*"}},
		{"several lines", []string{"Accept", ociIndex, "Accept", ociManifest + " ,, "}, []string{ociIndex, ociManifest}},
		{"parameters kept", []string{"Accept", "application/json;q=0.5"}, []string{"application/json;q=0.5"}},
		{"bounded", []string{"Accept", many}, slices.Repeat([]string{"a/b"}, maxAcceptTypes)},
	}
	for _, tt := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+" "+tt.name, func(t *testing.T) {
				t.Parallel()
				fx := newFixture(t)
				fx.do(method, "/v2/x/manifests/latest", tt.header...)
				calls := fx.src.called()
				if len(calls) != 1 || !slices.Equal(calls[0].accept, tt.want) {
					t.Errorf("source calls %+v, want accept %q", calls, tt.want)
				}
			})
		}
	}
}

func TestErrorFor(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("fetch from peer 12D3: %w", err) }
	tests := []struct {
		err    error
		kind   kind
		status int
		code   string
		result string
	}{
		{wrap(ErrNotFound), kindBlob, 404, "BLOB_UNKNOWN", "not_found"},
		{wrap(ErrNotFound), kindManifest, 404, "MANIFEST_UNKNOWN", "not_found"},
		{wrap(ErrNotFound), kindOther, 404, "NAME_UNKNOWN", "not_found"},
		{wrap(ErrTooLarge), kindManifest, 404, "MANIFEST_UNKNOWN", "not_found"},
		{wrap(ErrTooLarge), kindBlob, 404, "BLOB_UNKNOWN", "not_found"},
		{wrap(ErrDenied), kindBlob, 403, "DENIED", "denied"},
		{wrap(ErrTooManyRequests), kindManifest, 429, "TOOMANYREQUESTS", "rate_limited"},
		{wrap(ErrUnavailable), kindBlob, 503, "UNAVAILABLE", "unavailable"},
		{wrap(context.DeadlineExceeded), kindManifest, 503, "UNAVAILABLE", "unavailable"},
		{wrap(context.Canceled), kindBlob, statusClientClosed, "", "canceled"},
		{errors.New("disk on fire"), kindBlob, 500, "UNKNOWN", "error"},
		{errContentMismatch, kindManifest, 500, "UNKNOWN", "error"},
		// A sentinel wrapped together with a cancellation is still answered as itself.
		{fmt.Errorf("%w: %w", ErrUnavailable, context.Canceled), kindBlob, 503, "UNAVAILABLE", "unavailable"},
		{fmt.Errorf("%w: %w", ErrNotFound, errors.New("origin said 404")), kindManifest, 404, "MANIFEST_UNKNOWN", "not_found"},

		{ErrNameInvalid, kindBlob, 400, "NAME_INVALID", "bad_request"},
		{ErrTagInvalid, kindManifest, 400, "NAME_INVALID", "bad_request"},
		{ErrNamespaceInvalid, kindManifest, 400, "NAME_INVALID", "bad_request"},
		{errMalformedQuery, kindBlob, 400, "NAME_INVALID", "bad_request"},
		{wrap(ErrDigestInvalid), kindBlob, 400, "DIGEST_INVALID", "bad_request"},
		{ErrRangeInvalid, kindBlob, 416, "RANGE_INVALID", "bad_request"},
		{ErrRangeNotSatisfiable, kindBlob, 416, "RANGE_INVALID", "bad_request"},
		{errUnknownRegistry, kindBlob, 404, "NAME_UNKNOWN", "not_found"},
		{errUnsupported, kindOther, 404, "UNSUPPORTED", "not_found"},
		{errOutside, kindOther, 404, "UNSUPPORTED", "not_found"},
		{errMethod, kindManifest, 405, "UNSUPPORTED", "bad_request"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%v", tt.kind, tt.err), func(t *testing.T) {
			t.Parallel()
			got := errorFor(tt.kind, tt.err)
			if got.status != tt.status || got.code != tt.code || got.result != tt.result {
				t.Errorf("errorFor(%v, %v) = %d %s %s, want %d %s %s",
					tt.kind, tt.err, got.status, got.code, got.result, tt.status, tt.code, tt.result)
			}
			if got.status >= 500 && got.code == "BLOB_UNKNOWN" || got.status >= 500 && got.code == "MANIFEST_UNKNOWN" {
				t.Errorf("errorFor(%v) = %d: never a 5xx for not found", tt.err, got.status)
			}
		})
	}
}

func TestSourceErrors(t *testing.T) {
	t.Parallel()
	const secret = "open /var/lib/shoal/secret-path: permission denied"
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("origin: %w", ErrNotFound), 404, ""},
		{fmt.Errorf("%w: %s", ErrDenied, secret), 403, "DENIED"},
		{ErrTooManyRequests, 429, "TOOMANYREQUESTS"},
		{ErrUnavailable, 503, "UNAVAILABLE"},
		{ErrTooLarge, 404, ""},
		{errors.New(secret), 500, "UNKNOWN"},
	}
	targets := map[string]string{
		"blob":     "/v2/x/blobs/" + testBlobDigest.String(),
		"manifest": "/v2/x/manifests/latest",
	}
	for _, tt := range tests {
		for kind, target := range targets {
			for _, method := range []string{"GET", "HEAD"} {
				t.Run(fmt.Sprint(tt.err, kind, method), func(t *testing.T) {
					t.Parallel()
					fx := newFixture(t)
					fx.src.err = tt.err
					w := fx.do(method, target)
					if w.Code != tt.status {
						t.Fatalf("%s %s = %d, want %d", method, kind, w.Code, tt.status)
					}
					if method == "HEAD" {
						if w.Body.Len() != 0 {
							t.Errorf("HEAD error body %q, want none", w.Body)
						}
						return
					}
					code := errorCode(t, w)
					want := tt.code
					if want == "" {
						want = map[string]string{"blob": "BLOB_UNKNOWN", "manifest": "MANIFEST_UNKNOWN"}[kind]
					}
					if code != want {
						t.Errorf("error code %q, want %q", code, want)
					}
					if strings.Contains(w.Body.String(), "secret") {
						t.Errorf("error body %q leaks the source's error", w.Body)
					}
					if tt.status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
						t.Error("429 without Retry-After")
					}
					if tt.status == http.StatusInternalServerError && !strings.Contains(fx.log.String(), "level=ERROR") {
						t.Errorf("500 not logged at Error: %s", fx.log)
					}
				})
			}
		}
	}
}

func TestClientGone(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.src.err = context.Canceled
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := httptest.NewRequestWithContext(ctx, "GET", "/v2/x/blobs/"+testBlobDigest.String(), nil)
	w := httptest.NewRecorder()
	fx.srv.ServeHTTP(w, r)
	if w.Body.Len() != 0 {
		t.Errorf("body %q for a client that has gone, want none", w.Body)
	}
	if got := counterValue(t, fx.reg, "shoal_registry_requests_total", "kind", "blob", "method", "GET", "result", "canceled"); got != 1 {
		t.Errorf("canceled requests = %v, want 1", got)
	}

	// A cancellation inside the source while the client waits is no reason for a 200.
	w = fx.do("GET", "/v2/x/blobs/"+testBlobDigest.String())
	if w.Code < 400 {
		t.Errorf("GET with a source cancelled under it = %d, want an error status", w.Code)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	blobs := []Blob{
		newMemBlob(testBlob),
		newFileBlob(t, testBlob, -1),
		&sourcedBlob{newMemBlob(testBlob), "download"},
		&sourcedBlob{newMemBlob(testBlob), "cache"},
		&sourcedBlob{newMemBlob(testBlob), "a digest or peer ID: never a label"},
	}
	next := 0
	fx.src.blob = func([]byte) Blob { b := blobs[next]; next++; return b }
	target := "/v2/x/blobs/" + testBlobDigest.String()
	for range blobs {
		if w := fx.do("GET", target, "Range", "bytes=0-9"); w.Code != http.StatusPartialContent {
			t.Fatalf("GET = %d", w.Code)
		}
	}
	fx.do("HEAD", target)
	fx.do("GET", "/v2/x/manifests/latest")
	fx.do("GET", "/v2/x/manifests/nope")
	fx.do("GET", "/v2/")
	fx.do("PUT", "/v2/x/manifests/latest")
	fx.do("GET", "/v2/x/blobs/latest")

	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"kind", "blob", "method", "GET", "result", "ok"}, 5},
		{[]string{"kind", "blob", "method", "HEAD", "result", "ok"}, 1},
		{[]string{"kind", "manifest", "method", "GET", "result", "ok"}, 1},
		{[]string{"kind", "manifest", "method", "GET", "result", "not_found"}, 1},
		{[]string{"kind", "other", "method", "GET", "result", "ok"}, 1},
		{[]string{"kind", "manifest", "method", "other", "result", "bad_request"}, 1},
		{[]string{"kind", "blob", "method", "GET", "result", "bad_request"}, 1},
	} {
		if got := counterValue(t, fx.reg, "shoal_registry_requests_total", tt.labels...); got != tt.want {
			t.Errorf("shoal_registry_requests_total%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	for source, want := range map[string]float64{"download": 20, "cache": 20, "other": 10} {
		if got := counterValue(t, fx.reg, "shoal_blob_served_bytes_total", "source", source); got != want {
			t.Errorf("shoal_blob_served_bytes_total{source=%q} = %v, want %v", source, got, want)
		}
	}
	if got := fx.srv.CacheBytesServed(); got != 20 {
		t.Errorf("CacheBytesServed() = %d, want 20", got)
	}
	if got := histogramCount(t, fx.reg, "shoal_registry_request_duration_seconds", "kind", "blob"); got != 7 {
		t.Errorf("blob duration observations = %d, want 7", got)
	}
}

// counterValue reads one counter from reg; labels alternate names and values.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	c, _ := metricValue(t, reg, name, labels...)
	return c
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels ...string) uint64 {
	t.Helper()
	_, n := metricValue(t, reg, name, labels...)
	return n
}

// metricValue finds the series of name with exactly labels and returns its counter value
// and its histogram sample count (whichever applies).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, uint64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels)/2 {
				continue
			}
			for _, lp := range m.GetLabel() {
				i := slices.Index(labels, lp.GetName())
				if i < 0 || i%2 == 1 || labels[i+1] != lp.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue(), m.GetHistogram().GetSampleCount()
		}
	}
	return 0, 0
}

func TestLogging(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.src.blob = func(b []byte) Blob { return &fetchedBlob{newMemBlob(b), 12, 8} }
	fx.do("GET", "/v2/library/alpine/blobs/"+testBlobDigest.String())
	fx.do("HEAD", "/v2/library/alpine/blobs/"+testBlobDigest.String())
	lines := strings.Split(strings.TrimSpace(fx.log.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log = %q, want two lines", lines)
	}
	// A pulled blob: one line at Info, with where its bytes came from.
	for _, want := range []string{"level=INFO", `msg="blob pulled"`, "repo=docker.io/library/alpine", "digest=" + testBlobDigest.String(), "bytes=20", "duration=", "source=download", "peerBytes=12", "originBytes=8"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log %q lacks %q", lines[0], want)
		}
	}
	for _, want := range []string{"level=DEBUG", `msg="registry request"`, "method=HEAD"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("log %q lacks %q", lines[1], want)
		}
	}
}

// fetchedBlob says how many of its bytes came from peers and from the origin.
type fetchedBlob struct {
	*memBlob
	peers, origin int64
}

func (b *fetchedBlob) Fetched() (int64, int64) { return b.peers, b.origin }

func TestNoLogger(t *testing.T) {
	t.Parallel()
	src := newFakeSource(t)
	srv, err := NewServer(Options{Blobs: src, Manifests: src, Registries: []string{"ghcr.io"}})
	if err != nil {
		t.Fatal(err)
	}
	src.err = errors.New("boom")
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest("GET", "/v2/x/manifests/latest?ns=ghcr.io", nil))
	if w.Code != http.StatusInternalServerError {
		t.Errorf("GET = %d, want 500", w.Code)
	}
}
