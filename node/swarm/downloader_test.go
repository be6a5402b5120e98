package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/node/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeOrigin serves blobs from memory and can misbehave on request.
type fakeOrigin struct {
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	calls     []int64 // offsets asked for
	sent      int64   // body bytes handed out
	heads     int
	cutOnce   int64 // if > 0, the first transfer breaks after this many bytes
	stallOnce int64 // if > 0, the first transfer stops sending after this many bytes, until its request is cancelled
	tamper    bool  // flip a byte in the middle
	down      bool
	gate      chan struct{} // if set, bodies of requests from gateFrom on wait for it...
	gateFrom  int64
	holdAt    int64 // ...after this many bytes
	rate      int64 // if > 0, bytes per second over all bodies together
	limiter   *rate.Limiter
}

// countingReader counts the body bytes the origin actually sent.
type countingReader struct {
	o *fakeOrigin
	r io.Reader
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.o.mu.Lock()
	c.o.sent += int64(n)
	c.o.mu.Unlock()
	return n, err
}

// limitedReader paces reads by a limiter shared by every body, like one origin link.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *rate.Limiter
}

func (l *limitedReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), 16<<10)]
	if err := l.l.WaitN(l.ctx, len(p)); err != nil {
		return 0, err
	}
	return l.r.Read(p)
}

func (o *fakeOrigin) HeadBlob(ctx context.Context, registry, repo string, d digest.Digest) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.heads++
	if o.down {
		return 0, errDown
	}
	data, ok := o.blobs[d]
	if !ok {
		return 0, fmt.Errorf("blob %s: not found", d)
	}
	return int64(len(data)), nil
}

// sentBytes is how many body bytes the origin handed out, a request's whole range counted.
func (o *fakeOrigin) sentBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent
}

func newFakeOrigin(blobs ...[]byte) *fakeOrigin {
	o := &fakeOrigin{blobs: map[digest.Digest][]byte{}}
	for _, b := range blobs {
		o.blobs[digest.FromBytes(b)] = b
	}
	return o
}

var errDown = errors.New("origin down")

func (o *fakeOrigin) GetBlob(ctx context.Context, registry, repo string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, offset)
	if o.down {
		return nil, 0, errDown
	}
	data, ok := o.blobs[d]
	if !ok {
		return nil, 0, fmt.Errorf("blob %s: not found", d)
	}
	if o.tamper {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	body := data[offset:]
	if length >= 0 {
		body = body[:length]
	}
	var r io.Reader = &countingReader{o: o, r: bytes.NewReader(body)}
	if o.cutOnce > 0 {
		r = io.MultiReader(io.LimitReader(r, o.cutOnce), errReader{io.ErrUnexpectedEOF})
		o.cutOnce = 0
	}
	if o.stallOnce > 0 {
		r = io.MultiReader(io.LimitReader(r, o.stallOnce), stalledReader{ctx})
		o.stallOnce = 0
	}
	if o.rate > 0 {
		if o.limiter == nil {
			o.limiter = rate.NewLimiter(rate.Limit(o.rate), 16<<10)
		}
		r = &limitedReader{ctx: ctx, r: r, l: o.limiter}
	}
	if o.gate != nil && offset >= o.gateFrom {
		r = io.MultiReader(io.LimitReader(r, o.holdAt), &gatedReader{r: r, gate: o.gate})
	}
	return io.NopCloser(r), int64(len(data)), nil
}

func (o *fakeOrigin) offsets() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int64(nil), o.calls...)
}

// stalledReader is a body that sends nothing more, as a half-open stream: a read returns
// only when the request is cancelled.
type stalledReader struct{ ctx context.Context }

