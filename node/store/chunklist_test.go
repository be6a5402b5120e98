package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

const testChunk = chunk.MinSize

// wantList computes the chunk list of data independently of the store.
func wantList(data []byte, chunkSize int) []digest.Digest {
	list := []digest.Digest{}
	for off := 0; off < len(data); off += chunkSize {
		sum := sha256.Sum256(data[off:min(off+chunkSize, len(data))])
		list = append(list, digest.Digest(fmt.Sprintf("sha256:%x", sum)))
	}
	return list
}

func mustCompute(t *testing.T, s *Store, d digest.Digest, chunkSize int64) []digest.Digest {
	t.Helper()
	list, err := s.ComputeChunkList(t.Context(), d, chunkSize)
	if err != nil {
		t.Fatalf("ComputeChunkList(%s, %d) = %v, want nil", d, chunkSize, err)
	}
	return list
}

func wantChunkList(t *testing.T, s *Store, d digest.Digest, chunkSize int64, want []digest.Digest) {
	t.Helper()
	got, err := s.ChunkList(d, chunkSize)
	if err != nil || !slices.Equal(got, want) || got == nil {
		t.Errorf("ChunkList(%s, %d) = %d digests (nil %v), %v, want %d digests, nil", d, chunkSize, len(got), got == nil, err, len(want))
	}
}

func wantNoChunkList(t *testing.T, s *Store, d digest.Digest, chunkSize int64) {
	t.Helper()
	if got, err := s.ChunkList(d, chunkSize); !errors.Is(err, ErrNoChunkList) {
		t.Errorf("ChunkList(%s, %d) = %d digests, %v, want %v", d, chunkSize, len(got), err, ErrNoChunkList)
	}
}

func TestChunkList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		size int
		alg  digest.Algorithm
	}{
		{"empty", 0, digest.SHA256},
		{"one byte", 1, digest.SHA256},
		{"chunk minus one", testChunk - 1, digest.SHA256},
		{"one chunk", testChunk, digest.SHA256},
		{"chunk plus one", testChunk + 1, digest.SHA256},
		{"three chunks and a bit", 3*testChunk + 5, digest.SHA256},
		{"sha512 blob", 3*testChunk + 5, digest.SHA512},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, clk := t.TempDir(), newClock()
			s := openStore(t, Options{Dir: dir, now: clk.now})
			_, data := blobData(i, tc.size)
			d := tc.alg.FromBytes(data)
			if err := s.Put(d, "t", data); err != nil {
				t.Fatalf("Put(%s) = %v, want nil", d, err)
			}
			wantNoChunkList(t, s, d, testChunk)

			want := wantList(data, testChunk)
			if got := mustCompute(t, s, d, testChunk); !slices.Equal(got, want) || got == nil {
				t.Fatalf("ComputeChunkList(%s) = %v, want %v", d, got, want)
			}
			wantChunkList(t, s, d, testChunk, want)
			wantNoChunkList(t, s, d, 2*testChunk)
			fi, err := os.Stat(s.listPath(d, testChunk))
			if err != nil || fi.Size() != listLen(int64(len(want))) {
				t.Errorf("sidecar: %v, %v, want %d bytes", fi, err, listLen(int64(len(want))))
			}
			wantStats := Stats{Bytes: int64(tc.size), Blobs: 1}
			if got := s.Stats(); got != wantStats {
				t.Errorf("Stats() = %+v, want %+v (sidecars are not counted)", got, wantStats)
			}

			s.Close()
			s = openStore(t, Options{Dir: dir, now: clk.now})
			wantChunkList(t, s, d, testChunk, want)
			if got := s.Stats(); got != wantStats {
				t.Errorf("Stats() after reopen = %+v, want %+v", got, wantStats)
			}
			var infos []Info
			s.Walk(func(info Info) bool {
				infos = append(infos, info)
				return true
			})
			if wantInfo := (Info{Digest: d, Size: int64(tc.size), MediaType: "t"}); len(infos) != 1 || infos[0] != wantInfo {
				t.Errorf("Walk after reopen = %+v, want [%+v]", infos, wantInfo)
			}
			wantFiles := []string{d.Encoded(), d.Encoded() + ".chunks-65536", d.Encoded() + typeSuffix}
			if got := names(t, filepath.Join(dir, blobsDir, string(tc.alg))); !slices.Equal(got, wantFiles) {
				t.Errorf("blobs/%s holds %v, want %v", tc.alg, got, wantFiles)
			}
		})
	}
}

