package origin

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

func TestManifestFromRegistry(t *testing.T) {
	t.Parallel()
	s, img, idx := ggcrRegistry(t)
	c, _ := clientFor(t, s)
	imgRaw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()
	imgType, _ := img.MediaType()
	idxRaw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	idxType, _ := idx.MediaType()

	tests := []struct {
		repo, ref string
		want      Manifest
	}{
		{"test/app", "v1", Manifest{digest.Digest(imgDigest.String()), string(imgType), imgRaw}},
		{"test/app", imgDigest.String(), Manifest{digest.Digest(imgDigest.String()), string(imgType), imgRaw}},
		{"test/index", "v1", Manifest{digest.Digest(idxDigest.String()), string(idxType), idxRaw}},
		{"test/index", idxDigest.String(), Manifest{digest.Digest(idxDigest.String()), string(idxType), idxRaw}},
	}
	for _, tt := range tests {
		t.Run(tt.repo+"@"+tt.ref, func(t *testing.T) {
			t.Parallel()
			m, err := c.GetManifest(t.Context(), s.host(), tt.repo, tt.ref, nil)
			if err != nil {
				t.Fatalf("GetManifest(%s) = %v", tt.ref, err)
			}
			if m.Digest != tt.want.Digest || m.MediaType != tt.want.MediaType || !bytes.Equal(m.Body, tt.want.Body) {
				t.Errorf("GetManifest(%s) = %s %s (%d bytes), want %s %s (%d bytes)", tt.ref,
					m.Digest, m.MediaType, len(m.Body), tt.want.Digest, tt.want.MediaType, len(tt.want.Body))
			}
			desc, err := c.HeadManifest(t.Context(), s.host(), tt.repo, tt.ref, nil)
			if err != nil {
				t.Fatalf("HeadManifest(%s) = %v", tt.ref, err)
			}
			want := Descriptor{tt.want.Digest, tt.want.MediaType, int64(len(tt.want.Body))}
			if desc != want {
				t.Errorf("HeadManifest(%s) = %+v, want %+v", tt.ref, desc, want)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		for _, ref := range [][2]string{
			{"test/app", "nope"},
			{"test/app", digest.FromString("nope").String()},
			{"test/none", "v1"},
		} {
			if _, err := c.GetManifest(t.Context(), s.host(), ref[0], ref[1], nil); !errors.Is(err, ErrNotFound) {
				t.Errorf("GetManifest(%s:%s) = %v, want %v", ref[0], ref[1], err, ErrNotFound)
			}
			if _, err := c.HeadManifest(t.Context(), s.host(), ref[0], ref[1], nil); !errors.Is(err, ErrNotFound) {
				t.Errorf("HeadManifest(%s:%s) = %v, want %v", ref[0], ref[1], err, ErrNotFound)
			}
		}
	})
}

// manifestHandler serves one manifest body for every manifest request, letting the test
// choose headers.
type manifestHandler struct {
	body        []byte
	contentType string // "-" for none
	digest      string // Docker-Content-Digest; "" for none
	// headDigest and headLength override the HEAD answer; "-" leaves the header out.
	headDigest, headLength string
	chunked                bool // send without Content-Length
}

func (h *manifestHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if h.contentType != "-" {
		w.Header().Set("Content-Type", h.contentType)
	}
	if h.digest != "" {
		w.Header().Set("Docker-Content-Digest", h.digest)
	}
	if r.Method == http.MethodHead {
		length := strconv.Itoa(len(h.body))
		if h.headLength != "" {
			length = h.headLength
		}
		if length != "-" {
			w.Header().Set("Content-Length", length)
		}
		if h.headDigest == "-" {
			w.Header().Del("Docker-Content-Digest")
		} else if h.headDigest != "" {
			w.Header().Set("Docker-Content-Digest", h.headDigest)
		}
		return
	}
	if h.chunked {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(h.body)))
	}
	w.Write(h.body)
}

