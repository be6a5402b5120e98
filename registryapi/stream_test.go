package registryapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"
)

// bigBlob spans several copy buffers.
var bigBlob = func() []byte {
	b := make([]byte, 3*copyBufferSize+12345)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

var bigDigest = digest.FromBytes(bigBlob).String()

// get fetches target from a real server and returns what the client saw.
func get(t *testing.T, srv *httptest.Server, target string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestAbortMidBody: when the bytes behind a response fail to arrive (a download that fails,
// a digest mismatch found at the end, a file shorter than promised), the client must see
// a broken transfer, never a clean 200.
func TestAbortMidBody(t *testing.T) {
	t.Parallel()
	d := bigDigest
	tests := []struct {
		name   string
		blob   func(t *testing.T) Blob
		header []string
	}{
		{"first byte", func(*testing.T) Blob { b := newMemBlob(bigBlob); b.failAt = 0; return b }, nil},
		{"mid body", func(*testing.T) Blob { b := newMemBlob(bigBlob); b.failAt = copyBufferSize + 10; return b }, nil},
		{"digest check at the end", func(*testing.T) Blob { b := newMemBlob(bigBlob); b.failAt = int64(len(bigBlob)) - 1; return b }, nil},
		{"in a range", func(*testing.T) Blob { b := newMemBlob(bigBlob); b.failAt = 2 * copyBufferSize; return b }, []string{"Range", "bytes=1000-"}},
		{"short file", func(t *testing.T) Blob { return newFileBlob(t, bigBlob[:1000], int64(len(bigBlob))) }, nil},
		{"short file in a range", func(t *testing.T) Blob { return newFileBlob(t, bigBlob[:1000], int64(len(bigBlob))) }, []string{"Range", "bytes=10-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.addBlob(bigBlob)
			blob := tt.blob(t)
			fx.src.blob = func([]byte) Blob { return blob }
			srv := httptest.NewServer(fx.srv)
			resp, body, err := get(t, srv, "/v2/x/blobs/"+d, tt.header...)
			srv.Close() // waits for the handler, so its metrics are in
			if err == nil {
				t.Fatalf("GET = %d with %d of %d body bytes and no error; want a broken transfer",
					resp.StatusCode, len(body), resp.ContentLength)
			}
			if resp != nil && int64(len(body)) >= resp.ContentLength {
				t.Errorf("client read %d bytes of %d", len(body), resp.ContentLength)
			}
			if got := counterValue(t, fx.reg, "shoal_registry_requests_total", "kind", "blob", "method", "GET", "result", "aborted"); got != 1 {
				t.Errorf("aborted requests = %v, want 1", got)
			}
			if !bytes.Contains(fx.log.Bytes(), []byte("level=ERROR")) {
				t.Errorf("abort not logged at Error: %s", fx.log)
			}
		})
	}
}

// TestFileBlob serves a blob on disk: its bytes must come from the file (fileBlob.ReadAt
// fails the test), Range included.
func TestFileBlob(t *testing.T) {
	t.Parallel()
	d := bigDigest
	size := int64(len(bigBlob))
	tests := []struct {
		rng        string
		status     int
		start, end int64
	}{
		{"", 200, 0, size},
		{"bytes=0-0", 206, 0, 1},
		{"bytes=100-", 206, 100, size},
		{"bytes=-5000", 206, size - 5000, size},
		{fmt.Sprintf("bytes=%d-%d", copyBufferSize, 2*copyBufferSize), 206, copyBufferSize, 2*copyBufferSize + 1},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t)
			fx.src.addBlob(bigBlob)
			blob := newFileBlob(t, bigBlob, -1)
			// Another reader moved the file offset: the edge must not depend on it.
			if _, err := blob.f.Seek(17, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			fx.src.blob = func([]byte) Blob { return blob }
			srv := httptest.NewServer(fx.srv)
			resp, body, err := get(t, srv, "/v2/x/blobs/"+d, "Range", tt.rng)
			srv.Close()
			if err != nil {
				t.Fatalf("GET = %v", err)
			}
			if resp.StatusCode != tt.status || !bytes.Equal(body, bigBlob[tt.start:tt.end]) {
				t.Errorf("GET %q = %d with %d bytes, want %d with bytes [%d, %d)", tt.rng, resp.StatusCode, len(body), tt.status, tt.start, tt.end)
			}
			if n := blob.closed.Load(); n != 1 {
				t.Errorf("blob closed %d times, want 1", n)
			}
		})
	}
}

// TestStreamsAsItArrives: bytes already present reach the client while the rest of the
// blob is still on its way.
func TestStreamsAsItArrives(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.src.addBlob(bigBlob)
	blob := newMemBlob(bigBlob)
	blob.gate, blob.gateAt = make(chan struct{}), firstReadSize
	fx.src.blob = func([]byte) Blob { return blob }
	srv := httptest.NewServer(fx.srv)
	defer srv.Close()
	defer func() {
		select {
		case <-blob.gate:
		default:
			close(blob.gate)
		}
	}()

	resp, err := srv.Client().Get(srv.URL + "/v2/x/blobs/" + bigDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, firstReadSize)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("reading the bytes already present: %v", err)
	}
	close(blob.gate) // only now does the rest arrive
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(first, rest...), bigBlob) {
		t.Fatalf("reading the rest: %d bytes, %v", len(rest), err)
	}
}