func TestChunkListMalformed(t *testing.T) {
	t.Parallel()
	// reseal gives an edited sidecar a valid checksum, so the other checks are what catch it.
	reseal := func(b []byte) []byte {
		body := slices.Clone(b[:len(b)-listCRCLen])
		return binary.BigEndian.AppendUint32(body, crc32.Checksum(body, crcTable))
	}
	tests := []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"header only", func(b []byte) []byte { return b[:listHeaderLen] }},
		{"last byte cut", func(b []byte) []byte { return b[:len(b)-1] }},
		{"last sum cut", func(b []byte) []byte {
			return reseal(slices.Delete(b, len(b)-listCRCLen-sha256.Size, len(b)-listCRCLen))
		}},
		{"extra byte", func(b []byte) []byte { return append(b, 0) }},
		{"flipped sum", func(b []byte) []byte { b[listHeaderLen+40] ^= 1; return b }},
		{"flipped checksum", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return reseal(b) }},
		{"other chunk size", func(b []byte) []byte { b[len(listMagic)+8+7]++; return reseal(b) }},
		{"other blob size", func(b []byte) []byte { b[len(listMagic)+7]++; return reseal(b) }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, clk := t.TempDir(), newClock()
			s := openStore(t, Options{Dir: dir, now: clk.now})
			_, data := blobData(i, 3*testChunk+5)
			d := mustPut(t, s, data, "")
			want := mustCompute(t, s, d, testChunk)
			path := s.listPath(d, testChunk)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.edit(b), 0o644); err != nil {
				t.Fatal(err)
			}
			// Half the cases meet the damage after a restart, the rest while running.
			if i%2 == 0 {
				s.Close()
			}
			var logs syncBuffer
			if i%2 == 0 {
				s = openStore(t, Options{Dir: dir, now: clk.now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			} else {
				s.log = slog.New(slog.NewTextHandler(&logs, nil))
			}

			wantNoChunkList(t, s, d, testChunk)
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("malformed sidecar: %v, want removed", err)
			}
			if !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("no warning logged for a malformed chunk list; logs:\n%s", logs.String())
			}
			wantNoChunkList(t, s, d, testChunk)
			if got := mustCompute(t, s, d, testChunk); !slices.Equal(got, want) {
				t.Errorf("ComputeChunkList(%s) after malformed = %v, want %v", d, got, want)
			}
			wantChunkList(t, s, d, testChunk, want)
		})
	}
}

func TestChunkListVanished(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	_, data := blobData(0, testChunk+1)
	d := mustPut(t, s, data, "")
	mustCompute(t, s, d, testChunk)
	if err := os.Remove(s.listPath(d, testChunk)); err != nil {
		t.Fatal(err)
	}
	wantNoChunkList(t, s, d, testChunk)
	s.mu.Lock()
	lists := slices.Clone(s.blobs[d].chunkLists)
	s.mu.Unlock()
	if len(lists) != 0 {
		t.Errorf("index still lists chunk sizes %v after the sidecar vanished, want none", lists)
	}
}

func TestComputeChunkListCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte { b[2*testChunk+3] ^= 0x20; return b }},
		{"flipped last byte", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"extended", func(b []byte) []byte { return append(b, 'x') }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ev evictions
			s := openStore(t, Options{OnEvict: ev.add})
			_, data := blobData(i, 3*testChunk+5)
			d := mustPut(t, s, data, "type")
			// A list made while the data was sound must go with the blob too.
			mustCompute(t, s, d, 2*testChunk)

			path := s.blobPath(d)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.edit(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if got, err := s.ComputeChunkList(t.Context(), d, testChunk); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ComputeChunkList(%s) of corrupt blob = %d digests, %v, want %v", d, len(got), err, ErrCorrupt)
			}
			wantHeld(t, s, nil, []digest.Digest{d})
			if got := ev.list(); !slices.Equal(got, []digest.Digest{d}) {
				t.Errorf("OnEvict calls = %v, want [%s]", got, d)
			}
			for _, sub := range []string{filepath.Join(blobsDir, "sha256"), tmpDir} {
				if got := names(t, filepath.Join(s.dir, sub)); len(got) != 0 {
					t.Errorf("%s holds %v, want nothing", sub, got)
				}
			}
			if got, want := s.Stats(), (Stats{}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
			if _, err := s.ChunkList(d, 2*testChunk); !errors.Is(err, ErrNotFound) {
				t.Errorf("ChunkList(%s) = %v, want %v", d, err, ErrNotFound)
			}
		})
	}
}

