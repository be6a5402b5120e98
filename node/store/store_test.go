package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock moves one second per reading, so every file the store stamps gets a distinct,
// increasing mtime whatever the filesystem's timestamp resolution.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// evictions records OnEvict calls.
type evictions struct {
	mu sync.Mutex
	ds []digest.Digest
}

func (e *evictions) add(d digest.Digest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ds = append(e.ds, d)
}

func (e *evictions) list() []digest.Digest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ds)
}

// syncBuffer is a log sink safe for the store's concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func openStore(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.now == nil {
		opts.now = newClock().now
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", opts.Dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// blobData returns size bytes of content distinct for each id.
func blobData(id, size int) (digest.Digest, []byte) {
	b := []byte(strings.Repeat(fmt.Sprintf("blob %d;", id), size/6+1)[:size])
	return digest.FromBytes(b), b
}

func mustPut(t *testing.T, s *Store, data []byte, mediaType string) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	if err := s.Put(d, mediaType, data); err != nil {
		t.Fatalf("Put(%s) = %v, want nil", d, err)
	}
	return d
}

func readBlob(t *testing.T, s *Store, d digest.Digest) []byte {
	t.Helper()
	b, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", d, err)
	}
	defer b.Close()
	buf := make([]byte, b.Size())
	if n, err := b.ReadAt(buf, 0); err != nil || n != len(buf) {
		t.Fatalf("ReadAt(%s) = %d, %v, want %d, nil", d, n, err, len(buf))
	}
	return buf
}

func wantHeld(t *testing.T, s *Store, held, gone []digest.Digest) {
	t.Helper()
	for _, d := range held {
		if _, err := s.Stat(d); err != nil {
			t.Errorf("Stat(%s) = %v, want held", d, err)
		}
	}
	for _, d := range gone {
		if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%s) = %v, want %v", d, err, ErrNotFound)
		}
		if _, err := os.Stat(s.blobPath(d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("file of %s: %v, want removed", d, err)
		}
	}
}

// names lists a directory, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s) = %v", dir, err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestPutStatOpen(t *testing.T) {
	t.Parallel()
	manifest := []byte(`{"schemaVersion":2}`)
	tests := []struct {
		name      string
		digest    digest.Digest
		mediaType string
		data      []byte
	}{
		{"manifest", digest.FromBytes(manifest), "application/vnd.oci.image.manifest.v1+json", manifest},
		{"no media type", digest.FromString("layer"), "", []byte("layer")},
		{"sha512", digest.SHA512.FromString("layer"), "application/octet-stream", []byte("layer")},
		{"empty", digest.FromBytes(nil), "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, Options{})
			if err := s.Put(tc.digest, tc.mediaType, tc.data); err != nil {
				t.Fatalf("Put(%s) = %v, want nil", tc.digest, err)
			}
			if err := s.Put(tc.digest, tc.mediaType, tc.data); err != nil {
				t.Fatalf("second Put(%s) = %v, want nil", tc.digest, err)
			}
			want := Info{Digest: tc.digest, Size: int64(len(tc.data)), MediaType: tc.mediaType}
			if info, err := s.Stat(tc.digest); err != nil || info != want {
				t.Fatalf("Stat(%s) = %+v, %v, want %+v, nil", tc.digest, info, err, want)
			}
			b, err := s.Open(tc.digest)
			if err != nil {
				t.Fatalf("Open(%s) = %v, want nil", tc.digest, err)
			}
			if b.Digest() != tc.digest || b.Size() != want.Size || b.MediaType() != tc.mediaType {
				t.Errorf("Open(%s) = %s, %d, %q, want %s, %d, %q", tc.digest, b.Digest(), b.Size(), b.MediaType(), tc.digest, want.Size, tc.mediaType)
			}
			got := make([]byte, b.Size())
			if _, err := b.File().ReadAt(got, 0); err != nil && len(got) > 0 {
				t.Fatalf("File().ReadAt = %v", err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Errorf("File() content = %q, want %q", got, tc.data)
			}
			if err := b.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			if err := b.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
			_, err = os.Stat(s.typePath(tc.digest))
			if hasSidecar := err == nil; hasSidecar != (tc.mediaType != "") {
				t.Errorf("media type sidecar present = %v, want %v", hasSidecar, tc.mediaType != "")
			}
			if st := s.Stats(); st.Bytes != want.Size || st.Blobs != 1 {
				t.Errorf("Stats() = %+v, want Bytes %d, Blobs 1", st, want.Size)
			}
		})
	}
}

func TestPutRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		digest    digest.Digest
		mediaType string
		want      error
	}{
		{"wrong content", digest.FromString("other"), "", ErrDigestMismatch},
		{"wrong algorithm", digest.SHA512.FromString("other"), "", ErrDigestMismatch},
		{"huge media type", digest.FromString("data"), strings.Repeat("x", maxMediaType+1), ErrOutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, Options{})
			if err := s.Put(tc.digest, tc.mediaType, []byte("data")); !errors.Is(err, tc.want) {
				t.Fatalf("Put(%s) = %v, want %v", tc.digest, err, tc.want)
			}
			if _, err := s.Stat(tc.digest); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(%s) = %v, want %v", tc.digest, err, ErrNotFound)
			}
			if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 0 {
				t.Errorf("tmp holds %v, want nothing", got)
			}
		})
	}
}

func TestInvalidDigest(t *testing.T) {
	t.Parallel()
	hex := digest.FromString("x").Encoded()
	tests := []digest.Digest{
		"sha256:../../etc",
		"sha256:../../../../tmp/" + digest.Digest(hex[:40]),
		"../sha256:" + digest.Digest(hex),
		"md5:abc",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"",
		"sha256:",
		":" + digest.Digest(hex),
		"sha256:" + digest.Digest(strings.ToUpper(hex)),
		"sha256:" + digest.Digest(hex[:63]),
		"sha512:" + digest.Digest(hex),
		"sha256:" + digest.Digest(hex[:62]) + "/x",
	}
	root := t.TempDir()
	s := openStore(t, Options{Dir: filepath.Join(root, "store")})
	for _, d := range tests {
		t.Run(string(d), func(t *testing.T) {
			if _, err := s.Stat(d); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Stat(%q) = %v, want %v", d, err, ErrInvalidDigest)
			}
			if _, err := s.Open(d); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Open(%q) = %v, want %v", d, err, ErrInvalidDigest)
			}
			if err := s.Put(d, "", []byte("x")); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Put(%q) = %v, want %v", d, err, ErrInvalidDigest)
			}
			if err := s.Delete(d); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("Delete(%q) = %v, want %v", d, err, ErrInvalidDigest)
			}
			if p, err := s.CreatePartial(d, 10, 4); !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("CreatePartial(%q) = %v, %v, want %v", d, p, err, ErrInvalidDigest)
			}
		})
	}
	if got, want := names(t, root), []string{"store"}; !slices.Equal(got, want) {
		t.Errorf("outside the store: %v, want %v", got, want)
	}
	for _, sub := range []string{blobsDir, partialDir, tmpDir} {
		if got := names(t, filepath.Join(root, "store", sub)); len(got) != 0 {
			t.Errorf("%s holds %v, want nothing", sub, got)
		}
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromString("absent")
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want %v", d, err, ErrNotFound)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(%s) = %v, want %v", d, err, ErrNotFound)
	}
	if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(%s) = %v, want %v", d, err, ErrNotFound)
	}
}

func TestOpenForgetsVanishedFile(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{OnEvict: ev.add})
	d := mustPut(t, s, []byte("here"), "")
	if err := os.Remove(s.blobPath(d)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open(%s) = %v, want %v", d, err, ErrNotFound)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want %v", d, err, ErrNotFound)
	}
	if got := ev.list(); !slices.Equal(got, []digest.Digest{d}) {
		t.Errorf("OnEvict calls = %v, want [%s]", got, d)
	}
}

func TestEvictLRU(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{Capacity: 300, OnEvict: ev.add})
	var ds []digest.Digest
	for i := range 3 {
		_, data := blobData(i, 100)
		ds = append(ds, mustPut(t, s, data, ""))
	}
	a, b, c := ds[0], ds[1], ds[2]
	readBlob(t, s, a) // a is now the most recently used

	_, data := blobData(3, 100)
	d := mustPut(t, s, data, "")

	wantHeld(t, s, []digest.Digest{a, c, d}, []digest.Digest{b})
	if got := ev.list(); !slices.Equal(got, []digest.Digest{b}) {
		t.Errorf("OnEvict calls = %v, want [%s]", got, b)
	}
	if got, want := s.Stats(), (Stats{Bytes: 300, Blobs: 3, Evictions: 1, Capacity: 300}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 0 {
		t.Errorf("tmp holds %v, want nothing", got)
	}
}

