package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

// fakeStore is an in-memory ChunkStore. When gate is set, ReadChunk reports
// on gate.entered and waits for gate.release (or its ctx) before writing.
type fakeStore struct {
	mu    sync.Mutex
	blobs map[digest.Digest]fakeBlob
	gate  *gate
}

type fakeBlob struct {
	data []byte
	have chunk.Have
}

type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func newFakeStore() *fakeStore {
	return &fakeStore{blobs: make(map[digest.Digest]fakeBlob)}
}

// add stores data as a blob of chunkSize chunks, holding only the chunks in
// held, or all of them with a chunk list when held is nil.
func (s *fakeStore) add(data []byte, chunkSize int64, held []int) digest.Digest {
	d := digest.FromBytes(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[d] = fakeBlob{data: data, have: newHave(data, chunkSize, held)}
	return d
}

// setFetching marks the chunks in fetching of blob d as being fetched, even
// ones held, which makes an inconsistent store.
func (s *fakeStore) setFetching(d digest.Digest, fetching ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	b.have = withFetching(b.have, fetching...)
	s.blobs[d] = b
}

func (s *fakeStore) Have(d digest.Digest, withList bool) (chunk.Have, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	h := b.have
	if !withList {
		h.ChunkList = nil
	}
	return h, ok
}

func (s *fakeStore) ReadChunk(ctx context.Context, d digest.Digest, index int, w io.Writer) (int64, error) {
	s.mu.Lock()
	b, ok := s.blobs[d]
	g := s.gate
	s.mu.Unlock()
	if !ok || index >= len(b.have.Chunks) || !b.have.Chunks[index] {
		return 0, chunk.ErrNotHeld
	}
	if g != nil {
		select {
		case g.entered <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		select {
		case <-g.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	start := int64(index) * b.have.ChunkSize
	n, err := w.Write(b.data[start : start+chunk.Len(b.have.Size, b.have.ChunkSize, index)])
	return int64(n), err
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newTestExchange starts an exchange on h and closes it when the test ends,
// before h is closed.
func newTestExchange(t testing.TB, h host.Host, o ExchangeOptions) *Exchange {
	t.Helper()
	if o.Store == nil {
		o.Store = newFakeStore()
	}
	e, err := NewExchange(h, o)
	if err != nil {
		t.Fatalf("NewExchange = %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return e
}

// connectedHosts starts two loopback TCP hosts, the first connected to the
// second.
func connectedHosts(t testing.TB) (client, server host.Host) {
	t.Helper()
	client = newTestHost(t, HostOptions{})
	server = newTestHost(t, HostOptions{})
	if err := client.Connect(testContext(t), addrInfo(t, server)); err != nil {
		t.Fatalf("Connect = %v", err)
	}
	return client, server
}

// exchangePair serves store from one loopback host and returns an exchange
// on another, connected host, and the serving peer's ID.
func exchangePair(t testing.TB, o ExchangeOptions) (*Exchange, string) {
	t.Helper()
	ch, sh := connectedHosts(t)
	newTestExchange(t, sh, o)
	return newTestExchange(t, ch, ExchangeOptions{}), sh.ID().String()
}

func TestExchangeHave(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, 5*chunk.MinSize/2)
	complete := store.add(data, chunk.MinSize, nil)
	partial := store.add(data[1:], chunk.MinSize, []int{1})
	empty := store.add(nil, chunk.MinSize, nil)
	fetching := store.add(data[2:], chunk.MinSize, []int{0})
	store.setFetching(fetching, 2)
	inconsistent := store.add(data[3:], chunk.MinSize, []int{0})
	store.setFetching(inconsistent, 0)
	client, server := exchangePair(t, ExchangeOptions{Store: store})

	tests := []struct {
		name string
		d    digest.Digest
		want chunk.Have
		err  error
	}{
		{name: "complete", d: complete, want: store.blobs[complete].have},
		{name: "partial", d: partial, want: store.blobs[partial].have},
		{name: "empty blob", d: empty, want: store.blobs[empty].have},
		{name: "fetching", d: fetching, want: store.blobs[fetching].have},
		{name: "held and fetching", d: inconsistent, err: ErrRemote},
		{name: "unknown", d: digest.FromString("unknown"), err: chunk.ErrNotHeld},
		{name: "unknown sha512", d: testDigest512, err: chunk.ErrNotHeld},
		{name: "invalid digest", d: "sha256:zz", err: ErrInvalidDigest},
		{name: "sha384", d: digest.SHA384.FromString("x"), err: ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := client.Have(testContext(t), server, tt.d)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Have(%s) = %v, want %v", tt.d, err, tt.err)
				}
				return
			}
			if err != nil || !equalHave(got, tt.want) {
				t.Fatalf("Have(%s) = %+v, %v, want %+v", tt.d, got, err, tt.want)
			}
		})
	}
}

func TestExchangeGetChunk(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, 5*chunk.MinSize/2)
	complete := store.add(data, chunk.MinSize, nil)
	partial := store.add(data[1:], chunk.MinSize, []int{1})
	store.setFetching(partial, 0)
	client, server := exchangePair(t, ExchangeOptions{Store: store})

	tests := []struct {
		name  string
		d     digest.Digest
		index int
		want  []byte
		err   error
	}{
		{name: "first", d: complete, index: 0, want: data[:chunk.MinSize]},
		{name: "middle", d: complete, index: 1, want: data[chunk.MinSize : 2*chunk.MinSize]},
		{name: "last short", d: complete, index: 2, want: data[2*chunk.MinSize:]},
		{name: "partial held", d: partial, index: 1, want: data[1+chunk.MinSize : 1+2*chunk.MinSize]},
		{name: "partial fetching", d: partial, index: 0, err: chunk.ErrNotHeld},
		{name: "partial missing", d: partial, index: 2, err: chunk.ErrNotHeld},
		{name: "past the end", d: complete, index: 3, err: chunk.ErrNotHeld},
		{name: "unknown digest", d: digest.FromString("unknown"), err: chunk.ErrNotHeld},
		{name: "invalid digest", d: "sha256:", err: ErrInvalidDigest},
		{name: "negative index", d: complete, index: -1, err: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			n, err := client.GetChunk(testContext(t), server, tt.d, tt.index, &buf)
			if tt.err != nil {
				if err == nil || (tt.err != errAny && !errors.Is(err, tt.err)) {
					t.Fatalf("GetChunk(%s, %d) = %d, %v, want %v", tt.name, tt.index, n, err, tt.err)
				}
				return
			}
			if err != nil || n != int64(len(tt.want)) || !bytes.Equal(buf.Bytes(), tt.want) {
				t.Fatalf("GetChunk(%s, %d) = %d, %v, want %d bytes", tt.name, tt.index, n, err, len(tt.want))
			}
		})
	}
}

func TestExchangeOnHave(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	held := store.add(randomBytes(t, chunk.MinSize), chunk.MinSize, nil)
	type call struct {
		peer string
		d    digest.Digest
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	onHave := func(peerID string, d digest.Digest) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{peerID, d})
	}
	ch, sh := connectedHosts(t)
	newTestExchange(t, sh, ExchangeOptions{Store: store, OnHave: onHave})
	client := newTestExchange(t, ch, ExchangeOptions{})
	ctx := testContext(t)
	server, self := sh.ID().String(), ch.ID().String()
	unknown := digest.FromString("unknown")

	// Each request is answered after the hook returns, so the calls are
	// recorded, in order, by the time the client has its answer.
	if _, err := client.Have(ctx, server, held); err != nil {
		t.Fatalf("Have(held) = %v", err)
	}
	if _, err := client.Have(ctx, server, unknown); !errors.Is(err, chunk.ErrNotHeld) {
		t.Fatalf("Have(unknown) = %v, want %v", err, chunk.ErrNotHeld)
	}
	if _, err := client.GetChunk(ctx, server, held, 0, io.Discard); err != nil {
		t.Fatalf("GetChunk = %v", err)
	}
	// An invalid digest never reaches the hook; it must be sent raw, as
	// Have checks digests before sending.
	s := sendRaw(t, ctx, ch, sh.ID(), ChunkProtocol, request{typ: msgHave, digest: "sha256:zz"})
	if got, err := io.ReadAll(s); err != nil || !bytes.Equal(got, []byte{statusError}) {
		t.Fatalf("response to an invalid digest = %x, %v, want %x", got, err, []byte{statusError})
	}

	want := []call{{self, held}, {self, unknown}}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(calls, want) {
		t.Errorf("OnHave calls = %v, want %v", calls, want)
	}
}