func TestChunkListOutlivesCorruption(t *testing.T) {
	t.Parallel()
	dir, clk := t.TempDir(), newClock()
	s := openStore(t, Options{Dir: dir, now: clk.now})
	_, data := blobData(0, 3*testChunk+5)
	d := mustPut(t, s, data, "")
	want := mustCompute(t, s, d, testChunk)

	path := s.blobPath(d)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[testChunk+17] ^= 0x01 // in chunk 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	wantChunkList(t, s, d, testChunk, want)
	s.Close()
	s = openStore(t, Options{Dir: dir, now: clk.now})
	wantChunkList(t, s, d, testChunk, want)

	// The stored list now exposes the damage to whoever checks the data against it.
	onDisk := wantList(readBlob(t, s, d), testChunk)
	for i := range want {
		if agree := onDisk[i] == want[i]; agree != (i != 1) {
			t.Errorf("chunk %d on disk agrees with the list: %v, want %v", i, agree, i != 1)
		}
	}
}

func TestChunkListGoesWithBlob(t *testing.T) {
	t.Parallel()
	t.Run("delete", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, Options{})
		_, data := blobData(0, testChunk+1)
		d := mustPut(t, s, data, "")
		mustCompute(t, s, d, testChunk)
		pin, err := s.Open(d)
		if err != nil {
			t.Fatalf("Open(%s) = %v", d, err)
		}
		defer pin.Close()
		if err := s.Delete(d); err != nil {
			t.Fatalf("Delete(%s) = %v, want nil", d, err)
		}
		// Gone at once even though the blob file waits for its pin.
		if _, err := os.Stat(s.listPath(d, testChunk)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("sidecar after Delete: %v, want removed", err)
		}
		if _, err := s.ChunkList(d, testChunk); !errors.Is(err, ErrNotFound) {
			t.Errorf("ChunkList(%s) after Delete = %v, want %v", d, err, ErrNotFound)
		}
		// A new copy does not inherit a list.
		mustPut(t, s, data, "")
		wantNoChunkList(t, s, d, testChunk)
	})
	t.Run("eviction", func(t *testing.T) {
		t.Parallel()
		var ev evictions
		size := testChunk + 1
		s := openStore(t, Options{Capacity: int64(2 * size), OnEvict: ev.add})
		var ds []digest.Digest
		for i := range 3 {
			_, data := blobData(i, size)
			d := mustPut(t, s, data, "")
			mustCompute(t, s, d, testChunk)
			ds = append(ds, d)
		}
		wantHeld(t, s, ds[1:], ds[:1])
		if got := ev.list(); !slices.Equal(got, ds[:1]) {
			t.Errorf("OnEvict calls = %v, want %v", got, ds[:1])
		}
		var want []string
		for _, d := range ds[1:] {
			want = append(want, d.Encoded(), d.Encoded()+".chunks-65536")
		}
		slices.Sort(want)
		if got := names(t, filepath.Join(s.dir, blobsDir, "sha256")); !slices.Equal(got, want) {
			t.Errorf("blobs/sha256 holds %v, want %v", got, want)
		}
	})
	t.Run("orphan at open", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := openStore(t, Options{Dir: dir})
		_, data := blobData(0, testChunk+1)
		d := mustPut(t, s, data, "")
		mustCompute(t, s, d, testChunk)
		s.Close()
		if err := os.Remove(filepath.Join(dir, blobsDir, "sha256", d.Encoded())); err != nil {
			t.Fatal(err)
		}
		// Names that only look like sidecars are not ours to remove.
		strays := []string{
			"README.chunks-65536",
			d.Encoded() + ".chunks-0065536",
			d.Encoded() + ".chunks-0",
			d.Encoded() + ".chunks-67108865",
			d.Encoded() + ".chunks-x",
		}
		for _, name := range strays {
			if err := os.WriteFile(filepath.Join(dir, blobsDir, "sha256", name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s = openStore(t, Options{Dir: dir})
		want := slices.Sorted(slices.Values(strays))
		if got := names(t, filepath.Join(dir, blobsDir, "sha256")); !slices.Equal(got, want) {
			t.Errorf("blobs/sha256 holds %v, want %v", got, want)
		}
		if got, want := s.Stats(), (Stats{}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
	t.Run("oldest chunk size replaced", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, Options{})
		_, data := blobData(0, 3*testChunk+5)
		d := mustPut(t, s, data, "")
		var sizes []int64
		for i := range maxChunkLists + 1 {
			cs := int64(testChunk + i)
			mustCompute(t, s, d, cs)
			sizes = append(sizes, cs)
		}
		wantNoChunkList(t, s, d, sizes[0])
		if _, err := os.Stat(s.listPath(d, sizes[0])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("oldest sidecar: %v, want removed", err)
		}
		for _, cs := range sizes[1:] {
			wantChunkList(t, s, d, cs, wantList(data, int(cs)))
		}
	})
}

func TestChunkListRejects(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	_, data := blobData(0, 10)
	d := mustPut(t, s, data, "")
	tests := []struct {
		name      string
		digest    digest.Digest
		chunkSize int64
		want      error
	}{
		{"zero chunk size", d, 0, ErrOutOfRange},
		{"negative chunk size", d, -chunk.MinSize, ErrOutOfRange},
		{"min int64 chunk size", d, math.MinInt64, ErrOutOfRange},
		{"chunk size above maximum", d, chunk.MaxSize + 1, ErrOutOfRange},
		{"max int64 chunk size", d, math.MaxInt64, ErrOutOfRange},
		{"invalid digest", "sha256:../../etc", chunk.MinSize, ErrInvalidDigest},
		{"absent blob", digest.FromString("absent"), chunk.MinSize, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := s.ChunkList(tc.digest, tc.chunkSize); !errors.Is(err, tc.want) {
				t.Errorf("ChunkList(%s, %d) = %v, want %v", tc.digest, tc.chunkSize, err, tc.want)
			}
			if _, err := s.ComputeChunkList(t.Context(), tc.digest, tc.chunkSize); !errors.Is(err, tc.want) {
				t.Errorf("ComputeChunkList(%s, %d) = %v, want %v", tc.digest, tc.chunkSize, err, tc.want)
			}
		})
	}
	for _, cs := range []int64{chunk.MinSize, chunk.MaxSize} {
		if _, err := s.ComputeChunkList(t.Context(), d, cs); err != nil {
			t.Errorf("ComputeChunkList(%s, %d) = %v, want nil", d, cs, err)
		}
	}
}

func TestChunkListClosedStore(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	d := mustPut(t, s, []byte("x"), "")
	s.Close()
	if _, err := s.ChunkList(d, testChunk); !errors.Is(err, ErrClosed) {
		t.Errorf("ChunkList(%s) = %v, want %v", d, err, ErrClosed)
	}
	if _, err := s.ComputeChunkList(t.Context(), d, testChunk); !errors.Is(err, ErrClosed) {
		t.Errorf("ComputeChunkList(%s) = %v, want %v", d, err, ErrClosed)
	}
}

// TestComputeChunkListShared: concurrent callers share one computation, held here until
// every caller has joined it (synctest.Wait: all of them are waiting for it).
func TestComputeChunkListShared(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const callers = 8
		_, data := blobData(0, 3*testChunk+5)
		d := digest.FromBytes(data)
		release := make(chan struct{})
		var hashes atomic.Int32
		s := openStore(t, Options{beforeHash: func() {
			if hashes.Add(1) == 1 {
				<-release
			}
		}})
		mustPut(t, s, data, "")
		want := wantList(data, testChunk)

		var wg sync.WaitGroup
		lists := make([][]digest.Digest, callers)
		errs := make([]error, callers)
		for i := range callers {
			wg.Go(func() { lists[i], errs[i] = s.ComputeChunkList(t.Context(), d, testChunk) })
		}
		synctest.Wait() // every caller waits for the computation, which waits for release
		close(release)
		wg.Wait()
		for i := range callers {
			if errs[i] != nil || !slices.Equal(lists[i], want) {
				t.Errorf("caller %d: ComputeChunkList(%s) = %d digests, %v, want %d digests, nil", i, d, len(lists[i]), errs[i], len(want))
			}
		}
		if got := hashes.Load(); got != 1 {
			t.Errorf("blob hashed %d times, want 1", got)
		}
		lists[0][0] = "sha256:mutated" // each caller owns its slice
		if lists[1][0] != want[0] {
			t.Errorf("callers share one slice")
		}
		wantChunkList(t, s, d, testChunk, want)
	})
}

