package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// tenBytes is split into chunks of 4: [0,4) [4,8) [8,10).
var tenBytes = []byte("0123456789")

func createPartial(t *testing.T, s *Store, d digest.Digest, size, chunkSize int64) *Partial {
	t.Helper()
	p, err := s.CreatePartial(d, size, chunkSize)
	if err != nil {
		t.Fatalf("CreatePartial(%s, %d, %d) = %v, want nil", d, size, chunkSize, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// fill writes and marks the given chunks of data.
func fill(t *testing.T, p *Partial, data []byte, chunks ...int) {
	t.Helper()
	for _, i := range chunks {
		off := int64(i) * p.ChunkSize()
		end := min(off+p.ChunkSize(), p.Size())
		if _, err := p.WriteAt(data[off:end], off); err != nil {
			t.Fatalf("WriteAt(chunk %d) = %v, want nil", i, err)
		}
		if err := p.MarkChunk(i); err != nil {
			t.Fatalf("MarkChunk(%d) = %v, want nil", i, err)
		}
	}
}

func wantChunks(t *testing.T, p *Partial, want ...bool) {
	t.Helper()
	if got := p.Chunks(); !slices.Equal(got, want) {
		t.Errorf("Chunks() = %v, want %v", got, want)
	}
	for i, w := range want {
		if got := p.HasChunk(i); got != w {
			t.Errorf("HasChunk(%d) = %v, want %v", i, got, w)
		}
	}
}

func TestPartialResume(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// stop ends the first run: either the Partial is closed or only the Store is.
		stop func(*Store, *Partial) error
	}{
		{"partial closed", func(_ *Store, p *Partial) error { return p.Close() }},
		{"store closed", func(s *Store, _ *Partial) error { return s.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, clk := t.TempDir(), newClock()
			d := digest.FromBytes(tenBytes)
			s := openStore(t, Options{Dir: dir, now: clk.now})
			p := createPartial(t, s, d, 10, 4)
			if p.Digest() != d || p.Size() != 10 || p.ChunkSize() != 4 || p.NumChunks() != 3 {
				t.Fatalf("CreatePartial = %s, %d, %d, %d chunks, want %s, 10, 4, 3 chunks", p.Digest(), p.Size(), p.ChunkSize(), p.NumChunks(), d)
			}
			wantChunks(t, p, false, false, false)
			fill(t, p, tenBytes, 0, 2)
			wantChunks(t, p, true, false, true)
			if err := tc.stop(s, p); err != nil {
				t.Fatalf("stop = %v, want nil", err)
			}
			s.Close()

			s = openStore(t, Options{Dir: dir, now: clk.now})
			if got, want := s.Stats(), (Stats{PartialBytes: 10}); got != want {
				t.Errorf("Stats() after reopen = %+v, want %+v", got, want)
			}
			p = createPartial(t, s, d, 10, 4)
			wantChunks(t, p, true, false, true)
			if got, want := s.Stats(), (Stats{Reserved: 10}); got != want {
				t.Errorf("Stats() while resumed = %+v, want %+v", got, want)
			}
			got := make([]byte, 4)
			if _, err := p.ReadAt(got, 8); err != io.EOF || string(got[:2]) != "89" {
				t.Errorf("ReadAt(8) = %q, %v, want %q, EOF", got[:2], err, "89")
			}
			fill(t, p, tenBytes, 1)
			b, err := p.Commit("application/x-test")
			if err != nil {
				t.Fatalf("Commit() = %v, want nil", err)
			}
			b.Close()
			if got := names(t, filepath.Join(dir, partialDir)); len(got) != 0 {
				t.Errorf("partial holds %v after Commit, want nothing", got)
			}
			s.Close()

			s = openStore(t, Options{Dir: dir, now: clk.now})
			want := Info{Digest: d, Size: 10, MediaType: "application/x-test"}
			if info, err := s.Stat(d); err != nil || info != want {
				t.Errorf("Stat(%s) after restart = %+v, %v, want %+v, nil", d, info, err, want)
			}
			if got := readBlob(t, s, d); !bytes.Equal(got, tenBytes) {
				t.Errorf("content = %q, want %q", got, tenBytes)
			}
		})
	}
}

func TestPartialLayoutChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		size, chunkSize int64
		want            []bool
	}{
		{"same layout resumes", 10, 4, []bool{true, false, true}},
		{"other size starts fresh", 11, 4, []bool{false, false, false}},
		{"other chunk size starts fresh", 10, 5, []bool{false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, Options{})
			d := digest.FromBytes(tenBytes)
			p := createPartial(t, s, d, 10, 4)
			fill(t, p, tenBytes, 0, 2)
			p.Close()

			p = createPartial(t, s, d, tc.size, tc.chunkSize)
			wantChunks(t, p, tc.want...)
			buf := make([]byte, tc.size)
			if _, err := p.ReadAt(buf, 0); err != nil {
				t.Fatalf("ReadAt = %v, want nil", err)
			}
			if fresh := !slices.Contains(tc.want, true); fresh && !bytes.Equal(buf, make([]byte, tc.size)) {
				t.Errorf("fresh partial holds %q, want zeros", buf)
			}
		})
	}
}