// errAny marks a test case that wants some error, whatever it is.
var errAny = errors.New("any error")

// TestExchangeRejectsInvalidRequests sends raw requests that a well-behaved
// client never sends.
func TestExchangeRejectsInvalidRequests(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	d := store.add(randomBytes(t, chunk.MinSize), chunk.MinSize, nil)
	ch, sh := connectedHosts(t)
	newTestExchange(t, sh, ExchangeOptions{Store: store})

	valid, err := appendRequest(nil, request{typ: msgGet, digest: d})
	if err != nil {
		t.Fatal(err)
	}
	encode := func(req request) []byte {
		b, err := appendRequest(nil, req)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		req  []byte
		want []byte // nil: the server resets the stream
	}{
		{name: "invalid hex", req: encode(request{typ: msgGet, digest: "sha256:zz"}), want: []byte{statusError}},
		{name: "md5", req: encode(request{typ: msgHave, digest: "md5:d41d8cd98f00b204e9800998ecf8427e"}), want: []byte{statusError}},
		{name: "upper case", req: encode(request{typ: msgHave, digest: digest.Digest(bytes.ToUpper([]byte(d)))}), want: []byte{statusError}},
		{name: "unknown type", req: append([]byte{9}, valid[1:]...)},
		{name: "truncated", req: valid[:10]},
		{name: "garbage", req: bytes.Repeat([]byte{0xff}, 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			s, err := ch.NewStream(ctx, sh.ID(), ChunkProtocol)
			if err != nil {
				t.Fatalf("NewStream = %v", err)
			}
			defer s.Reset()
			if err := s.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(tt.req); err != nil {
				if tt.want == nil {
					return // reset while still writing
				}
				t.Fatalf("Write = %v", err)
			}
			_ = s.CloseWrite() // a server that reset the stream shows in what is read below
			got, err := io.ReadAll(s)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("response to %s = %x, want a reset stream", tt.name, got)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("response to %s = %x, %v, want %x", tt.name, got, err, tt.want)
			}
		})
	}
}