func TestComputeChunkListCancel(t *testing.T) {
	t.Parallel()
	t.Run("before start", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, Options{})
		_, data := blobData(0, testChunk+1)
		d := mustPut(t, s, data, "")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.ComputeChunkList(ctx, d, testChunk); !errors.Is(err, context.Canceled) {
			t.Errorf("ComputeChunkList(%s) = %v, want %v", d, err, context.Canceled)
		}
		wantNoChunkList(t, s, d, testChunk)
		wantHeld(t, s, []digest.Digest{d}, nil)
	})
	// The caller that started the computation leaves while another waits for it: it returns
	// at once, and the computation goes on for the other.
	t.Run("hashing caller leaves", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			_, data := blobData(1, 3*testChunk+5)
			d := digest.FromBytes(data)
			release := make(chan struct{})
			var hashes atomic.Int32
			s := openStore(t, Options{beforeHash: func() {
				if hashes.Add(1) == 1 {
					<-release
				}
			}})
			mustPut(t, s, data, "")

			first, cancelFirst := context.WithCancel(t.Context())
			defer cancelFirst()
			firstErr := make(chan error, 1)
			go func() {
				_, err := s.ComputeChunkList(first, d, testChunk)
				firstErr <- err
			}()
			synctest.Wait() // the first caller's computation holds
			type result struct {
				list []digest.Digest
				err  error
			}
			second := make(chan result, 1)
			go func() {
				list, err := s.ComputeChunkList(t.Context(), d, testChunk)
				second <- result{list, err}
			}()
			synctest.Wait() // the second caller waits for it too
			cancelFirst()
			synctest.Wait()
			select {
			case err := <-firstErr:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("first ComputeChunkList(%s) = %v, want %v", d, err, context.Canceled)
				}
			default:
				t.Fatal("the first caller left but still waits for the computation")
			}
			close(release)
			r := <-second
			if want := wantList(data, testChunk); r.err != nil || !slices.Equal(r.list, want) {
				t.Errorf("second ComputeChunkList(%s) = %d digests, %v, want %d digests, nil", d, len(r.list), r.err, len(want))
			}
			if got := hashes.Load(); got != 1 {
				t.Errorf("computations started = %d, want 1: the first caller leaving does not end it", got)
			}
		})
	})
	// The deadline of the caller that started the computation ends it while another caller
	// still wants the list: that caller starts it again.
	t.Run("hashing caller's deadline", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			_, data := blobData(2, 3*testChunk+5)
			d := digest.FromBytes(data)
			var hashes atomic.Int32
			s := openStore(t, Options{beforeHash: func() {
				if hashes.Add(1) == 1 {
					time.Sleep(2 * time.Second) // past the first caller's deadline
				}
			}})
			mustPut(t, s, data, "")

			first, cancelFirst := context.WithTimeout(t.Context(), time.Second)
			defer cancelFirst()
			firstErr := make(chan error, 1)
			go func() {
				_, err := s.ComputeChunkList(first, d, testChunk)
				firstErr <- err
			}()
			synctest.Wait()
			list, err := s.ComputeChunkList(t.Context(), d, testChunk)
			if err := <-firstErr; !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("first ComputeChunkList(%s) = %v, want %v", d, err, context.DeadlineExceeded)
			}
			if want := wantList(data, testChunk); err != nil || !slices.Equal(list, want) {
				t.Errorf("second ComputeChunkList(%s) = %d digests, %v, want %d digests, nil", d, len(list), err, len(want))
			}
			if got := hashes.Load(); got != 2 {
				t.Errorf("computations started = %d, want 2", got)
			}
		})
	})
	// Close waits for a computation still running that nobody waits for any more.
	t.Run("close", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			_, data := blobData(3, 3*testChunk+5)
			d := digest.FromBytes(data)
			release := make(chan struct{})
			s := openStore(t, Options{beforeHash: func() { <-release }})
			mustPut(t, s, data, "")
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				_, _ = s.ComputeChunkList(ctx, d, testChunk) // cancelled below: its error is context.Canceled
			}()
			synctest.Wait()
			cancel() // the caller leaves; the computation still holds
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			synctest.Wait()
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) while a computation was running", err)
			default:
			}
			close(release)
			if err := <-closed; err != nil {
				t.Errorf("Close = %v", err)
			}
			if n := s.computations.count(); n != 0 {
				t.Errorf("%d computations running after Close, want 0", n)
			}
		})
	})
}