func TestPartialBusy(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromBytes(tenBytes)
	p := createPartial(t, s, d, 10, 4)
	if _, err := s.CreatePartial(d, 10, 4); !errors.Is(err, ErrBusy) {
		t.Errorf("second CreatePartial(%s) = %v, want %v", d, err, ErrBusy)
	}
	p.Close()
	createPartial(t, s, d, 10, 4)
}

func TestCreatePartialRejects(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	committed := mustPut(t, s, []byte("done"), "")
	fresh := digest.FromBytes(tenBytes)
	tests := []struct {
		name            string
		d               digest.Digest
		size, chunkSize int64
		want            error
	}{
		{"committed", committed, 4, 4, ErrExists},
		{"negative size", fresh, -1, 4, ErrOutOfRange},
		{"zero chunk size", fresh, 10, 0, ErrOutOfRange},
		{"too many chunks", fresh, 1 << 40, 1, ErrOutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.CreatePartial(tc.d, tc.size, tc.chunkSize); !errors.Is(err, tc.want) {
				t.Errorf("CreatePartial(%s, %d, %d) = %v, want %v", tc.d, tc.size, tc.chunkSize, err, tc.want)
			}
		})
	}
	if got, want := s.Stats(), (Stats{Bytes: 4, Blobs: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v (no reservation left behind)", got, want)
	}
}

func TestPartialBounds(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	p := createPartial(t, s, digest.FromBytes(tenBytes), 10, 4)
	writes := []struct {
		off, n int64
		ok     bool
	}{
		{0, 10, true},
		{8, 2, true},
		{10, 0, true},
		{-1, 1, false},
		{8, 3, false},
		{11, 0, false},
	}
	for _, w := range writes {
		_, err := p.WriteAt(make([]byte, w.n), w.off)
		if w.ok && err != nil {
			t.Errorf("WriteAt(%d bytes, %d) = %v, want nil", w.n, w.off, err)
		}
		if !w.ok && !errors.Is(err, ErrOutOfRange) {
			t.Errorf("WriteAt(%d bytes, %d) = %v, want %v", w.n, w.off, err, ErrOutOfRange)
		}
	}
	for _, i := range []int{-1, 3} {
		if err := p.MarkChunk(i); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("MarkChunk(%d) = %v, want %v", i, err, ErrOutOfRange)
		}
		if err := p.UnmarkChunk(i); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("UnmarkChunk(%d) = %v, want %v", i, err, ErrOutOfRange)
		}
		if p.HasChunk(i) {
			t.Errorf("HasChunk(%d) = true, want false", i)
		}
	}
}