func TestExchangeBusy(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, chunk.MinSize)
	d := store.add(data, chunk.MinSize, nil)
	store.gate = newGate()
	const maxStreams = 2
	client, server := exchangePair(t, ExchangeOptions{Store: store, MaxStreams: maxStreams})
	ctx := testContext(t)

	type result struct {
		n   int64
		err error
	}
	results := make(chan result, maxStreams)
	for range maxStreams {
		go func() {
			n, err := client.GetChunk(ctx, server, d, 0, io.Discard)
			results <- result{n, err}
		}()
	}
	for range maxStreams {
		select {
		case <-store.gate.entered:
		case <-ctx.Done():
			t.Fatal("requests did not reach the store")
		}
	}
	if _, err := client.GetChunk(ctx, server, d, 0, io.Discard); !errors.Is(err, chunk.ErrBusy) {
		t.Errorf("GetChunk beyond MaxStreams = %v, want %v", err, chunk.ErrBusy)
	}
	if _, err := client.Have(ctx, server, d); !errors.Is(err, chunk.ErrBusy) {
		t.Errorf("Have beyond MaxStreams = %v, want %v", err, chunk.ErrBusy)
	}
	close(store.gate.release)
	for range maxStreams {
		if r := <-results; r.err != nil || r.n != int64(len(data)) {
			t.Errorf("GetChunk held open = %d, %v, want %d bytes", r.n, r.err, len(data))
		}
	}
	// The slots are free again.
	if _, err := client.Have(ctx, server, d); err != nil {
		t.Errorf("Have after the slots freed = %v", err)
	}
}

