package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/tracker"
)

// newHTTPTracker serves a tracker with default options over real HTTP.
func newHTTPTracker(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// signedRequest builds a POST as a node sends it: body signed by signer for path.
func signedRequest(t *testing.T, url, path string, signer *p2p.Signer, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := tracker.Sign(req, signer, body); err != nil {
		t.Fatal(err)
	}
	return req
}

type testTracker struct {
	*Server
	clock *clock.Mock
	self  []string
}

func newTestTracker(t *testing.T) *testTracker {
	t.Helper()
	clock := newFakeClock()
	self := []string{"/ip4/10.9.9.9/tcp/5091/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}
	s, err := New(Options{Now: clock.Now, Addrs: func() []string { return self }})
	if err != nil {
		t.Fatal(err)
	}
	return &testTracker{Server: s, clock: clock, self: self}
}

func (tt *testTracker) serve(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	tt.ServeHTTP(rec, req)
	return rec
}

func (tt *testTracker) get(t *testing.T, path string, v any) {
	t.Helper()
	rec := tt.serve(httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d %s", path, rec.Code, rec.Body)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
}

// post signs v as p and returns the recorded answer.
func (tt *testTracker) post(t *testing.T, p *p2ptest.Peer, path string, v any) *httptest.ResponseRecorder {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return tt.serve(signedRequest(t, "", path, p.Signer, body))
}

func (tt *testTracker) announce(t *testing.T, p *p2ptest.Peer, blobs ...tracker.BlobState) tracker.AnnounceResponse {
	t.Helper()
	rec := tt.post(t, p, tracker.PathAnnounce, tracker.AnnounceRequest{Peer: p.ID, Addrs: p.Addrs, Time: tt.clock.Now().UnixMilli(), Blobs: blobs})
	if rec.Code != http.StatusOK {
		t.Fatalf("announce by %s = %d %s", p.ID, rec.Code, rec.Body)
	}
	var resp tracker.AnnounceResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func (tt *testTracker) lease(t *testing.T, p *p2ptest.Peer, chunk int, release, done bool) tracker.LeaseResponse {
	t.Helper()
	rec := tt.post(t, p, tracker.PathLease, tracker.LeaseRequest{Peer: p.ID, Time: tt.clock.Now().UnixMilli(), Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: chunk, Release: release, Done: done})
	if rec.Code != http.StatusOK {
		t.Fatalf("lease by %s = %d %s", p.ID, rec.Code, rec.Body)
	}
	var resp tracker.LeaseResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func membersOf(resp tracker.AnnounceResponse, d digest.Digest) []tracker.Member {
	for _, sw := range resp.Swarms {
		if sw.Digest == d {
			return sw.Members
		}
	}
	return nil
}

func TestServerAnnounce(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	a, b := p2ptest.NewPeer(t), p2ptest.NewPeer(t)

	resp := tr.announce(t, a, downloading(blobA, 0))
	if resp.Instance != tr.Instance() || len(resp.Instance) < 16 {
		t.Errorf("instance %q, want the server's %q", resp.Instance, tr.Instance())
	}
	if ms := membersOf(resp, blobA); ms == nil || len(ms) != 0 {
		t.Fatalf("A alone sees %+v, want an empty list", ms)
	}
	ms := membersOf(tr.announce(t, b, downloading(blobA, 1<<20)), blobA)
	if len(ms) != 1 || ms[0].Peer != a.ID || !slices.Equal(ms[0].Addrs, a.Addrs) {
		t.Fatalf("B sees %+v, want A with its addrs", ms)
	}
	ms = membersOf(tr.announce(t, a, downloading(blobA, 0)), blobA)
	if len(ms) != 1 || ms[0].Peer != b.ID || ms[0].Done != 1<<20 {
		t.Fatalf("A sees %+v, want B with 1 MiB done", ms)
	}

	var swarms tracker.SwarmsResponse
	tr.get(t, tracker.PathSwarms, &swarms)
	if swarms.Instance != tr.Instance() || len(swarms.Swarms) != 1 || swarms.Swarms[0].Members != 2 || swarms.Swarms[0].Size != testSize {
		t.Fatalf("GET /swarms = %+v, want one swarm of two", swarms)
	}

	tr.announce(t, b, tracker.BlobState{Digest: blobA, Gone: true})
	if ms := membersOf(tr.announce(t, a, downloading(blobA, 0)), blobA); len(ms) != 0 {
		t.Fatalf("after B's Gone A sees %+v", ms)
	}

	// A downloader that stops announcing leaves after DownloadTTL.
	tr.announce(t, b, downloading(blobA, 0))
	tr.clock.Add(tracker.DownloadTTL + time.Millisecond)
	if ms := membersOf(tr.announce(t, a, downloading(blobA, 0)), blobA); len(ms) != 0 {
		t.Fatalf("after tracker.DownloadTTL A sees %+v", ms)
	}
}

// TestServerLeaseHandOver: a lease whose holder dies expires and is handed to another node.
func TestServerLeaseHandOver(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	a, b := p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	tr.announce(t, a, downloading(blobA, 0))
	tr.announce(t, b, downloading(blobA, 0))

	if resp := tr.lease(t, a, 0, false, false); !resp.Granted || resp.TTLMillis != tracker.LeaseTTL.Milliseconds() {
		t.Fatalf("A's lease = %+v, want granted", resp)
	}
	if resp := tr.lease(t, b, 0, false, false); resp.Granted || resp.Holder != a.ID {
		t.Fatalf("B's lease = %+v, want holder A", resp)
	}
	tr.clock.Add(tracker.LeaseTTL / 2)
	tr.announce(t, a, downloading(blobA, 0))
	tr.announce(t, b, downloading(blobA, 0))
	if resp := tr.lease(t, a, 0, false, false); !resp.Granted {
		t.Fatalf("A's renewal = %+v, want granted", resp)
	}
	// A's process dies: no more renewals nor announces. B keeps announcing.
	for range 4 {
		tr.clock.Add(tracker.LeaseTTL / 4)
		tr.announce(t, b, downloading(blobA, 0))
	}
	if resp := tr.lease(t, b, 0, false, false); !resp.Granted {
		t.Fatalf("B's lease after A died = %+v, want granted", resp)
	}

	// Done chunks are not leased again while their member stays.
	c := p2ptest.NewPeer(t)
	tr.announce(t, c, downloading(blobA, 0))
	tr.lease(t, b, 0, true, true)
	if resp := tr.lease(t, c, 0, false, false); resp.Granted || resp.Holder != b.ID {
		t.Fatalf("lease of B's done chunk = %+v, want holder B", resp)
	}
	// B leaves: the chunk can be leased again.
	tr.clock.Add(tracker.DownloadTTL + time.Millisecond)
	tr.announce(t, c, downloading(blobA, 0))
	if resp := tr.lease(t, c, 0, false, false); !resp.Granted {
		t.Fatalf("lease of the chunk of an expired member = %+v, want granted", resp)
	}

	var swarms tracker.SwarmsResponse
	tr.get(t, tracker.PathSwarms, &swarms)
	if len(swarms.Swarms) != 1 || swarms.Swarms[0].Leases != 1 || swarms.Swarms[0].Members != 1 {
		t.Fatalf("GET /swarms = %+v, want one member holding one lease", swarms)
	}
}

// badCase is a request the server must refuse without changing its state.
type badCase struct {
	name     string
	path     string
	body     string        // JSON; PEER and NOW are replaced
	signer   *p2ptest.Peer // nil: the sender
	header   *p2ptest.Peer // whose ID goes in HeaderPeer; nil: the signer
	bodyPeer *p2ptest.Peer // whose ID replaces PEER; nil: the signer
	signPath string        // path signed; "": path
	tamper   func([]byte) []byte
	noSig    bool
	want     int
}

func TestServerRefusesBadRequests(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	a, other := p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	tr.announce(t, a, downloading(blobA, 0))
	tr.lease(t, a, 1, false, false)

	now := tr.clock.Now()
	addr := a.Addrs[0]
	blob := func(extra string) string {
		return fmt.Sprintf(`{"peer":"PEER","addrs":[%q],"time":NOW,"blobs":[{"digest":%q%s}]}`, addr, blobB, extra)
	}
	manyBlobs := func(n int) string {
		var bs []string
		for i := range n {
			bs = append(bs, fmt.Sprintf(`{"digest":%q,"done":0}`, digest.FromString(fmt.Sprint(i))))
		}
		return `{"peer":"PEER","addrs":[],"time":NOW,"blobs":[` + strings.Join(bs, ",") + `]}`
	}
	manyAddrs := func(n int) string {
		as := slices.Repeat([]string{fmt.Sprintf("%q", addr)}, n)
		return `{"peer":"PEER","addrs":[` + strings.Join(as, ",") + `],"time":NOW,"blobs":[]}`
	}
	lease := func(extra string) string {
		return fmt.Sprintf(`{"peer":"PEER","time":NOW,"digest":%q,"size":%d,"chunkSize":%d%s}`, blobA, testSize, testChunk, extra)
	}
	tests := []badCase{
		{name: "malformed JSON", path: tracker.PathAnnounce, body: `{"peer":"PEER",`, want: 400},
		{name: "not an object", path: tracker.PathAnnounce, body: `[1,2]`, want: 400},
		{name: "unknown field", path: tracker.PathAnnounce, body: `{"peer":"PEER","time":NOW,"blobs":[],"extra":1}`, want: 400},
		{name: "unknown blob field", path: tracker.PathAnnounce, body: blob(`,"color":"red"`), want: 400},
		{name: "data after the object", path: tracker.PathAnnounce, body: blob(``) + `{}`, want: 400},
		{name: "huge body", path: tracker.PathAnnounce, body: blob(``) + strings.Repeat(" ", tracker.MaxBody), want: 413},
		{name: "too many blobs", path: tracker.PathAnnounce, body: manyBlobs(tracker.MaxBlobs + 1), want: 400},
		{name: "too many addrs", path: tracker.PathAnnounce, body: manyAddrs(tracker.MaxAddrs + 1), want: 400},
		{name: "long addr", path: tracker.PathAnnounce, body: `{"peer":"PEER","addrs":["/dns4/` + strings.Repeat("a", tracker.MaxAddrLen) + `/tcp/1/p2p/PEER"],"time":NOW}`, want: 400},
		{name: "bad digest", path: tracker.PathAnnounce, body: `{"peer":"PEER","time":NOW,"blobs":[{"digest":"sha256:abc"}]}`, want: 400},
		{name: "unknown algorithm", path: tracker.PathAnnounce, body: `{"peer":"PEER","time":NOW,"blobs":[{"digest":"md5:d41d8cd98f00b204e9800998ecf8427e"}]}`, want: 400},
		{name: "twice the same blob", path: tracker.PathAnnounce, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"blobs":[{"digest":%q},{"digest":%q}]}`, blobB, blobB), want: 400},
		{name: "negative size", path: tracker.PathAnnounce, body: blob(`,"size":-1`), want: 400},
		{name: "negative done", path: tracker.PathAnnounce, body: blob(`,"size":10,"done":-1`), want: 400},
		{name: "negative from origin", path: tracker.PathAnnounce, body: blob(`,"fromOrigin":-1`), want: 400},
		{name: "done over size", path: tracker.PathAnnounce, body: blob(`,"size":10,"done":11`), want: 400},
		{name: "bad multiaddr", path: tracker.PathAnnounce, body: `{"peer":"PEER","addrs":["/ip4/300.1.1.1/tcp/1/p2p/PEER"],"time":NOW}`, want: 400},
		{name: "addr without peer", path: tracker.PathAnnounce, body: `{"peer":"PEER","addrs":["/ip4/10.1.1.1/tcp/1"],"time":NOW}`, want: 400},
		{name: "addr of another peer", path: tracker.PathAnnounce, body: `{"peer":"PEER","addrs":["` + other.Addrs[0] + `"],"time":NOW}`, want: 400},
		{name: "missing signature", path: tracker.PathAnnounce, body: blob(``), noSig: true, want: 401},
		{name: "signed by another key", path: tracker.PathAnnounce, body: blob(``), signer: other, header: a, want: 401},
		{name: "body changed after signing", path: tracker.PathAnnounce, body: blob(`,"size":10`), tamper: func(b []byte) []byte { return bytes.Replace(b, []byte(`"size":10`), []byte(`"size":20`), 1) }, want: 401},
		{name: "signed for another path", path: tracker.PathAnnounce, body: blob(``), signPath: tracker.PathLease, want: 401},
		{name: "peer header mismatch", path: tracker.PathAnnounce, body: blob(``), signer: other, bodyPeer: a, want: 401},
		{name: "lease peer header mismatch", path: tracker.PathLease, body: lease(`,"chunk":0`), signer: other, bodyPeer: a, want: 401},
		{name: "stale time", path: tracker.PathAnnounce, body: strings.Replace(blob(``), "NOW", fmt.Sprint(now.Add(-tracker.MaxClockSkew-time.Second).UnixMilli()), 1), want: 401},
		{name: "future time", path: tracker.PathAnnounce, body: strings.Replace(blob(``), "NOW", fmt.Sprint(now.Add(tracker.MaxClockSkew+time.Second).UnixMilli()), 1), want: 401},
		{name: "conflicting size", path: tracker.PathAnnounce, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"blobs":[{"digest":%q},{"digest":%q,"size":%d,"done":0}]}`, blobB, blobA, testSize+1), want: 409},
		{name: "conflicting chunk size", path: tracker.PathAnnounce, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"blobs":[{"digest":%q,"chunkSize":1}]}`, blobA), want: 409},

		{name: "lease from a non-member", path: tracker.PathLease, body: lease(`,"chunk":0`), signer: other, want: 409},
		{name: "lease index out of range", path: tracker.PathLease, body: lease(`,"chunk":3`), want: 400},
		{name: "lease negative index", path: tracker.PathLease, body: lease(`,"chunk":-1`), want: 400},
		{name: "lease conflicting size", path: tracker.PathLease, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"digest":%q,"size":%d,"chunkSize":%d,"chunk":0}`, blobA, testSize*2, testChunk), want: 409},
		{name: "lease zero size", path: tracker.PathLease, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"digest":%q,"size":0,"chunkSize":%d,"chunk":0}`, blobA, testChunk), want: 400},
		{name: "lease bad digest", path: tracker.PathLease, body: `{"peer":"PEER","time":NOW,"digest":"sha256:zz","size":1,"chunkSize":1,"chunk":0}`, want: 400},
		{name: "lease unknown blob", path: tracker.PathLease, body: fmt.Sprintf(`{"peer":"PEER","time":NOW,"digest":%q,"size":1,"chunkSize":1,"chunk":0}`, blobB), want: 409},
		{name: "lease done without release", path: tracker.PathLease, body: lease(`,"chunk":0,"done":true`), want: 400},
		{name: "lease unknown field", path: tracker.PathLease, body: lease(`,"chunk":0,"force":true`), want: 400},
		{name: "lease forged", path: tracker.PathLease, body: lease(`,"chunk":0`), signer: other, header: a, want: 401},
		{name: "lease stale", path: tracker.PathLease, body: strings.Replace(lease(`,"chunk":0`), "NOW", fmt.Sprint(now.Add(-2*tracker.MaxClockSkew).UnixMilli()), 1), want: 401},
		{name: "lease huge body", path: tracker.PathLease, body: lease(`,"chunk":0`) + strings.Repeat("\n", tracker.MaxBody), want: 413},
	}

	snapshot := func() string {
		b, _ := json.Marshal([]any{tr.state.Stats(), tr.state.Swarms(), tr.state.Bootstrap()})
		return string(b)
	}
	before := snapshot()
	for _, tc := range tests {
		signer := tc.signer
		if signer == nil {
			signer = a
		}
		header := tc.header
		if header == nil {
			header = signer
		}
		bodyPeer := tc.bodyPeer
		if bodyPeer == nil {
			bodyPeer = signer
		}
		body := strings.ReplaceAll(tc.body, "PEER", bodyPeer.ID)
		body = strings.ReplaceAll(body, "NOW", fmt.Sprint(now.UnixMilli()))
		signPath := tc.signPath
		if signPath == "" {
			signPath = tc.path
		}
		req := signedRequest(t, "", signPath, signer.Signer, []byte(body))
		req.URL.Path = tc.path
		req.Header.Set(tracker.HeaderPeer, header.ID)
		if tc.tamper != nil {
			req.Body = io.NopCloser(bytes.NewReader(tc.tamper([]byte(body))))
		}
		if tc.noSig {
			req.Header.Del(tracker.HeaderSignature)
		}
		rec := tr.serve(req)
		if rec.Code != tc.want {
			t.Errorf("%s: POST %s = %d %s, want %d", tc.name, tc.path, rec.Code, strings.TrimSpace(rec.Body.String()), tc.want)
			continue
		}
		var e struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || len(e.Error) > 1024 {
			t.Errorf("%s: body %q, want a short JSON error", tc.name, rec.Body)
		}
		if after := snapshot(); after != before {
			t.Fatalf("%s changed the state:\n%s\nwant\n%s", tc.name, after, before)
		}
	}

	// The same requests, well formed, are accepted.
	if resp := tr.lease(t, a, 0, false, false); !resp.Granted {
		t.Fatalf("good lease after the bad ones = %+v", resp)
	}
	tr.announce(t, a, downloading(blobB, 0))
}

// TestServerForgedRequestsInventNothing: requests a peer cannot sign for, or from peers
// outside a swarm, never make the tracker hand out members or leases that do not exist.
func TestServerForgedRequestsInventNothing(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	a, mallory, victim := p2ptest.NewPeer(t), p2ptest.NewPeer(t), p2ptest.NewPeer(t)
	tr.announce(t, a, downloading(blobA, 0))

	// Mallory announces in the victim's name, with the victim's or her own addrs.
	for _, addrs := range [][]string{victim.Addrs, mallory.Addrs} {
		body, _ := json.Marshal(tracker.AnnounceRequest{Peer: victim.ID, Addrs: addrs, Time: tr.clock.Now().UnixMilli(), Blobs: []tracker.BlobState{holding(blobA)}})
		req := signedRequest(t, "", tracker.PathAnnounce, mallory.Signer, body)
		req.Header.Set(tracker.HeaderPeer, victim.ID)
		if rec := tr.serve(req); rec.Code != http.StatusUnauthorized {
			t.Fatalf("announce in another's name = %d, want 401", rec.Code)
		}
	}
	// Mallory, not a member, leases every chunk, and releases them as done.
	for i := range 3 {
		for _, release := range []bool{false, true} {
			rec := tr.post(t, mallory, tracker.PathLease, tracker.LeaseRequest{Peer: mallory.ID, Time: tr.clock.Now().UnixMilli(), Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: i, Release: release, Done: release})
			if rec.Code != http.StatusConflict {
				t.Fatalf("lease by a non-member = %d, want 409", rec.Code)
			}
		}
	}
	// A lease in the victim's name, signed by Mallory.
	body, _ := json.Marshal(tracker.LeaseRequest{Peer: a.ID, Time: tr.clock.Now().UnixMilli(), Digest: blobA, Size: testSize, ChunkSize: testChunk})
	req := signedRequest(t, "", tracker.PathLease, mallory.Signer, body)
	req.Header.Set(tracker.HeaderPeer, a.ID)
	if rec := tr.serve(req); rec.Code != http.StatusUnauthorized {
		t.Fatalf("lease in another's name = %d, want 401", rec.Code)
	}

	if ms := membersOf(tr.announce(t, a, downloading(blobA, 0)), blobA); len(ms) != 0 {
		t.Fatalf("A sees %+v, want nobody", ms)
	}
	for i := range 3 {
		if resp := tr.lease(t, a, i, false, false); !resp.Granted || resp.Holder != "" {
			t.Fatalf("A's lease of chunk %d = %+v, want granted: nobody else holds it", i, resp)
		}
	}
	var boot tracker.BootstrapResponse
	tr.get(t, tracker.PathBootstrap, &boot)
	if want := append(slices.Clone(tr.self), a.Addrs...); !slices.Equal(boot.Peers, want) {
		t.Fatalf("GET /bootstrap = %q, want %q", boot.Peers, want)
	}
}

func TestServerBootstrap(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	var boot tracker.BootstrapResponse
	tr.get(t, tracker.PathBootstrap, &boot)
	if !slices.Equal(boot.Peers, tr.self) {
		t.Fatalf("empty tracker: GET /bootstrap = %q, want its own addrs %q", boot.Peers, tr.self)
	}
	a := p2ptest.NewPeer(t)
	tr.announce(t, a) // no blobs yet: still a peer to join through
	tr.get(t, tracker.PathBootstrap, &boot)
	if len(boot.Peers) != len(tr.self)+len(a.Addrs) || boot.Peers[0] != tr.self[0] || !slices.Contains(boot.Peers, a.Addrs[0]) {
		t.Fatalf("GET /bootstrap = %q, want the tracker's addrs then A's", boot.Peers)
	}
	tr.clock.Add(tracker.HolderTTL + time.Second)
	tr.get(t, tracker.PathBootstrap, &boot)
	if !slices.Equal(boot.Peers, tr.self) {
		t.Fatalf("after A expired: GET /bootstrap = %q, want only the tracker", boot.Peers)
	}
}

func TestServerMetricsAndHealth(t *testing.T) {
	t.Parallel()
	tr := newTestTracker(t)
	a := p2ptest.NewPeer(t)
	tr.announce(t, a, downloading(blobA, 0))
	tr.lease(t, a, 0, false, false)
	tr.serve(httptest.NewRequest(http.MethodPost, tracker.PathAnnounce, strings.NewReader("{}")))

	rec := tr.serve(httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /healthz = %d", rec.Code)
	}
	if rec := tr.serve(httptest.NewRequest(http.MethodGet, tracker.PathAnnounce, nil)); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /announce = %d, want 405", rec.Code)
	}
	rec = tr.serve(httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`shoal_tracker_announces_total{result="ok"} 1`,
		`shoal_tracker_announces_total{result="unauthorized"} 1`,
		`shoal_tracker_leases_total{result="granted"} 1`,
		"shoal_tracker_swarms 1",
		"shoal_tracker_members 1",
		"shoal_tracker_peers 1",
		"shoal_tracker_leases_active 1",
		`shoal_tracker_request_duration_seconds_count{path="/announce"} 2`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, rec.Body)
		}
	}
}

// TestServerAcceptsNodeSigner sends requests over real HTTP, signed as a node signs them,
// against the real clock.
func TestServerAcceptsNodeSigner(t *testing.T) {
	t.Parallel()
	srv := newHTTPTracker(t)
	a := p2ptest.NewPeer(t)
	do := func(path string, v any) []byte {
		body, _ := json.Marshal(v)
		resp, err := srv.Client().Do(signedRequest(t, srv.URL, path, a.Signer, body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("POST %s = %s %s", path, resp.Status, out)
		}
		return out
	}
	do(tracker.PathAnnounce, tracker.AnnounceRequest{Peer: a.ID, Addrs: a.Addrs, Time: time.Now().UnixMilli(), Blobs: []tracker.BlobState{downloading(blobA, 0)}})
	var lease tracker.LeaseResponse
	if err := json.Unmarshal(do(tracker.PathLease, tracker.LeaseRequest{Peer: a.ID, Time: time.Now().UnixMilli(), Digest: blobA, Size: testSize, ChunkSize: testChunk, Chunk: 2}), &lease); err != nil {
		t.Fatalf("lease answer: %v", err)
	}
	if !lease.Granted {
		t.Fatalf("lease = %+v, want granted", lease)
	}
}

func FuzzServerAnnounce(f *testing.F) {
	f.Add([]byte(`{"peer":"x","time":0,"blobs":[{"digest":"sha256:` + strings.Repeat("a", 64) + `","size":1,"done":1}]}`))
	f.Add([]byte(`{"peer":"x","addrs":["/ip4/1.2.3.4/tcp/1/p2p/x"]}`))
	s, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	signer := p2ptest.NewPeer(f).Signer
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{tracker.PathAnnounce, tracker.PathLease} {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, signedRequest(t, "", path, signer, body))
			if rec.Code >= 500 {
				t.Fatalf("POST %s %q = %d", path, body, rec.Code)
			}
		}
	})
}