func TestGetManifest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	d := digest.FromBytes(body)
	tampered := bytes.Replace(body, []byte("layers"), []byte("lay3rs"), 1)
	noType := []byte(`{"schemaVersion":2,"manifests":[]}`)
	big := bytes.Repeat([]byte("a"), MaxManifestSize+1)
	exact := bytes.Repeat([]byte("a"), MaxManifestSize)
	ociType := "application/vnd.oci.image.manifest.v1+json"

	tests := []struct {
		name    string
		h       manifestHandler
		ref     string
		want    Manifest
		wantErr error
	}{
		{name: "by tag", h: manifestHandler{body: body, contentType: ociType, digest: d.String()}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "by tag without digest header", h: manifestHandler{body: body, contentType: ociType}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "by digest", h: manifestHandler{body: body, contentType: ociType, digest: d.String()}, ref: d.String(),
			want: Manifest{d, ociType, body}},
		{name: "by sha512 digest", h: manifestHandler{body: body, contentType: ociType}, ref: digest.SHA512.FromBytes(body).String(),
			want: Manifest{digest.SHA512.FromBytes(body), ociType, body}},
		{name: "sha512 announced", h: manifestHandler{body: body, contentType: ociType, digest: digest.SHA512.FromBytes(body).String()}, ref: "v1",
			want: Manifest{digest.SHA512.FromBytes(body), ociType, body}},
		{name: "content type parameters", h: manifestHandler{body: body, contentType: ociType + "; charset=utf-8"}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "no content type", h: manifestHandler{body: body, contentType: "-"}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "generic content type", h: manifestHandler{body: body, contentType: "application/json"}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "index without media type", h: manifestHandler{body: noType, contentType: "text/plain"}, ref: "v1",
			want: Manifest{digest.FromBytes(noType), string(types.OCIImageIndex), noType}},
		{name: "chunked", h: manifestHandler{body: body, contentType: ociType, chunked: true}, ref: "v1",
			want: Manifest{d, ociType, body}},
		{name: "exactly the limit", h: manifestHandler{body: exact, contentType: ociType}, ref: "v1",
			want: Manifest{digest.FromBytes(exact), ociType, exact}},
		{name: "too large", h: manifestHandler{body: big, contentType: ociType}, ref: "v1", wantErr: ErrTooLarge},
		{name: "too large chunked", h: manifestHandler{body: big, contentType: ociType, chunked: true}, ref: "v1", wantErr: ErrTooLarge},
		{name: "tampered by digest", h: manifestHandler{body: tampered, contentType: ociType}, ref: d.String(), wantErr: ErrDigestMismatch},
		{name: "tampered by tag", h: manifestHandler{body: tampered, contentType: ociType, digest: d.String()}, ref: "v1", wantErr: ErrDigestMismatch},
		{name: "tampered sha512 announced", h: manifestHandler{body: tampered, contentType: ociType, digest: digest.SHA512.FromBytes(body).String()}, ref: "v1", wantErr: ErrDigestMismatch},
		{name: "malformed digest header", h: manifestHandler{body: body, contentType: ociType, digest: "sha256:zz"}, ref: "v1", wantErr: ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &tt.h)
			c, _ := clientFor(t, s)
			m, err := c.GetManifest(t.Context(), s.host(), "test/app", tt.ref, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GetManifest(%s) = %v, want %v", tt.ref, err, tt.wantErr)
				}
				if n := s.count(http.MethodGet, "/manifests/"+tt.ref); n != 1 {
					t.Errorf("GetManifest(%s) made %d requests, want 1 (no retry)", tt.ref, n)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetManifest(%s) = %v, want nil", tt.ref, err)
			}
			if m.Digest != tt.want.Digest || m.MediaType != tt.want.MediaType || !bytes.Equal(m.Body, tt.want.Body) {
				t.Errorf("GetManifest(%s) = %s %q (%d bytes), want %s %q (%d bytes)", tt.ref,
					m.Digest, m.MediaType, len(m.Body), tt.want.Digest, tt.want.MediaType, len(tt.want.Body))
			}
		})
	}
}

func TestHeadManifest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	d := digest.FromBytes(body)
	ociType := "application/vnd.oci.image.manifest.v1+json"
	want := Descriptor{d, ociType, int64(len(body))}
	tests := []struct {
		name     string
		h        manifestHandler
		ref      string
		want     Descriptor
		wantErr  error
		wantGets int // GET requests made to fall back
	}{
		{name: "complete head", h: manifestHandler{body: body, contentType: ociType, digest: d.String()}, ref: "v1", want: want},
		{name: "by digest", h: manifestHandler{body: body, contentType: ociType, digest: d.String()}, ref: d.String(), want: want},
		{name: "no digest header", h: manifestHandler{body: body, contentType: ociType, digest: d.String(), headDigest: "-"}, ref: "v1", want: want, wantGets: 1},
		{name: "no length", h: manifestHandler{body: body, contentType: ociType, digest: d.String(), headLength: "-"}, ref: "v1", want: want, wantGets: 1},
		{name: "generic type", h: manifestHandler{body: body, contentType: "application/octet-stream", digest: d.String()}, ref: "v1", want: want, wantGets: 1},
		{name: "other algorithm", h: manifestHandler{body: body, contentType: ociType, digest: d.String()}, ref: digest.SHA512.FromBytes(body).String(),
			want: Descriptor{digest.SHA512.FromBytes(body), ociType, int64(len(body))}, wantGets: 1},
		{name: "mismatch", h: manifestHandler{body: body, contentType: ociType, digest: digest.FromString("other").String()}, ref: d.String(), wantErr: ErrDigestMismatch},
		{name: "too large", h: manifestHandler{body: body, contentType: ociType, digest: d.String(), headLength: strconv.Itoa(MaxManifestSize + 1)}, ref: "v1", wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &tt.h)
			c, _ := clientFor(t, s)
			desc, err := c.HeadManifest(t.Context(), s.host(), "test/app", tt.ref, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("HeadManifest(%s) = %v, want %v", tt.ref, err, tt.wantErr)
				}
				return
			}
			if err != nil || desc != tt.want {
				t.Fatalf("HeadManifest(%s) = %+v, %v, want %+v", tt.ref, desc, err, tt.want)
			}
			if n := s.count(http.MethodGet, "/manifests/"+tt.ref); n != tt.wantGets {
				t.Errorf("HeadManifest(%s) made %d GET requests, want %d", tt.ref, n, tt.wantGets)
			}
		})
	}
}