func TestExchangeUploadLimit(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, 1<<20)
	d := store.add(data, 1<<20, nil)
	const limit = 4 << 20
	client, server := exchangePair(t, ExchangeOptions{Store: store, UploadLimit: limit})

	start := time.Now()
	n, err := client.GetChunk(testContext(t), server, d, 0, io.Discard)
	elapsed := time.Since(start)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("GetChunk = %d, %v, want %d bytes", n, err, len(data))
	}
	// 1 MiB at 4 MiB/s less the initial burst is 234 ms; the bound leaves
	// room for timer slack but not for an unlimited transfer.
	if want := 150 * time.Millisecond; elapsed < want {
		t.Errorf("GetChunk of 1 MiB at %d B/s took %v, want at least %v", limit, elapsed, want)
	}
}

// TestExchangeHostilePeer answers requests with hand-made responses.
func TestExchangeHostilePeer(t *testing.T) {
	t.Parallel()
	piece := randomBytes(t, 200<<10)
	tests := []struct {
		name  string
		have  bool   // send a HAVE request rather than a GET
		resp  []byte // written by the server
		reset bool   // reset rather than close after resp
		err   error
	}{
		{name: "shorter than announced", resp: chunkResponse(uint64(len(piece)), piece[:len(piece)/2]), err: chunk.ErrProtocol},
		{name: "longer than announced", resp: chunkResponse(uint64(len(piece)/2), piece), err: chunk.ErrProtocol},
		{name: "oversized length", resp: chunkResponse(chunk.MaxSize+1, piece), err: chunk.ErrProtocol},
		{name: "unknown status", resp: []byte{200}, err: chunk.ErrProtocol},
		{name: "nothing", resp: nil, err: chunk.ErrProtocol},
		{name: "dies mid-chunk", resp: chunkResponse(uint64(len(piece)), piece[:len(piece)/2]), reset: true, err: errAny},
		{name: "error status", resp: []byte{statusError}, err: ErrRemote},
		{name: "have with tiny chunks", have: true, resp: []byte{statusOK, 10, 1, 0xff, 0xff, 0}, err: chunk.ErrProtocol},
		{name: "have with trailing data", have: true, resp: append(encodeHave(t, newHave(piece, chunk.MinSize, nil)), 0), err: chunk.ErrProtocol},
		{name: "have truncated list", have: true, resp: encodeHave(t, newHave(piece, chunk.MinSize, nil))[:50], err: chunk.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ch, sh := connectedHosts(t)
			handled := make(chan struct{})
			sh.SetStreamHandler(ChunkProtocol, func(s network.Stream) {
				defer close(handled)
				_ = s.SetDeadline(time.Now().Add(10 * time.Second)) // best effort: the test's own timeout bounds a hang
				if _, err := io.ReadAll(s); err != nil {
					s.Reset()
					return
				}
				s.Write(tt.resp)
				if tt.reset {
					s.Reset()
				} else {
					s.Close()
				}
			})
			client := newTestExchange(t, ch, ExchangeOptions{})
			ctx := testContext(t)
			d := digest.FromBytes(piece)
			var err error
			var n int64
			if tt.have {
				_, err = client.Have(ctx, sh.ID().String(), d)
			} else {
				n, err = client.GetChunk(ctx, sh.ID().String(), d, 0, io.Discard)
			}
			if err == nil || (tt.err != errAny && !errors.Is(err, tt.err)) {
				t.Errorf("request answered by %s = %d, %v, want %v", tt.name, n, err, tt.err)
			}
			select {
			case <-handled:
			case <-ctx.Done():
				t.Fatal("server handler did not return")
			}
		})
	}
}

func TestExchangeContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		timeout time.Duration // client's ExchangeOptions.Timeout
		cancel  bool          // cancel the request once the store holds it
		err     error
	}{
		{name: "cancelled", cancel: true, err: context.Canceled},
		{name: "timeout", timeout: 200 * time.Millisecond, err: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := newFakeStore()
			d := store.add(randomBytes(t, chunk.MinSize), chunk.MinSize, nil)
			store.gate = newGate()
			ch, sh := connectedHosts(t)
			newTestExchange(t, sh, ExchangeOptions{Store: store})
			client := newTestExchange(t, ch, ExchangeOptions{Timeout: tt.timeout})

			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := client.GetChunk(ctx, sh.ID().String(), d, 0, io.Discard)
				done <- err
			}()
			select {
			case <-store.gate.entered:
			case <-testContext(t).Done():
				t.Fatal("request did not reach the store")
			}
			if tt.cancel {
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.err) {
					t.Errorf("GetChunk = %v, want %v", err, tt.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("GetChunk did not return")
			}
		})
	}
}

func TestExchangeClose(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	d := store.add(randomBytes(t, chunk.MinSize), chunk.MinSize, nil)
	store.gate = newGate()
	ch, sh := connectedHosts(t)
	server, err := NewExchange(sh, ExchangeOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	client := newTestExchange(t, ch, ExchangeOptions{})
	ctx := testContext(t)
	done := make(chan error, 1)
	go func() {
		_, err := client.GetChunk(ctx, sh.ID().String(), d, 0, io.Discard)
		done <- err
	}()
	select {
	case <-store.gate.entered:
	case <-ctx.Done():
		t.Fatal("request did not reach the store")
	}
	// Close must abort the request held in the store, not wait for it.
	if err := server.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := <-done; err == nil {
		t.Error("GetChunk aborted by Close = nil error, want an error")
	}
	if _, err := client.Have(ctx, sh.ID().String(), d); err == nil {
		t.Error("Have after Close = nil error, want an error")
	}
}

func TestExchangeMocknet(t *testing.T) {
	t.Parallel()
	mn, err := mocknet.FullMeshConnected(2)
	if err != nil {
		t.Fatalf("FullMeshConnected(2) = %v", err)
	}
	t.Cleanup(func() { mn.Close() })
	hosts := mn.Hosts()
	store := newFakeStore()
	data := randomBytes(t, 3*chunk.MinSize)
	d := store.add(data, chunk.MinSize, nil)
	newTestExchange(t, hosts[1], ExchangeOptions{Store: store})
	client := newTestExchange(t, hosts[0], ExchangeOptions{})
	ctx := testContext(t)
	server := hosts[1].ID().String()

	h, err := client.Have(ctx, server, d)
	if err != nil || !equalHave(h, store.blobs[d].have) {
		t.Fatalf("Have = %+v, %v, want %+v", h, err, store.blobs[d].have)
	}
	var got bytes.Buffer
	for i := range h.Chunks {
		var chunk bytes.Buffer
		if _, err := client.GetChunk(ctx, server, d, i, &chunk); err != nil {
			t.Fatalf("GetChunk(%d) = %v", i, err)
		}
		if cd := digest.FromBytes(chunk.Bytes()); cd != h.ChunkList[i] {
			t.Fatalf("chunk %d has digest %s, want %s", i, cd, h.ChunkList[i])
		}
		got.Write(chunk.Bytes())
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("reassembled %d bytes differ from the blob", got.Len())
	}
}

// TestExchangeOverQUIC: hosts listening on QUIC alone connect and move a chunk.
func TestExchangeOverQUIC(t *testing.T) {
	t.Parallel()
	quicOnly := HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}
	ch, sh := newTestHost(t, quicOnly), newTestHost(t, quicOnly)
	info := addrInfo(t, sh)
	for _, a := range info.Addrs {
		if !strings.Contains(a.String(), "/quic-v1") {
			t.Fatalf("server address %s is not QUIC", a)
		}
	}
	if err := ch.Connect(testContext(t), info); err != nil {
		t.Fatalf("Connect over QUIC = %v", err)
	}
	store := newFakeStore()
	data := randomBytes(t, 3*chunk.MinSize)
	d := store.add(data, chunk.MinSize, nil)
	newTestExchange(t, sh, ExchangeOptions{Store: store})
	client := newTestExchange(t, ch, ExchangeOptions{})
	var buf bytes.Buffer
	if _, err := client.GetChunk(testContext(t), sh.ID().String(), d, 1, &buf); err != nil || !bytes.Equal(buf.Bytes(), data[chunk.MinSize:2*chunk.MinSize]) {
		t.Fatalf("GetChunk over QUIC = %d bytes, %v; want chunk 1", buf.Len(), err)
	}
}