func TestPinBlocksEviction(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{Capacity: 200, OnEvict: ev.add})
	var ds []digest.Digest
	var pins []*Blob
	for i := range 2 {
		_, data := blobData(i, 100)
		d := mustPut(t, s, data, "")
		b, err := s.Open(d)
		if err != nil {
			t.Fatalf("Open(%s) = %v, want nil", d, err)
		}
		ds, pins = append(ds, d), append(pins, b)
	}
	// Everything else is pinned: the store goes over capacity rather than refuse.
	_, data := blobData(2, 100)
	c := mustPut(t, s, data, "")
	wantHeld(t, s, append(ds, c), nil)
	if got, want := s.Stats(), (Stats{Bytes: 300, Blobs: 3, Capacity: 200}); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}

	// The first unpin lets eviction catch up, starting with the least recently used.
	if err := pins[0].Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	wantHeld(t, s, []digest.Digest{ds[1], c}, []digest.Digest{ds[0]})
	if got, want := s.Stats(), (Stats{Bytes: 200, Blobs: 2, Evictions: 1, Capacity: 200}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	// A pinned blob stays readable and is never the one evicted.
	_, data = blobData(3, 100)
	d := mustPut(t, s, data, "")
	wantHeld(t, s, []digest.Digest{ds[1], d}, []digest.Digest{c})
	buf := make([]byte, 100)
	if _, err := pins[1].ReadAt(buf, 0); err != nil {
		t.Errorf("ReadAt of pinned blob = %v, want nil", err)
	}
	pins[1].Close()
	if got, want := ev.list(), []digest.Digest{ds[0], c}; !slices.Equal(got, want) {
		t.Errorf("OnEvict calls = %v, want %v", got, want)
	}
}

func TestLRUSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir, clk := t.TempDir(), newClock()
	s := openStore(t, Options{Dir: dir, now: clk.now})
	var ds []digest.Digest
	for i := range 3 {
		_, data := blobData(i, 100)
		ds = append(ds, mustPut(t, s, data, fmt.Sprintf("type/%d", i)))
	}
	a, b, c := ds[0], ds[1], ds[2]
	readBlob(t, s, a)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	var ev evictions
	s = openStore(t, Options{Dir: dir, Capacity: 300, now: clk.now, OnEvict: ev.add})
	var order []digest.Digest
	s.Walk(func(info Info) bool {
		order = append(order, info.Digest)
		return true
	})
	if want := []digest.Digest{a, c, b}; !slices.Equal(order, want) {
		t.Errorf("Walk order after reopen = %v, want %v", order, want)
	}
	for i, d := range ds {
		want := Info{Digest: d, Size: 100, MediaType: fmt.Sprintf("type/%d", i)}
		if info, err := s.Stat(d); err != nil || info != want {
			t.Errorf("Stat(%s) = %+v, %v, want %+v, nil", d, info, err, want)
		}
	}
	_, data := blobData(3, 100)
	d := mustPut(t, s, data, "")
	wantHeld(t, s, []digest.Digest{a, c, d}, []digest.Digest{b})
	if _, err := os.Stat(s.typePath(b)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("media type of evicted %s: %v, want removed", b, err)
	}
}

func TestOpenEvictsToSmallerCapacity(t *testing.T) {
	t.Parallel()
	dir, clk := t.TempDir(), newClock()
	s := openStore(t, Options{Dir: dir, now: clk.now})
	var ds []digest.Digest
	for i := range 3 {
		_, data := blobData(i, 100)
		ds = append(ds, mustPut(t, s, data, ""))
	}
	s.Close()

	var ev evictions
	s = openStore(t, Options{Dir: dir, Capacity: 200, now: clk.now, OnEvict: ev.add})
	wantHeld(t, s, ds[1:], ds[:1])
	if got := ev.list(); !slices.Equal(got, ds[:1]) {
		t.Errorf("OnEvict calls = %v, want %v", got, ds[:1])
	}
	if got := s.Stats().Evictions; got != 1 {
		t.Errorf("Stats().Evictions = %d, want 1", got)
	}
}