func TestConcurrentChunkLists(t *testing.T) {
	t.Parallel()
	const (
		blobs   = 6
		size    = 2*testChunk + 7
		workers = 6
		rounds  = 60
	)
	s := openStore(t, Options{Capacity: 3 * size})
	type blob struct {
		d     digest.Digest
		data  []byte
		lists map[int64][]digest.Digest
	}
	sizes := []int64{testChunk, 2 * testChunk}
	var all []blob
	for i := range blobs {
		d, data := blobData(i, size)
		b := blob{d, data, map[int64][]digest.Digest{}}
		for _, cs := range sizes {
			b.lists[cs] = wantList(data, int(cs))
		}
		all = append(all, b)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				b := all[(w*5+r*7)%blobs]
				cs := sizes[(w+r)%len(sizes)]
				var err error
				switch r % 6 {
				case 0:
					err = s.Put(b.d, "t", b.data)
				case 1, 2:
					var list []digest.Digest
					list, err = s.ComputeChunkList(context.Background(), b.d, cs)
					if err == nil && !slices.Equal(list, b.lists[cs]) {
						err = fmt.Errorf("ComputeChunkList(%s, %d) gave a wrong list", b.d, cs)
					}
				case 3, 4:
					var list []digest.Digest
					list, err = s.ChunkList(b.d, cs)
					if err == nil && !slices.Equal(list, b.lists[cs]) {
						err = fmt.Errorf("ChunkList(%s, %d) gave a wrong list", b.d, cs)
					}
				case 5:
					err = s.Delete(b.d)
				}
				if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNoChunkList) {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Every sidecar on disk belongs to a held blob that knows of it, and the other way round.
	s.mu.Lock()
	defer s.mu.Unlock()
	onDisk := map[string]bool{}
	for _, name := range names(t, filepath.Join(s.dir, blobsDir, "sha256")) {
		if strings.Contains(name, listSuffix) {
			onDisk[name] = true
		}
	}
	indexed := map[string]bool{}
	for d, e := range s.blobs {
		for _, cs := range e.chunkLists {
			indexed[filepath.Base(s.listPath(d, cs))] = true
		}
		if e.pins != 0 {
			t.Errorf("%s has %d pins, want 0", d, e.pins)
		}
	}
	for name := range onDisk {
		if !indexed[name] {
			t.Errorf("sidecar %s on disk is not indexed", name)
		}
	}
	for name := range indexed {
		if !onDisk[name] {
			t.Errorf("indexed sidecar %s is not on disk", name)
		}
	}
	if got := names(t, filepath.Join(s.dir, tmpDir)); len(got) != 0 {
		t.Errorf("tmp holds %v, want nothing", got)
	}
	if n := s.computations.count(); n != 0 {
		t.Errorf("%d computations still running, want 0", n)
	}
}

// TestPutChunkList: a list handed over by a download is stored as if computed, and a list of
// the wrong length or with bad entries is refused.
func TestPutChunkList(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{Dir: t.TempDir()})
	data := bytes.Repeat([]byte("abc"), 100_000)
	d := digest.FromBytes(data)
	if err := s.Put(d, "", data); err != nil {
		t.Fatal(err)
	}
	const cs = 64 << 10
	var want []digest.Digest
	for off := 0; off < len(data); off += cs {
		want = append(want, digest.FromBytes(data[off:min(off+cs, len(data))]))
	}
	if err := s.PutChunkList(d, cs, want[1:]); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("PutChunkList short = %v, want ErrOutOfRange", err)
	}
	bad := slices.Clone(want)
	bad[0] = digest.Digest("sha512:" + strings.Repeat("0", 128))
	if err := s.PutChunkList(d, cs, bad); !errors.Is(err, ErrInvalidDigest) {
		t.Errorf("PutChunkList with a sha512 entry = %v, want ErrInvalidDigest", err)
	}
	if err := s.PutChunkList(digest.FromString("absent"), cs, want); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutChunkList of an absent blob = %v, want ErrNotFound", err)
	}
	if err := s.PutChunkList(d, cs, want); err != nil {
		t.Fatalf("PutChunkList: %v", err)
	}
	if got, err := s.ChunkList(d, cs); err != nil || !slices.Equal(got, want) {
		t.Errorf("ChunkList = %v, %v; want the list put", got, err)
	}
}
