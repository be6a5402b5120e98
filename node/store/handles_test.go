package store

import (
	"bytes"
	"os"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}

// Not parallel: it counts the process's open files, which parallel tests would change.
func TestHandlesBoundOpenFiles(t *testing.T) {
	const (
		stores    = 2
		perStore  = 4
		size      = 40
		chunkSize = 8 // 5 chunks
		bound     = 3
	)
	hs := NewHandles(bound)
	type download struct {
		s    *Store
		p    *Partial
		d    digest.Digest
		data []byte
	}
	var all []*download
	var ss []*Store
	for i := range stores {
		s := openStore(t, Options{Handles: hs})
		ss = append(ss, s)
		for j := range perStore {
			d, data := blobData(i*perStore+j, size)
			all = append(all, &download{s: s, d: d, data: data})
		}
	}
	base := openFDs(t)
	for _, dl := range all {
		dl.p = createPartial(t, dl.s, dl.d, size, chunkSize)
	}
	check := func(when string) {
		t.Helper()
		if got := hs.Open(); got > bound {
			t.Errorf("%s: Handles.Open() = %d, want at most %d", when, got, bound)
		}
		if got := openFDs(t) - base; got > bound {
			t.Errorf("%s: %d more files open than before the downloads, want at most %d", when, got, bound)
		}
	}
	check("after creating 8 partials")

	// Chunks 0-2 of every download, interleaved so every file leaves the pool and comes back.
	for i := range 3 {
		for _, dl := range all {
			fill(t, dl.p, dl.data, i)
		}
		check("while writing")
	}
	// A download closed and resumed finds the marks written through reopened bitmaps.
	for _, dl := range all[:2] {
		if err := dl.p.Close(); err != nil {
			t.Fatalf("Close() = %v, want nil", err)
		}
		dl.p = createPartial(t, dl.s, dl.d, size, chunkSize)
		wantChunks(t, dl.p, true, true, true, false, false)
	}
	for _, dl := range all {
		fill(t, dl.p, dl.data, 3, 4)
		got := make([]byte, size)
		if _, err := dl.p.ReadAt(got, 0); err != nil || !bytes.Equal(got, dl.data) {
			t.Fatalf("ReadAt(%s) = %q, %v, want %q, nil", dl.d, got, err, dl.data)
		}
	}
	check("after writing")

	// Commit takes the data file out of the pool, reopened if the pool had closed it, and
	// renames it into place; the Partial reads through the Blob's file until it closes.
	for _, dl := range all {
		b, err := dl.p.Commit("")
		if err != nil {
			t.Fatalf("Commit(%s) = %v, want nil", dl.d, err)
		}
		got := make([]byte, size)
		if _, err := dl.p.ReadAt(got, 0); err != nil || !bytes.Equal(got, dl.data) {
			t.Errorf("Partial.ReadAt(%s) after Commit = %q, %v, want %q, nil", dl.d, got, err, dl.data)
		}
		b.Close()
		if got := readBlob(t, dl.s, dl.d); !bytes.Equal(got, dl.data) {
			t.Errorf("committed %s = %q, want %q", dl.d, got, dl.data)
		}
	}
	if got := hs.Open(); got != 0 {
		t.Errorf("Handles.Open() after every commit = %d, want 0", got)
	}
	if got := openFDs(t) - base; got > 0 {
		t.Errorf("%d more files open after every commit, want none", got)
	}
	for _, s := range ss {
		if err := s.Close(); err != nil {
			t.Errorf("Store.Close() = %v, want nil", err)
		}
	}
}

// Many goroutines on many partials through a pool of two: the pool closes files between
// uses and reopens them, and nothing written is lost (run with -race).
func TestHandlesConcurrent(t *testing.T) {
	t.Parallel()
	const (
		partials  = 6
		size      = 8 * 16
		chunkSize = 8
		workers   = 4
	)
	hs := NewHandles(2)
	s := openStore(t, Options{Handles: hs})
	type download struct {
		p    *Partial
		d    digest.Digest
		data []byte
	}
	var dls []download
	for i := range partials {
		d, data := blobData(100+i, size)
		dls = append(dls, download{p: createPartial(t, s, d, size, chunkSize), d: d, data: data})
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, chunkSize)
			for i := w; i < size/chunkSize; i += workers {
				for _, dl := range dls {
					off := int64(i) * chunkSize
					if _, err := dl.p.WriteAt(dl.data[off:off+chunkSize], off); err != nil {
						t.Errorf("WriteAt(%s, chunk %d) = %v", dl.d, i, err)
						return
					}
					if err := dl.p.MarkChunk(i); err != nil {
						t.Errorf("MarkChunk(%s, %d) = %v", dl.d, i, err)
						return
					}
					if _, err := dl.p.ReadAt(buf, off); err != nil || !bytes.Equal(buf, dl.data[off:off+chunkSize]) {
						t.Errorf("ReadAt(%s, chunk %d) = %q, %v", dl.d, i, buf, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, dl := range dls {
		if err := dl.p.Close(); err != nil {
			t.Fatalf("Close() = %v, want nil", err)
		}
		p := createPartial(t, s, dl.d, size, chunkSize)
		for i, ok := range p.Chunks() {
			if !ok {
				t.Fatalf("%s: chunk %d not marked after reopen", dl.d, i)
			}
		}
		b, err := p.Commit("")
		if err != nil {
			t.Fatalf("Commit(%s) = %v, want nil", dl.d, err)
		}
		b.Close()
		if got := readBlob(t, s, dl.d); !bytes.Equal(got, dl.data) {
			t.Errorf("committed %s differs from what was written", dl.d)
		}
	}
	if got := hs.Open(); got != 0 {
		t.Errorf("Handles.Open() after every commit = %d, want 0", got)
	}
}