func TestDeletePinned(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{OnEvict: ev.add})
	_, data := blobData(0, 100)
	d := mustPut(t, s, data, "type")
	b, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", d, err)
	}
	if err := s.Delete(d); err != nil {
		t.Fatalf("Delete(%s) = %v, want nil", d, err)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) after Delete = %v, want %v", d, err, ErrNotFound)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(%s) after Delete = %v, want %v", d, err, ErrNotFound)
	}
	if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete(%s) = %v, want %v", d, err, ErrNotFound)
	}
	if got := ev.list(); !slices.Equal(got, []digest.Digest{d}) {
		t.Errorf("OnEvict calls = %v, want [%s]", got, d)
	}
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadAt of deleted pinned blob = %v, content equal %v, want nil, true", err, bytes.Equal(got, data))
	}
	if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 1 {
		t.Errorf("tmp holds %v, want the pinned file waiting", got)
	}

	// A fresh copy may arrive while the old one is still pinned; releasing the old pin must
	// not take the new copy with it.
	mustPut(t, s, data, "")
	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 0 {
		t.Errorf("tmp holds %v after last pin, want nothing", got)
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("content of new copy = %q, want %q", got, data)
	}
	if st := s.Stats(); st.Bytes != 100 || st.Blobs != 1 || st.Evictions != 0 {
		t.Errorf("Stats() = %+v, want Bytes 100, Blobs 1, Evictions 0", st)
	}
}

func TestDeleteUnpinned(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := mustPut(t, s, []byte("manifest"), "type")
	if err := s.Delete(d); err != nil {
		t.Fatalf("Delete(%s) = %v, want nil", d, err)
	}
	wantHeld(t, s, nil, []digest.Digest{d})
	for _, sub := range []string{filepath.Join(blobsDir, "sha256"), tmpDir} {
		if got := names(t, filepath.Join(s.dir, sub)); len(got) != 0 {
			t.Errorf("%s holds %v, want nothing", sub, got)
		}
	}
	if got, want := s.Stats(), (Stats{}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestWalk(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	want := map[digest.Digest]Info{}
	for i := range 3 {
		_, data := blobData(i, 10+i)
		d := mustPut(t, s, data, "t")
		want[d] = Info{Digest: d, Size: int64(10 + i), MediaType: "t"}
	}
	got := map[digest.Digest]Info{}
	s.Walk(func(info Info) bool {
		got[info.Digest] = info
		return true
	})
	if len(got) != len(want) {
		t.Errorf("Walk visited %d blobs, want %d", len(got), len(want))
	}
	for d, info := range want {
		if got[d] != info {
			t.Errorf("Walk gave %+v for %s, want %+v", got[d], d, info)
		}
	}
	calls := 0
	s.Walk(func(Info) bool {
		calls++
		return false
	})
	if calls != 1 {
		t.Errorf("Walk after false made %d calls, want 1", calls)
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := mustPut(t, s, []byte("x"), "")
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrClosed) {
		t.Errorf("Stat(%s) = %v, want %v", d, err, ErrClosed)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrClosed) {
		t.Errorf("Open(%s) = %v, want %v", d, err, ErrClosed)
	}
	if err := s.Put(digest.FromString("y"), "", []byte("y")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put = %v, want %v", err, ErrClosed)
	}
	if err := s.Delete(d); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete(%s) = %v, want %v", d, err, ErrClosed)
	}
	if _, err := s.CreatePartial(digest.FromString("z"), 1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("CreatePartial = %v, want %v", err, ErrClosed)
	}
}

func TestOpenRejectsOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"no dir", Options{}},
		{"negative capacity", Options{Dir: t.TempDir(), Capacity: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if s, err := Open(tc.opts); err == nil {
				s.Close()
				t.Errorf("Open(%+v) = nil error, want one", tc.opts)
			}
		})
	}
}

func TestOpenCleansUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	kept := mustPut(t, s, []byte("kept"), "type")
	s.Close()

	orphan := digest.FromString("orphan")
	half := digest.FromString("half")
	stale := digest.FromString("stale")
	write := func(rel string, data []byte) {
		t.Helper()
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tmpDir, "put-99"), []byte("junk"))
	write(filepath.Join(tmpDir, "trash-3"), []byte("junk"))
	write(filepath.Join(blobsDir, "sha256", orphan.Encoded()+typeSuffix), []byte("type"))
	write(filepath.Join(blobsDir, "sha256", "README"), []byte("not a blob"))
	write(filepath.Join(blobsDir, "md5", "abc"), []byte("not ours"))
	write(filepath.Join(partialDir, "sha256-"+half.Encoded()), make([]byte, 10))
	// A partial of content already committed is dead weight.
	write(filepath.Join(partialDir, "sha256-"+kept.Encoded()), make([]byte, 4))
	write(filepath.Join(partialDir, "sha256-"+kept.Encoded()+chunksSuffix), encodeChunks(4, 4, []byte{1}))
	write(filepath.Join(partialDir, "sha256-"+stale.Encoded()+chunksSuffix), encodeChunks(10, 4, []byte{1}))

	var logs syncBuffer
	s = openStore(t, Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := names(t, filepath.Join(dir, tmpDir)); len(got) != 0 {
		t.Errorf("tmp holds %v, want nothing", got)
	}
	want := []string{"README", kept.Encoded(), kept.Encoded() + typeSuffix}
	slices.Sort(want)
	if got := names(t, filepath.Join(dir, blobsDir, "sha256")); !slices.Equal(got, want) {
		t.Errorf("blobs/sha256 holds %v, want %v", got, want)
	}
	if got := names(t, filepath.Join(dir, partialDir)); len(got) != 0 {
		t.Errorf("partial holds %v, want nothing", got)
	}
	if got, want := s.Stats(), (Stats{Bytes: 4, Blobs: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if info, err := s.Stat(kept); err != nil || info.MediaType != "type" {
		t.Errorf("Stat(%s) = %+v, %v, want media type %q", kept, info, err, "type")
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning logged for unexpected files; logs:\n%s", logs.String())
	}
}

func TestConcurrentBlobs(t *testing.T) {
	t.Parallel()
	const (
		blobs   = 24
		size    = 64
		workers = 8
		rounds  = 300
	)
	s := openStore(t, Options{Capacity: 8 * size})
	type blob struct {
		d    digest.Digest
		data []byte
	}
	var all []blob
	for i := range blobs {
		d, data := blobData(i, size)
		all = append(all, blob{d, data})
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, size)
			for r := range rounds {
				b := all[(w*7+r*13)%blobs]
				switch r % 5 {
				case 0, 1:
					if err := s.Put(b.d, "t", b.data); err != nil {
						errs <- fmt.Errorf("Put(%s) = %w", b.d, err)
						return
					}
				case 2, 3:
					bl, err := s.Open(b.d)
					if errors.Is(err, ErrNotFound) {
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("Open(%s) = %w", b.d, err)
						return
					}
					_, err = bl.ReadAt(buf, 0)
					bl.Close()
					if err != nil || !bytes.Equal(buf, b.data) {
						errs <- fmt.Errorf("ReadAt(%s) = %v, content equal %v", b.d, err, bytes.Equal(buf, b.data))
						return
					}
				case 4:
					if err := s.Delete(b.d); err != nil && !errors.Is(err, ErrNotFound) {
						errs <- fmt.Errorf("Delete(%s) = %w", b.d, err)
						return
					}
					s.Walk(func(Info) bool { return true })
					s.Stats()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	var sum int64
	var n int
	s.Walk(func(info Info) bool {
		sum += info.Size
		n++
		return true
	})
	st := s.Stats()
	if st.Bytes != sum || st.Blobs != n || st.Bytes > st.Capacity {
		t.Errorf("Stats() = %+v, Walk saw %d blobs of %d bytes, want equal and within capacity", st, n, sum)
	}
	if got := len(names(t, filepath.Join(s.dir, blobsDir, "sha256"))); got != 2*n {
		t.Errorf("blobs/sha256 holds %d files, want %d (blob and media type each)", got, 2*n)
	}
	if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 0 {
		t.Errorf("tmp holds %v, want nothing", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, e := range s.blobs {
		if e.pins != 0 {
			t.Errorf("%s has %d pins after every Blob closed, want 0", d, e.pins)
		}
	}
}

func TestDirectoryLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open(%s) = %v, want ErrLocked", dir, err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	again, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open(%s) after Close = %v, want success", dir, err)
	}
	again.Close()
}

func TestWritable(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable() on a fresh store = %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(entries) != 0 {
		t.Errorf("Writable left %d files in tmp/", len(entries))
	}
	// The data directory vanishing under the node (an unmounted volume, say).
	if err := os.RemoveAll(filepath.Join(dir, tmpDir)); err != nil {
		t.Fatal(err)
	}
	if err := s.Writable(); err == nil {
		t.Error("Writable() = nil with tmp/ gone")
	}
}

// TestNotFoundMessage checks that a miss still says what was asked for, of which blob.
func TestNotFoundMessage(t *testing.T) {
	s := openStore(t, Options{Dir: t.TempDir()})
	d := digest.FromString("absent")
	_, err := s.Stat(d)
	if want := "stat " + string(d) + ": blob not found"; !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("Stat(%s) = %v, want %q", d, err, want)
	}
	_, err = s.Open(d)
	if want := "open " + string(d) + ": blob not found"; !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("Open(%s) = %v, want %q", d, err, want)
	}
}