func TestUnmarkChunkPersists(t *testing.T) {
	t.Parallel()
	dir, clk := t.TempDir(), newClock()
	d := digest.FromBytes(tenBytes)
	s := openStore(t, Options{Dir: dir, now: clk.now})
	p := createPartial(t, s, d, 10, 4)
	fill(t, p, tenBytes, 0, 1)
	if err := p.UnmarkChunk(0); err != nil {
		t.Fatalf("UnmarkChunk(0) = %v, want nil", err)
	}
	wantChunks(t, p, false, true, false)
	s.Close()

	s = openStore(t, Options{Dir: dir, now: clk.now})
	wantChunks(t, createPartial(t, s, d, 10, 4), false, true, false)
}

func TestCommitEvicts(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{Capacity: 300, OnEvict: ev.add})
	var ds []digest.Digest
	for i := range 3 {
		_, data := blobData(i, 100)
		ds = append(ds, mustPut(t, s, data, ""))
	}
	d, data := blobData(3, 100)
	p := createPartial(t, s, d, 100, 32)
	// The reservation alone makes room.
	wantHeld(t, s, ds[1:], ds[:1])
	if got, want := s.Stats(), (Stats{Bytes: 200, Blobs: 2, Evictions: 1, Capacity: 300, Reserved: 100}); got != want {
		t.Errorf("Stats() with reservation = %+v, want %+v", got, want)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) before Commit = %v, want %v", d, err, ErrNotFound)
	}
	fill(t, p, data, 0, 1, 2, 3)
	b, err := p.Commit("")
	if err != nil {
		t.Fatalf("Commit() = %v, want nil", err)
	}
	defer b.Close()
	if b.Digest() != d || b.Size() != 100 {
		t.Errorf("Commit() = %s, %d bytes, want %s, 100 bytes", b.Digest(), b.Size(), d)
	}
	got := make([]byte, 100)
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadAt of committed = %v, content equal %v, want nil, true", err, bytes.Equal(got, data))
	}
	if got, want := s.Stats(), (Stats{Bytes: 300, Blobs: 3, Evictions: 1, Capacity: 300}); got != want {
		t.Errorf("Stats() after Commit = %+v, want %+v", got, want)
	}
	// The committed blob is the newest and pinned; the next put evicts the oldest other.
	_, data = blobData(4, 100)
	e := mustPut(t, s, data, "")
	wantHeld(t, s, []digest.Digest{ds[2], d, e}, ds[:2])
	if got, want := ev.list(), ds[:2]; !slices.Equal(got, want) {
		t.Errorf("OnEvict calls = %v, want %v", got, want)
	}
}