// TestClientLeavesMidStream: a client that goes away is counted as canceled and the
// handler does not hang on.
func TestClientLeavesMidStream(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	fx.src.addBlob(bigBlob)
	blob := newMemBlob(bigBlob)
	blob.gate, blob.gateAt = make(chan struct{}), firstReadSize
	fx.src.blob = func([]byte) Blob { return blob }
	srv := httptest.NewServer(fx.srv)

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v2/x/blobs/"+bigDigest, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, firstReadSize)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	// The handler now waits on the gate; once released, it either finds the connection
	// gone or writes into the socket buffer and finishes.
	close(blob.gate)
	srv.Close()
	ok := counterValue(t, fx.reg, "shoal_registry_requests_total", "kind", "blob", "method", "GET", "result", "ok")
	canceled := counterValue(t, fx.reg, "shoal_registry_requests_total", "kind", "blob", "method", "GET", "result", "canceled")
	if ok+canceled != 1 {
		t.Errorf("requests ok=%v canceled=%v, want one of them", ok, canceled)
	}
	if blob.closed.Load() != 1 {
		t.Error("blob not closed")
	}
	if bytes.Contains(fx.log.Bytes(), []byte("level=ERROR")) {
		t.Errorf("a client leaving is not an error: %s", fx.log)
	}
}

// TestHeadOverHTTP checks what a client receives for HEAD through net/http: the headers a
// resolver needs (containerd re-fetches with GET when Content-Length or
// Docker-Content-Digest is missing) and no body.
func TestHeadOverHTTP(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	srv := httptest.NewServer(fx.srv)
	defer srv.Close()
	for _, tt := range []struct {
		target string
		length int64
		digest string
	}{
		{"/v2/x/blobs/" + testBlobDigest.String(), int64(len(testBlob)), testBlobDigest.String()},
		{"/v2/x/manifests/latest", int64(len(testManifest)), testManDigest.String()},
	} {
		resp, err := srv.Client().Head(srv.URL + tt.target)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(body) != 0 {
			t.Errorf("HEAD %s: body %q, %v, want none", tt.target, body, err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != tt.length || resp.Header.Get("Docker-Content-Digest") != tt.digest {
			t.Errorf("HEAD %s = %d, Content-Length %d, digest %q, want 200, %d, %s",
				tt.target, resp.StatusCode, resp.ContentLength, resp.Header.Get("Docker-Content-Digest"), tt.length, tt.digest)
		}
	}
}