// TestExchangeServeLater: an exchange built without a store fetches but answers no peer
// until Serve, which then serves the store and tells onHave of HAVE requests.
func TestExchangeServeLater(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ch, sh := connectedHosts(t)
	server, err := NewExchange(sh, ExchangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	client := newTestExchange(t, ch, ExchangeOptions{})
	store := newFakeStore()
	d := store.add(randomBytes(t, chunk.MinSize), chunk.MinSize, nil)
	if _, err := client.Have(ctx, sh.ID().String(), d); err == nil {
		t.Fatalf("Have(%s) before Serve = nil error, want the peer to answer nothing", d)
	}
	asked := make(chan string, 1)
	if err := server.Serve(store, func(peer string, _ digest.Digest) { asked <- peer }); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if err := server.Serve(store, nil); err == nil {
		t.Errorf("second Serve = nil error, want one")
	}
	if have, err := client.Have(ctx, sh.ID().String(), d); err != nil || have.Size != chunk.MinSize {
		t.Fatalf("Have(%s) after Serve = %+v, %v, want the blob", d, have, err)
	}
	if got := <-asked; got != ch.ID().String() {
		t.Errorf("onHave peer = %s, want %s", got, ch.ID())
	}
	if err := server.Serve(nil, nil); err == nil {
		t.Errorf("Serve(nil) = nil error, want one")
	}
}

// TestExchangeFetch: a FETCH reaches the serving node's FetchFunc with the asker, the digest
// and the source, and its answer comes back as the asker's error; a node serving no FETCH
// refuses, and names out of bounds never leave the asker.
func TestExchangeFetch(t *testing.T) {
	t.Parallel()
	ch, sh := connectedHosts(t)
	server := newTestExchange(t, sh, ExchangeOptions{})
	client := newTestExchange(t, ch, ExchangeOptions{})
	seed := sh.ID().String()
	d := digest.FromString("layer")
	ctx := testContext(t)

	if err := client.Fetch(ctx, seed, d, "docker.io", "library/app"); !errors.Is(err, chunk.ErrNotHeld) {
		t.Errorf("Fetch from a node serving no FETCH = %v, want %v", err, chunk.ErrNotHeld)
	}
	type asked struct {
		peer           string
		d              digest.Digest
		registry, repo string
	}
	got := make(chan asked, 4)
	answer := make(chan error, 1)
	server.ServeFetch(func(peerID string, d digest.Digest, registry, repo string) error {
		got <- asked{peerID, d, registry, repo}
		return <-answer
	})
	for _, tc := range []struct {
		answer, want error
	}{
		{nil, nil},
		{fmt.Errorf("not a seed: %w", chunk.ErrNotHeld), chunk.ErrNotHeld},
		{chunk.ErrBusy, chunk.ErrBusy},
		{errors.New("disk full"), ErrRemote},
	} {
		answer <- tc.answer
		err := client.Fetch(ctx, seed, d, "docker.io", "library/app")
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Fetch answered %v = %v, want %v", tc.answer, err, tc.want)
		}
		if a := <-got; a != (asked{ch.ID().String(), d, "docker.io", "library/app"}) {
			t.Errorf("FetchFunc got %+v", a)
		}
	}
	long := strings.Repeat("a", maxNameLen+1)
	for _, names := range [][2]string{{"", "repo"}, {"docker.io", ""}, {long, "repo"}, {"docker.io", long}} {
		if err := client.Fetch(ctx, seed, d, names[0], names[1]); err == nil {
			t.Errorf("Fetch(%q, %q) = nil, want an error", names[0], names[1])
		}
	}
	select {
	case a := <-got:
		t.Errorf("a malformed FETCH reached the FetchFunc: %+v", a)
	default:
	}
}