func TestReservationOverCapacityProceeds(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s := openStore(t, Options{Capacity: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, data := blobData(0, 100)
	a := mustPut(t, s, data, "")
	pin, err := s.Open(a)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", a, err)
	}
	defer pin.Close()
	d, _ := blobData(1, 200)
	createPartial(t, s, d, 200, 64)
	if got, want := s.Stats(), (Stats{Bytes: 100, Blobs: 1, Capacity: 100, Reserved: 200}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning logged; logs:\n%s", logs.String())
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	t.Parallel()
	dir, clk := t.TempDir(), newClock()
	d := digest.FromBytes(tenBytes)
	s := openStore(t, Options{Dir: dir, now: clk.now})
	p := createPartial(t, s, d, 10, 4)
	fill(t, p, tenBytes, 0, 1)
	if err := p.Abort(); err != nil {
		t.Fatalf("Abort() = %v, want nil", err)
	}
	if got := names(t, filepath.Join(dir, partialDir)); len(got) != 0 {
		t.Errorf("partial holds %v after Abort, want nothing", got)
	}
	if got, want := s.Stats(), (Stats{}); got != want {
		t.Errorf("Stats() after Abort = %+v, want %+v", got, want)
	}
	if err := p.Abort(); err != nil {
		t.Errorf("second Abort() = %v, want nil", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close() after Abort = %v, want nil", err)
	}
	if _, err := p.WriteAt([]byte("x"), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteAt after Abort = %v, want %v", err, ErrClosed)
	}
	if _, err := p.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Abort = %v, want %v", err, ErrClosed)
	}
	if err := p.MarkChunk(2); !errors.Is(err, ErrClosed) {
		t.Errorf("MarkChunk after Abort = %v, want %v", err, ErrClosed)
	}
	if _, err := p.Commit(""); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Abort = %v, want %v", err, ErrClosed)
	}
	s.Close()

	s = openStore(t, Options{Dir: dir, now: clk.now})
	wantChunks(t, createPartial(t, s, d, 10, 4), false, false, false)
}

func TestCloseWithoutProgressKeepsNothing(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	p := createPartial(t, s, digest.FromBytes(tenBytes), 10, 4)
	if _, err := p.WriteAt([]byte("01"), 0); err != nil {
		t.Fatalf("WriteAt = %v, want nil", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if got := names(t, filepath.Join(s.dir, partialDir)); len(got) != 0 {
		t.Errorf("partial holds %v, want nothing", got)
	}
	if got, want := s.Stats(), (Stats{}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestIdlePartialEvicted(t *testing.T) {
	t.Parallel()
	var ev evictions
	s := openStore(t, Options{Capacity: 300, OnEvict: ev.add})
	x, xdata := blobData(9, 100)
	p := createPartial(t, s, x, 100, 50)
	fill(t, p, xdata, 0)
	p.Close()
	var ds []digest.Digest
	for i := range 3 {
		_, data := blobData(i, 100)
		ds = append(ds, mustPut(t, s, data, ""))
	}
	// The abandoned download is the least recently used thing on disk.
	wantHeld(t, s, ds, nil)
	if got := names(t, filepath.Join(s.dir, partialDir)); len(got) != 0 {
		t.Errorf("partial holds %v, want the idle download evicted", got)
	}
	if got, want := s.Stats(), (Stats{Bytes: 300, Blobs: 3, Capacity: 300}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if got := ev.list(); len(got) != 0 {
		t.Errorf("OnEvict calls = %v, want none for a partial", got)
	}
	wantChunks(t, createPartial(t, s, x, 100, 50), false, false)
}

func TestCorruptBitmapDropped(t *testing.T) {
	t.Parallel()
	d := digest.FromBytes(tenBytes)
	tests := []struct {
		name    string
		corrupt func(s *Store) error
		warn    bool
	}{
		{"truncated bitmap", func(s *Store) error { return os.Truncate(s.chunksPath(d), 10) }, true},
		{"empty bitmap", func(s *Store) error { return os.Truncate(s.chunksPath(d), 0) }, true},
		{"bad magic", func(s *Store) error { return overwrite(s.chunksPath(d), 0, []byte("X")) }, true},
		{"zero chunk size", func(s *Store) error {
			return overwrite(s.chunksPath(d), int64(len(chunksMagic)+8), make([]byte, 8))
		}, true},
		{"huge size", func(s *Store) error {
			return overwrite(s.chunksPath(d), int64(len(chunksMagic)), []byte{0xff})
		}, true},
		{"extra byte", func(s *Store) error { return appendTo(s.chunksPath(d), []byte{0}) }, true},
		{"bit past last chunk", func(s *Store) error {
			return overwrite(s.chunksPath(d), int64(chunksHeaderLen), []byte{0x85})
		}, true},
		{"data wrong size", func(s *Store) error { return os.Truncate(s.partialPath(d), 5) }, true},
		{"data missing", func(s *Store) error { return os.Remove(s.partialPath(d)) }, false},
		{"bitmap missing", func(s *Store) error { return os.Remove(s.chunksPath(d)) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, clk := t.TempDir(), newClock()
			s := openStore(t, Options{Dir: dir, now: clk.now})
			p := createPartial(t, s, d, 10, 4)
			fill(t, p, tenBytes, 0, 2)
			s.Close()
			if err := tc.corrupt(s); err != nil {
				t.Fatal(err)
			}

			var logs syncBuffer
			s = openStore(t, Options{Dir: dir, now: clk.now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if got := names(t, filepath.Join(dir, partialDir)); len(got) != 0 {
				t.Errorf("partial holds %v after Open, want the damaged download dropped", got)
			}
			if warned := strings.Contains(logs.String(), "level=WARN"); warned != tc.warn {
				t.Errorf("warning logged = %v, want %v; logs:\n%s", warned, tc.warn, logs.String())
			}
			if got, want := s.Stats(), (Stats{}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
			wantChunks(t, createPartial(t, s, d, 10, 4), false, false, false)
		})
	}
}

// TestCorruptBitmapAtCreate covers damage done while the store runs, which only
// CreatePartial can notice.
func TestCorruptBitmapAtCreate(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromBytes(tenBytes)
	p := createPartial(t, s, d, 10, 4)
	fill(t, p, tenBytes, 0)
	p.Close()
	if err := overwrite(s.chunksPath(d), 0, []byte("garbage!")); err != nil {
		t.Fatal(err)
	}
	wantChunks(t, createPartial(t, s, d, 10, 4), false, false, false)
}

func overwrite(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, off)
	return errors.Join(err, f.Close())
}

func appendTo(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

func TestPartialReadAfterCommit(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromBytes(tenBytes)
	p := createPartial(t, s, d, 10, 4)
	fill(t, p, tenBytes, 0, 1, 2)
	b, err := p.Commit("")
	if err != nil {
		t.Fatalf("Commit() = %v, want nil", err)
	}
	// A reader that picked up the Partial just before Commit still gets its bytes.
	got := make([]byte, 10)
	if _, err := p.ReadAt(got, 0); err != nil || !bytes.Equal(got, tenBytes) {
		t.Errorf("Partial.ReadAt after Commit = %q, %v, want %q, nil", got, err, tenBytes)
	}
	if _, err := p.WriteAt([]byte("x"), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteAt after Commit = %v, want %v", err, ErrClosed)
	}
	if err := p.Abort(); err != nil {
		t.Errorf("Abort() after Commit = %v, want nil", err)
	}
	if _, err := s.Stat(d); err != nil {
		t.Errorf("Stat(%s) after Commit and Abort = %v, want nil", d, err)
	}
	b.Close()
	if _, err := p.ReadAt(got, 0); err == nil {
		t.Errorf("Partial.ReadAt after Blob.Close = nil error, want one")
	}
}

func TestCommitAfterPut(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromBytes(tenBytes)
	p := createPartial(t, s, d, 10, 4)
	fill(t, p, tenBytes, 0, 1, 2)
	mustPut(t, s, tenBytes, "from put")
	b, err := p.Commit("from commit")
	if err != nil {
		t.Fatalf("Commit() = %v, want nil", err)
	}
	defer b.Close()
	if b.MediaType() != "from put" {
		t.Errorf("MediaType() = %q, want the copy already committed, %q", b.MediaType(), "from put")
	}
	got := make([]byte, 10)
	if _, err := p.ReadAt(got, 0); err != nil || !bytes.Equal(got, tenBytes) {
		t.Errorf("Partial.ReadAt after Commit = %q, %v, want %q, nil", got, err, tenBytes)
	}
	if got := names(t, filepath.Join(s.dir, partialDir)); len(got) != 0 {
		t.Errorf("partial holds %v, want nothing", got)
	}
	if got, want := s.Stats(), (Stats{Bytes: 10, Blobs: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestEmptyPartial(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := digest.FromBytes(nil)
	p := createPartial(t, s, d, 0, 4)
	if n := p.NumChunks(); n != 0 {
		t.Errorf("NumChunks() = %d, want 0", n)
	}
	b, err := p.Commit("")
	if err != nil {
		t.Fatalf("Commit() = %v, want nil", err)
	}
	b.Close()
	if info, err := s.Stat(d); err != nil || info.Size != 0 {
		t.Errorf("Stat(%s) = %+v, %v, want size 0, nil", d, info, err)
	}
}

func TestConcurrentPartial(t *testing.T) {
	t.Parallel()
	const (
		chunks    = 61 // not a multiple of 8: the last bitmap byte is partly used
		chunkSize = 16
		workers   = 8
	)
	data := []byte(strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", chunks*chunkSize/36+1)[:chunks*chunkSize-5])
	d := digest.FromBytes(data)
	s := openStore(t, Options{})

	// Exactly one of many racing creators wins.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		winner *Partial
		busy   int
	)
	for range workers {
		wg.Go(func() {
			p, err := s.CreatePartial(d, int64(len(data)), chunkSize)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if winner != nil {
					t.Errorf("CreatePartial(%s) succeeded twice", d)
					p.Close()
					return
				}
				winner = p
			case errors.Is(err, ErrBusy):
				busy++
			default:
				t.Errorf("CreatePartial(%s) = %v, want nil or %v", d, err, ErrBusy)
			}
		})
	}
	wg.Wait()
	if winner == nil || busy != workers-1 {
		t.Fatalf("racing CreatePartial: winner %v, %d busy, want one winner and %d busy", winner != nil, busy, workers-1)
	}
	p := winner

	// Neighbouring chunks share bitmap bytes; every mark must still reach the disk.
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, chunkSize)
			for i := w; i < p.NumChunks(); i += workers {
				off := int64(i) * chunkSize
				end := min(off+chunkSize, p.Size())
				if _, err := p.WriteAt(data[off:end], off); err != nil {
					t.Errorf("WriteAt(chunk %d) = %v", i, err)
					return
				}
				if err := p.MarkChunk(i); err != nil {
					t.Errorf("MarkChunk(%d) = %v", i, err)
					return
				}
				if !p.HasChunk(i) {
					t.Errorf("HasChunk(%d) = false right after MarkChunk", i)
				}
				if _, err := p.ReadAt(buf[:end-off], off); err != nil || !bytes.Equal(buf[:end-off], data[off:end]) {
					t.Errorf("ReadAt(chunk %d) = %v, content equal %v", i, err, bytes.Equal(buf[:end-off], data[off:end]))
				}
				p.Chunks()
				s.Stats()
			}
		})
	}
	wg.Wait()
	p.Close()

	p = createPartial(t, s, d, int64(len(data)), chunkSize)
	for i, ok := range p.Chunks() {
		if !ok {
			t.Errorf("chunk %d not marked after reopen", i)
		}
	}
	b, err := p.Commit("")
	if err != nil {
		t.Fatalf("Commit() = %v, want nil", err)
	}
	defer b.Close()
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("committed content differs from what was written")
	}
}

func ExamplePartial() {
	dir, _ := os.MkdirTemp("", "store-example")
	defer os.RemoveAll(dir)
	s, _ := Open(Options{Dir: dir})
	defer s.Close()

	data := []byte("hello, world")
	d := digest.FromBytes(data)
	p, _ := s.CreatePartial(d, int64(len(data)), 8)
	for i := range p.NumChunks() {
		off := int64(i) * p.ChunkSize()
		end := min(off+p.ChunkSize(), p.Size())
		if _, err := p.WriteAt(data[off:end], off); err != nil {
			fmt.Println(err)
			return
		}
		if err := p.MarkChunk(i); err != nil {
			fmt.Println(err)
			return
		}
	}
	// The caller verifies the content against d before committing.
	b, _ := p.Commit("text/plain")
	defer b.Close()
	fmt.Println(b.Size(), b.MediaType())
	// Output: 12 text/plain
}
