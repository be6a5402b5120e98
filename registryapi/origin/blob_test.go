package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func testBlob(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b) // ChaCha8 fills b and never fails
	return b
}

// rangeHandler serves blob with proper Range support (206, 416 with the size).
func rangeHandler(blob []byte) http.HandlerFunc {
	d := digest.FromBytes(blob)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}
}

// wholeHandler ignores Range and always sends the whole blob.
func wholeHandler(blob []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.Write(blob)
	}
}

func TestBlobFromRegistry(t *testing.T) {
	t.Parallel()
	s, img, _ := ggcrRegistry(t)
	c, _ := clientFor(t, s)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		h, _ := l.Digest()
		d := digest.Digest(h.String())
		rc, _ := l.Compressed()
		blob, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(blob))
		t.Run(fmt.Sprintf("layer%d", i), func(t *testing.T) {
			t.Parallel()
			got, err := c.HeadBlob(t.Context(), s.host(), "test/app", d)
			if err != nil || got != size {
				t.Errorf("HeadBlob(%s) = %d, %v, want %d", d, got, err, size)
			}
			for _, r := range [][2]int64{{0, -1}, {0, size}, {10, 20}, {10, -1}, {size - 5, 100}, {size, -1}} {
				checkGetBlob(t, c, s.host(), "test/app", d, r[0], r[1], blob)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		d := digest.FromString("missing")
		if _, err := c.HeadBlob(t.Context(), s.host(), "test/app", d); !errors.Is(err, ErrNotFound) {
			t.Errorf("HeadBlob(%s) = %v, want %v", d, err, ErrNotFound)
		}
		if _, _, err := c.GetBlob(t.Context(), s.host(), "test/app", d, 0, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetBlob(%s) = %v, want %v", d, err, ErrNotFound)
		}
	})
}

// checkGetBlob reads [offset, offset+length) of blob through c and compares.
func checkGetBlob(t *testing.T, c *Client, registry, repo string, d digest.Digest, offset, length int64, blob []byte) {
	t.Helper()
	rc, size, err := c.GetBlob(t.Context(), registry, repo, d, offset, length)
	if err != nil {
		t.Errorf("GetBlob(%s, %d, %d) = %v", d, offset, length, err)
		return
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	end := int64(len(blob))
	if length >= 0 {
		end = min(end, offset+length)
	}
	want := blob[offset:end]
	if err != nil || !bytes.Equal(got, want) || size != int64(len(blob)) {
		t.Errorf("GetBlob(%s, %d, %d) = %d bytes (size %d), %v, want %d bytes (size %d)",
			d, offset, length, len(got), size, err, len(want), len(blob))
	}
}

func TestGetBlobRanges(t *testing.T) {
	t.Parallel()
	blob := testBlob(1000)
	d := digest.FromBytes(blob)
	handlers := map[string]http.HandlerFunc{
		"range":  rangeHandler(blob),
		"ignore": wholeHandler(blob),
	}
	tests := []struct {
		offset, length int64
		wantRange      string
		wantErr        error
	}{
		{0, -1, "", nil},
		{0, 1000, "bytes=0-999", nil},
		{0, 1, "bytes=0-0", nil},
		{10, 20, "bytes=10-29", nil},
		{10, -1, "bytes=10-", nil},
		{990, 100, "bytes=990-1089", nil},
		{999, -1, "bytes=999-", nil},
		{1000, -1, "bytes=1000-", nil},
		{1000, 5, "bytes=1000-1004", nil},
		{5, 1 << 62, "bytes=5-4611686018427387908", nil},
		{1001, -1, "bytes=1001-", ErrRangeNotSatisfiable},
		{5000, 10, "bytes=5000-5009", ErrRangeNotSatisfiable},
	}
	for hname, h := range handlers {
		t.Run(hname, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, h)
			c, _ := clientFor(t, s)
			for _, tt := range tests {
				if tt.wantErr != nil {
					rc, _, err := c.GetBlob(t.Context(), s.host(), "a/b", d, tt.offset, tt.length)
					if !errors.Is(err, tt.wantErr) {
						t.Errorf("GetBlob(%d, %d) = %v, want %v", tt.offset, tt.length, err, tt.wantErr)
					}
					if rc != nil {
						rc.Close()
					}
					continue
				}
				checkGetBlob(t, c, s.host(), "a/b", d, tt.offset, tt.length, blob)
				if got := s.last().Header.Get("Range"); got != tt.wantRange {
					t.Errorf("GetBlob(%d, %d) sent Range %q, want %q", tt.offset, tt.length, got, tt.wantRange)
				}
			}
		})
	}
}

func TestGetBlobZeroLength(t *testing.T) {
	t.Parallel()
	blob := testBlob(100)
	d := digest.FromBytes(blob)
	s := newServer(t, rangeHandler(blob))
	c, _ := clientFor(t, s)
	for _, offset := range []int64{0, 50, 100} {
		rc, size, err := c.GetBlob(t.Context(), s.host(), "a", d, offset, 0)
		if err != nil || size != 100 {
			t.Fatalf("GetBlob(%d, 0) = %d, %v, want 100, nil", offset, size, err)
		}
		if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
			t.Errorf("GetBlob(%d, 0) body = %d bytes, %v, want none", offset, len(b), err)
		}
		rc.Close()
	}
	if _, _, err := c.GetBlob(t.Context(), s.host(), "a", d, 101, 0); !errors.Is(err, ErrRangeNotSatisfiable) {
		t.Errorf("GetBlob(101, 0) = %v, want %v", err, ErrRangeNotSatisfiable)
	}
	if _, _, err := c.GetBlob(t.Context(), s.host(), "a", d, -1, 10); err == nil {
		t.Errorf("GetBlob(-1, 10) = nil, want an error")
	}
	if _, _, err := c.GetBlob(t.Context(), s.host(), "a", "sha256:nope", 0, 10); err == nil {
		t.Errorf("GetBlob(sha256:nope) = nil, want an error")
	}
}