func (s stalledReader) Read([]byte) (int, error) {
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type gatedReader struct {
	r    io.Reader
	gate chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

func randomBlob(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// harness runs a Downloader over a fresh store until the test ends.
func harness(t *testing.T, o Origin, dir string) (*Downloader, *store.Store) {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	return harnessWith(t, st, Options{Origin: o})
}

// harnessWith runs a Downloader with opts over st, in chunks of 64 KiB, until the test ends;
// it closes st after.
func harnessWith(t *testing.T, st *store.Store, opts Options) (*Downloader, *store.Store) {
	t.Helper()
	opts.Store, opts.ChunkSize = st, 64<<10
	dl := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := dl.Run(ctx); err != nil {
			t.Errorf("Run = %v", err)
		}
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	return dl, st
}

func readAll(t *testing.T, dl *Downloader, d digest.Digest) ([]byte, error) {
	t.Helper()
	r, err := dl.Open(context.Background(), "reg", "repo", d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}

// waitCommitted polls the store until d is committed or the deadline passes.
func waitCommitted(t *testing.T, st *store.Store, d digest.Digest) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := st.Stat(d); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s not committed", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentReadersShareOneDownload(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 1<<20+123)
	d := digest.FromBytes(data)
	o := newFakeOrigin(data)
	o.gate = make(chan struct{})
	dl, st := harness(t, o, t.TempDir())

	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	opened := make(chan struct{}, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := dl.Open(context.Background(), "reg", "repo", d)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			opened <- struct{}{}
			got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	for range readers {
		<-opened
	}
	close(o.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("reader: %v", err)
		}
	}
	if sent := o.sentBytes(); sent != int64(len(data)) || o.heads != 1 {
		t.Errorf("origin sent %d bytes in %d requests after %d HEADs, want each of the %d bytes once after one HEAD", sent, len(o.offsets()), o.heads, len(data))
	}
	waitCommitted(t, st, d)
}

func TestTamperedOriginNeverCompletes(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 300<<10)
	d := digest.FromBytes(data)
	o := newFakeOrigin(data)
	o.tamper = true
	dl, st := harness(t, o, t.TempDir())

	got, err := readAll(t, dl, d)
	if err == nil {
		t.Fatalf("read of tampered blob = %d bytes, nil error; want an error", len(got))
	}
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("read error = %v, want ErrDigestMismatch", err)
	}
	if _, err := st.Stat(d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat after mismatch = %v, want ErrNotFound", err)
	}

	// The next request fetches again and, with an honest origin, succeeds.
	o.mu.Lock()
	o.tamper = false
	o.mu.Unlock()
	got, err = readAll(t, dl, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second read = %d bytes, %v; want the blob", len(got), err)
	}
	if o.heads != 2 {
		t.Errorf("origin HEADs = %d, want one per download", o.heads)
	}
}

func TestBrokenTransferResumesWithRange(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 500<<10)
	d := digest.FromBytes(data)
	o := newFakeOrigin(data)
	o.cutOnce = 30 << 10
	dl, _ := harness(t, o, t.TempDir())

	got, err := readAll(t, dl, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read = %d bytes, %v; want the blob", len(got), err)
	}
	// The broken request resumes where it broke, and no byte is fetched twice.
	offs := o.offsets()
	if !slices.Contains(offs, offs[0]+30<<10) || o.sentBytes() != int64(len(data)) {
		t.Errorf("origin offsets = %v and %d bytes sent; want a resume at %d and each byte once", offs, o.sentBytes(), offs[0]+30<<10)
	}
}

// An origin response that stops sending mid-chunk is cut after originIdle and the chunk
// asked for again from where it stopped: the download waits neither for its stall timeout
// nor for the stream, and no byte is fetched twice.
func TestStalledOriginResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := randomBlob(t, 500<<10)
		d := digest.FromBytes(data)
		o := newFakeOrigin(data)
		o.stallOnce = 30 << 10
		dl, _ := harness(t, o, t.TempDir())

		start := time.Now()
		got, err := readAll(t, dl, d)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read = %d bytes, %v; want the blob", len(got), err)
		}
		if took := time.Since(start); took < originIdle || took > originIdle+5*time.Second {
			t.Errorf("took %v, want a little over originIdle (%v)", took, originIdle)
		}
		offs := o.offsets()
		if !slices.Contains(offs, offs[0]+30<<10) || o.sentBytes() != int64(len(data)) {
			t.Errorf("origin offsets = %v and %d bytes sent; want a resume at %d and each byte once", offs, o.sentBytes(), offs[0]+30<<10)
		}
	})
}

func TestReaderLeavingDoesNotCancel(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 1<<20)
	d := digest.FromBytes(data)
	o := newFakeOrigin(data)
	o.gate = make(chan struct{})
	dl, st := harness(t, o, t.TempDir())

	ctx, cancel := context.WithCancel(context.Background())
	r, err := dl.Open(ctx, "reg", "repo", d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	cancel()
	if _, err := r.ReadAt(make([]byte, 10), 0); err == nil {
		t.Errorf("ReadAt after the client left = nil error, want one")
	}
	r.Close()
	close(o.gate)
	waitCommitted(t, st, d)
}