// BenchmarkHave measures one HAVE round trip between two loopback TCP hosts (TLS, yamux, a
// fresh stream per request, as the downloads' polls are): the unit of the control plane's
// cost. It reports the process's CPU per request, both ends together.
func BenchmarkHave(b *testing.B) {
	store := newFakeStore()
	data := make([]byte, 64*chunk.MinSize)
	d := store.add(data, chunk.MinSize, []int{0, 5, 9})
	client, server := exchangePair(b, ExchangeOptions{Store: store})
	ctx := context.Background()
	if _, err := client.Have(ctx, server, d); err != nil {
		b.Fatal(err)
	}
	cpu0 := processCPU(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.Have(ctx, server, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestExchangeHavePeers checks that a HAVE answer names the store's peers to a node asking
// over ChunkProtocol, leaving the asker out, and names none over the first version.
func TestExchangeHavePeers(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	d := store.add(randomBytes(t, 3*chunk.MinSize), chunk.MinSize, []int{0})
	ch, sh := connectedHosts(t)
	other := testPeerID(t)
	b := store.blobs[d]
	b.have = withPeers(b.have, ch.ID(), other)
	store.blobs[d] = b
	newTestExchange(t, sh, ExchangeOptions{Store: store})
	client := newTestExchange(t, ch, ExchangeOptions{})
	ctx := testContext(t)
	want := []string{other.String()}

	got, err := client.Have(ctx, sh.ID().String(), d)
	if err != nil || !slices.Equal(got.Peers, want) {
		t.Fatalf("Have = peers %q, %v, want %q", got.Peers, err, want)
	}
	var watched []string
	wctx, stop := context.WithCancel(ctx)
	err = client.WatchHave(wctx, sh.ID().String(), d, func(h chunk.Have) {
		watched = h.Peers
		stop()
	})
	if !slices.Equal(watched, want) {
		t.Fatalf("WatchHave = first peers %q (%v), want %q", watched, err, want)
	}

	// A node of the first version asks over chunkProtocolV1 and is named no one.
	s := sendRaw(t, ctx, ch, sh.ID(), chunkProtocolV1, request{typ: msgHave, digest: d})
	old, err := readHave(bufio.NewReader(s))
	if err != nil || old.Peers != nil || !slices.Equal(old.Chunks, b.have.Chunks) {
		t.Fatalf("HAVE over %s = %+v, %v, want chunks %v and no peers", chunkProtocolV1, old, err, b.have.Chunks)
	}
}

// TestExchangeAsksFirstVersion checks that a node serving only the first version of the
// chunk protocol is still asked, in that version.
func TestExchangeAsksFirstVersion(t *testing.T) {
	t.Parallel()
	ch, sh := connectedHosts(t)
	h := newHave(randomBytes(t, 2*chunk.MinSize), chunk.MinSize, []int{1})
	sh.SetStreamHandler(chunkProtocolV1, func(s network.Stream) {
		defer s.Close()
		if _, err := io.Copy(io.Discard, s); err != nil {
			s.Reset()
			return
		}
		w := bufio.NewWriter(s)
		_ = w.WriteByte(statusOK)
		if err := writeHave(w, h); err != nil || w.Flush() != nil {
			s.Reset()
		}
	})
	client := newTestExchange(t, ch, ExchangeOptions{})
	got, err := client.Have(testContext(t), sh.ID().String(), testDigest)
	if err != nil || !equalHave(got, h) {
		t.Fatalf("Have from a first-version node = %+v, %v, want %+v", got, err, h)
	}
}

// sendRaw opens a stream from h to server over proto and sends req unchecked, as a client
// of that version would, closing its write side; the stream is reset when the test ends.
func sendRaw(t *testing.T, ctx context.Context, h host.Host, server peer.ID, proto protocol.ID, req request) network.Stream {
	t.Helper()
	s, err := h.NewStream(ctx, server, proto)
	if err != nil {
		t.Fatalf("NewStream(%s) = %v", proto, err)
	}
	t.Cleanup(func() { s.Reset() })
	if err := s.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	msg, err := appendRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(msg); err != nil {
		t.Fatalf("Write = %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return s
}