func TestGetBlobShort(t *testing.T) {
	t.Parallel()
	blob := testBlob(1000)
	d := digest.FromBytes(blob)
	tests := []struct {
		name           string
		h              http.HandlerFunc
		offset, length int64
		// wantGetErr is expected from GetBlob itself; otherwise reading must fail with
		// io.ErrUnexpectedEOF.
		wantGetErr error
	}{
		{"declared length not sent", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.Write(blob[:500])
		}, 0, -1, nil},
		{"partial shorter than its range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/1000")
			w.Header().Set("Content-Length", "50")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[:50])
		}, 0, 100, nil},
		{"partial shorter than the rest", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 100-499/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[100:500])
		}, 100, -1, nil},
		{"chunked shorter than asked", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			w.Write(blob[:50])
		}, 0, 100, nil},
		{"ends before the offset", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.Write(blob[:500])
		}, 700, -1, ErrUnavailable},
		{"chunked ends before the offset", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			w.Write(blob[:500])
		}, 700, -1, ErrRangeNotSatisfiable},
		{"range elsewhere", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[:100])
		}, 10, 90, ErrUnavailable},
		{"bad content range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "items 0-99/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[:100])
		}, 0, 100, ErrUnavailable},
		{"partial without asking", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[:100])
		}, 0, -1, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/" {
					tt.h(w, r)
				}
			}))
			c, _ := clientFor(t, s)
			rc, _, err := c.GetBlob(t.Context(), s.host(), "a", d, tt.offset, tt.length)
			if tt.wantGetErr != nil {
				if !errors.Is(err, tt.wantGetErr) {
					t.Errorf("GetBlob(%d, %d) = %v, want %v", tt.offset, tt.length, err, tt.wantGetErr)
				}
				if rc != nil {
					rc.Close()
				}
				return
			}
			if err != nil {
				t.Fatalf("GetBlob(%d, %d) = %v", tt.offset, tt.length, err)
			}
			defer rc.Close()
			if _, err := io.ReadAll(rc); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading GetBlob(%d, %d) = %v, want %v", tt.offset, tt.length, err, io.ErrUnexpectedEOF)
			}
		})
	}
}

func TestHeadBlob(t *testing.T) {
	t.Parallel()
	blob := testBlob(1234)
	d := digest.FromBytes(blob)
	tests := []struct {
		name    string
		h       http.HandlerFunc
		want    int64
		wantErr error
	}{
		{"content length", rangeHandler(blob), 1234, nil},
		{"no content length", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				return // net/http sends no Content-Length for an empty HEAD answer
			}
			rangeHandler(blob)(w, r)
		}, 1234, nil},
		{"no size anywhere", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				return
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			w.Write(blob)
		}, 0, ErrUnavailable},
		{"other digest", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			w.Header().Set("Content-Length", "1234")
		}, 0, ErrDigestMismatch},
		{"not found", http.NotFound, 0, ErrNotFound},
		{"forbidden", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		}, 0, ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/" {
					tt.h(w, r)
				}
			}))
			c, _ := clientFor(t, s)
			got, err := c.HeadBlob(t.Context(), s.host(), "a", d)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("HeadBlob(%s) = %d, %v, want %d, %v", d, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in                string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-99/1000", 0, 99, 1000, true},
		{"bytes 10-10/11", 10, 10, 11, true},
		{"bytes 0-99/*", 0, 99, -1, true},
		{"bytes */1000", -1, -1, 1000, true},
		{"bytes */0", -1, -1, 0, true},
		{"bytes */*", 0, 0, 0, false},
		{"bytes 0-99/50", 0, 0, 0, false},
		{"bytes 99-0/1000", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 1-5", 0, 0, 0, false},
		{"bytes 1/5", 0, 0, 0, false},
		{"items 0-1/5", 0, 0, 0, false},
		{"bytes 0-1/99999999999999999999", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		first, last, size, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || (tt.ok && (first != tt.first || last != tt.last || size != tt.size)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v, want %d, %d, %d, ok %v",
				tt.in, first, last, size, err, tt.first, tt.last, tt.size, tt.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/1000", "bytes */10", "bytes 0-0/*", "bytes 5-4/10", "bytes 0-1/", "bytes --/-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, size, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first == -1 {
			if last != -1 || size < 0 {
				t.Fatalf("parseContentRange(%q) = %d, %d, %d", s, first, last, size)
			}
			return
		}
		if first < 0 || last < first || (size >= 0 && last >= size) || size < -1 {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d", s, first, last, size)
		}
	})
}

func TestRangeHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		offset, length int64
		want           string
	}{
		{0, 1, "bytes=0-0"},
		{10, -1, "bytes=10-"},
		{10, 5, "bytes=10-14"},
		{1 << 62, 1 << 62, "bytes=4611686018427387904-9223372036854775807"},
		{1 << 62, 1<<62 + 1, "bytes=4611686018427387904-"},
		{0, math.MaxInt64, "bytes=0-9223372036854775806"},
	}
	for _, tt := range tests {
		if got := rangeHeader(tt.offset, tt.length); got != tt.want {
			t.Errorf("rangeHeader(%d, %d) = %q, want %q", tt.offset, tt.length, got, tt.want)
		}
	}
}