func TestResumeAfterRestart(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 640<<10)
	d := digest.FromBytes(data)
	dir := t.TempDir()

	// A previous run left 3 complete chunks (64 KiB each) behind.
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.CreatePartial(d, int64(len(data)), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WriteAt(data[:3*64<<10], 0); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := p.MarkChunk(i); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	st.Close()

	o := newFakeOrigin(data)
	dl, _ := harness(t, o, dir)
	got, err := readAll(t, dl, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read = %d bytes, %v; want the blob", len(got), err)
	}
	// Only what is missing is asked for.
	if offs := o.offsets(); slices.Min(offs) != 3*64<<10 || o.sentBytes() != int64(len(data)-3*64<<10) {
		t.Errorf("origin offsets = %v, %d bytes; want only the %d bytes from %d", offs, o.sentBytes(), len(data)-3*64<<10, 3*64<<10)
	}
}

func TestOriginDown(t *testing.T) {
	t.Parallel()
	data := randomBlob(t, 1000)
	o := newFakeOrigin(data)
	o.down = true
	dl, _ := harness(t, o, t.TempDir())
	if _, err := readAll(t, dl, digest.FromBytes(data)); !errors.Is(err, errDown) {
		t.Errorf("Open with origin down = %v, want %v", err, errDown)
	}
	// The reader hears of the failure as the download ends; it leaves the active set just
	// after.
	deadline := time.Now().Add(2 * time.Second)
	for dl.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := dl.Len(); n != 0 {
		t.Errorf("Len 2 s after failure = %d, want 0", n)
	}
}

func TestEmptyBlob(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin([]byte{})
	dl, st := harness(t, o, t.TempDir())
	got, err := readAll(t, dl, digest.FromBytes(nil))
	if err != nil || len(got) != 0 {
		t.Fatalf("read empty blob = %d bytes, %v", len(got), err)
	}
	waitCommitted(t, st, digest.FromBytes(nil))
}

// TestServeChunksWhileDownloading: peers can read the chunks a running download has
// completely written, and only those.
func TestServeChunksWhileDownloading(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	data := randomBlob(t, 5*cs+100)
	d := digest.FromBytes(data)
	o := newFakeOrigin(data)
	o.gate, o.gateFrom, o.holdAt = make(chan struct{}), 2*cs, 10
	dl, st := harness(t, o, t.TempDir())

	r, err := dl.Open(context.Background(), "reg", "repo", d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ReadAt(make([]byte, 2*cs), 0); err != nil {
		t.Fatalf("ReadAt of the first chunks: %v", err)
	}
	h, ok := dl.Progress(d)
	if !ok || h.Size != int64(len(data)) || h.ChunkSize != cs || !slices.Equal(h.Chunks, []bool{true, true, false, false, false, false}) {
		t.Fatalf("Progress = %+v, %v; want the first two of six chunks", h, ok)
	}
	// The next origin request starts right after the first chunks land; on a loaded
	// machine a moment after the read returns.
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(h.Fetching, true) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		h, _ = dl.Progress(d)
	}
	if !slices.Contains(h.Fetching, true) || slices.ContainsFunc(h.Fetching[:2], func(b bool) bool { return b }) {
		t.Errorf("Progress fetching = %v, want chunks being fetched, not the complete ones", h.Fetching)
	}
	var buf bytes.Buffer
	if n, err := dl.ReadChunk(d, 1, &buf); err != nil || n != cs || !bytes.Equal(buf.Bytes(), data[cs:2*cs]) {
		t.Errorf("ReadChunk(1) = %d, %v; want chunk 1", n, err)
	}
	if _, err := dl.ReadChunk(d, 2, io.Discard); !errors.Is(err, ErrChunkMissing) {
		t.Errorf("ReadChunk(2) of a partly written chunk = %v, want ErrChunkMissing", err)
	}
	if _, err := dl.ReadChunk(d, 9, io.Discard); !errors.Is(err, ErrChunkMissing) {
		t.Errorf("ReadChunk(9) = %v, want ErrChunkMissing", err)
	}
	if _, ok := dl.Progress(digest.FromString("other")); ok {
		t.Errorf("Progress of a blob not downloading = ok")
	}
	close(o.gate)
	waitCommitted(t, st, d)
}