func TestManifestAccept(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	tests := []struct {
		name   string
		accept []string
		want   string
	}{
		{"default", nil, "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
			"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"},
		{"given", []string{"application/vnd.oci.image.index.v1+json", "*/*"}, "application/vnd.oci.image.index.v1+json, */*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, &manifestHandler{body: body, contentType: "application/vnd.oci.image.index.v1+json"})
			c, _ := clientFor(t, s)
			if _, err := c.GetManifest(t.Context(), s.host(), "a", "v1", tt.accept); err != nil {
				t.Fatalf("GetManifest = %v", err)
			}
			if got := s.last().Header.Get("Accept"); got != tt.want {
				t.Errorf("Accept = %q, want %q", got, tt.want)
			}
			if _, err := c.HeadManifest(t.Context(), s.host(), "a", "v1", tt.accept); err != nil {
				t.Fatalf("HeadManifest = %v", err)
			}
			if got := s.last().Header.Get("Accept"); got != tt.want {
				t.Errorf("HEAD Accept = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestManifestPathEscaping(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	s := newServer(t, &manifestHandler{body: body, contentType: "application/vnd.oci.image.index.v1+json"})
	c, _ := clientFor(t, s)
	tests := []struct {
		repo, ref string
		wantPath  string // escaped path the server sees; "" means refused without a request
	}{
		{"library/alpine", "3.20", "/v2/library/alpine/manifests/3.20"},
		{"a/b", "x/y", "/v2/a/b/manifests/x%2Fy"},
		{"a", "x?y#z", "/v2/a/manifests/x%3Fy%23z"},
		{"a b/c", "t", "/v2/a%20b/c/manifests/t"},
		{"a/../b", "t", ""},
		{"/a", "t", ""},
		{"a//b", "t", ""},
		{"", "t", ""},
		{"a", "", ""},
	}
	for _, tt := range tests {
		before := s.n.Load()
		_, err := c.GetManifest(t.Context(), s.host(), tt.repo, tt.ref, nil)
		if tt.wantPath == "" {
			if err == nil || s.n.Load() != before {
				t.Errorf("GetManifest(%q, %q) = %v after %d requests, want an error and none", tt.repo, tt.ref, err, s.n.Load()-before)
			}
			continue
		}
		if err != nil {
			t.Errorf("GetManifest(%q, %q) = %v", tt.repo, tt.ref, err)
			continue
		}
		if got := s.last().URL.EscapedPath(); got != tt.wantPath {
			t.Errorf("GetManifest(%q, %q) requested %q, want %q", tt.repo, tt.ref, got, tt.wantPath)
		}
	}
}

func TestMediaType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		contentType, body, want string
	}{
		{"application/vnd.oci.image.index.v1+json", `{}`, "application/vnd.oci.image.index.v1+json"},
		{"Application/Vnd.Docker.Distribution.Manifest.V2+json; charset=utf-8", `{}`, "application/vnd.docker.distribution.manifest.v2+json"},
		{"", `{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}`, "application/vnd.docker.distribution.manifest.list.v2+json"},
		{"application/json", `{"schemaVersion":2,"config":{}}`, "application/vnd.oci.image.manifest.v1+json"},
		{"application/json", `{"schemaVersion":2,"manifests":[]}`, "application/vnd.oci.image.index.v1+json"},
		{"application/json", `{"schemaVersion":1,"fsLayers":[]}`, "application/json"},
		{"", `not json`, ""},
		{"text/plain;;", `{"mediaType":"x/y"}`, "x/y"},
	}
	for _, tt := range tests {
		if got := mediaType(tt.contentType, []byte(tt.body)); got != tt.want {
			t.Errorf("mediaType(%q, %s) = %q, want %q", tt.contentType, tt.body, got, tt.want)
		}
	}
}

func TestRefString(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	if got, want := refString("a/b", "v1"), "a/b:v1"; got != want {
		t.Errorf("refString = %q, want %q", got, want)
	}
	if got, want := refString("a/b", d.String()), "a/b@"+d.String(); got != want {
		t.Errorf("refString = %q, want %q", got, want)
	}
	if !strings.Contains((&StatusError{StatusCode: 404, Code: "MANIFEST_UNKNOWN", Message: "gone"}).Error(), "MANIFEST_UNKNOWN: gone") {
		t.Errorf("StatusError does not carry the OCI error code")
	}
}
