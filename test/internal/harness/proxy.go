package harness

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// Kind is what a registry request asks for.
type Kind string

const (
	KindBlob     Kind = "blob"
	KindManifest Kind = "manifest"
	KindOther    Kind = "other"
)

// Request is one request the proxy forwarded (or refused).
type Request struct {
	Method string
	Path   string
	Query  string
	Range  string
	Kind   Kind
	Repo   string
	Ref    string // digest or tag
	Status int    // 0 when the proxy closed the connection instead
	Bytes  int64  // response body bytes sent
}

func (r Request) String() string {
	s := r.Method + " " + r.Path
	if r.Query != "" {
		s += "?" + r.Query
	}
	if r.Range != "" {
		s += " Range:" + r.Range
	}
	return fmt.Sprintf("%s -> %d (%d bytes)", s, r.Status, r.Bytes)
}

// Count sums requests and response body bytes.
type Count struct {
	Requests int   // all methods
	GETs     int   // GET requests answered 200 or 206
	Bytes    int64 // response body bytes sent
}

// CountingProxy is a reverse proxy in front of an origin registry that counts what the
// origin served, per kind and per digest or tag. It can also play a bad origin: flip a byte
// in blob bodies, refuse connections, or serve slowly.
type CountingProxy struct {
	Addr   string // host:port
	URL    string // http://Addr
	target *url.URL
	listen func(addr string) (net.Listener, error)
	rp     *httputil.ReverseProxy
	srv    *http.Server

	mu      sync.Mutex
	ln      net.Listener
	serving chan struct{} // closed when the current Serve returns
	down    bool
	conns   map[net.Conn]struct{}
	nconns  int            // connections accepted, ever
	log     []*liveRequest // in order of arrival, in-flight ones included
	tamper  map[digest.Digest]bool
	tampAll bool
	limiter *rate.Limiter

	inflight atomic.Int64 // requests being served
}

// liveRequest is a Request whose status and byte count are set while it is served, so
// that counts read at any time include what clients have already received.
type liveRequest struct {
	Request // fixed once logged
	status  atomic.Int64
	n       atomic.Int64
}

func (l *liveRequest) snapshot() Request {
	r := l.Request
	r.Status = int(l.status.Load())
	r.Bytes = l.n.Load()
	return r
}

// NewCountingProxy starts a proxy on a free loopback port that forwards to target (an
// http:// URL). The caller stops it with Close.
func NewCountingProxy(target string) (*CountingProxy, error) {
	return NewCountingProxyAt("127.0.0.1:0", target)
}

// NewCountingProxyAt is NewCountingProxy listening on addr (host:port; port 0 picks a free
// one), for example a Link's HostAddr, where a process in the link's namespace reaches it.
func NewCountingProxyAt(addr, target string) (*CountingProxy, error) {
	return newCountingProxy(addr, target, "")
}

// NewCountingProxyIn is NewCountingProxyAt inside network namespace netns: it listens there
// and reaches target from there, so what it forwards never leaves the namespace.
func NewCountingProxyIn(netns, addr, target string) (*CountingProxy, error) {
	return newCountingProxy(addr, target, netns)
}

func newCountingProxy(addr, target, netns string) (*CountingProxy, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("counting proxy target %q: want an http URL", target)
	}
	listen := func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	if netns != "" {
		listen = func(addr string) (net.Listener, error) { return ListenIn(netns, "tcp", addr) }
	}
	ln, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("counting proxy: %w", err)
	}
	p := &CountingProxy{
		Addr:   ln.Addr().String(),
		URL:    "http://" + ln.Addr().String(),
		target: u,
		listen: listen,
		conns:  map[net.Conn]struct{}{},
		tamper: map[digest.Digest]bool{},
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if netns != "" {
		transport.DialContext = DialerIn(netns)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		Transport:      transport,
		ModifyResponse: p.modifyResponse,
		ErrorLog:       log.New(io.Discard, "", 0), // client hang-ups are expected here
		FlushInterval:  -1,
	}
	p.srv = &http.Server{
		Handler:   http.HandlerFunc(p.serveHTTP),
		ConnState: p.connState,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	p.serve(ln)
	return p, nil
}

// StartCountingProxy is NewCountingProxy for tests, closed on cleanup.
func StartCountingProxy(tb testing.TB, target string) *CountingProxy {
	tb.Helper()
	p, err := NewCountingProxy(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func (p *CountingProxy) serve(ln net.Listener) {
	done := make(chan struct{})
	p.mu.Lock()
	p.ln = ln
	p.serving = done
	p.mu.Unlock()
	go func() {
		defer close(done)
		_ = p.srv.Serve(ln) // ErrServerClosed on Close; a failed listener shows as refused connections
	}()
}

// Close stops the proxy and closes every connection.
func (p *CountingProxy) Close() error {
	err := p.srv.Close()
	p.mu.Lock()
	done := p.serving
	p.mu.Unlock()
	<-done
	p.rp.Transport.(*http.Transport).CloseIdleConnections()
	return err
}

func (p *CountingProxy) connState(c net.Conn, st http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch st {
	case http.StateNew:
		p.conns[c] = struct{}{}
		p.nconns++
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// SetDown takes the origin down (true): the listener is closed, so new connections are
// refused, and open connections are cut, including responses in flight. SetDown(false)
// listens again on the same address.
func (p *CountingProxy) SetDown(down bool) error {
	p.mu.Lock()
	if down == p.down {
		p.mu.Unlock()
		return nil
	}
	p.down = down
	if down {
		ln, done := p.ln, p.serving
		conns := make([]net.Conn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
		return nil
	}
	p.mu.Unlock()
	ln, err := p.listen(p.Addr)
	if err != nil {
		return fmt.Errorf("counting proxy: listen again on %s: %w", p.Addr, err)
	}
	p.serve(ln)
	return nil
}

// SetTamper makes the proxy invert the first byte of every blob response body (200 and 206
// alike) for the given digests, leaving headers, Content-Length and Docker-Content-Digest as
// the origin sent them. With no digests, tampering is off.
func (p *CountingProxy) SetTamper(ds ...digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tampAll = false
	p.tamper = map[digest.Digest]bool{}
	for _, d := range ds {
		p.tamper[d] = true
	}
}

// SetTamperAll inverts the first byte of every blob body (on) or stops doing so (off).
func (p *CountingProxy) SetTamperAll(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tampAll = on
}

// SetRateLimit caps the response bytes per second the proxy sends, summed over all
// responses, like one shared origin link; 0 removes the cap.
func (p *CountingProxy) SetRateLimit(bytesPerSecond int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytesPerSecond <= 0 {
		p.limiter = nil
		return
	}
	burst := int(min(bytesPerSecond, 256<<10))
	p.limiter = rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
}

// Reset forgets the requests counted so far.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = nil
}

// Connections is the number of connections the proxy has accepted, including those that
// never sent a valid HTTP request (a TLS handshake, say).
func (p *CountingProxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nconns
}

// InFlight is the number of requests the proxy is serving now. Their status and the bytes
// sent so far are already counted.
func (p *CountingProxy) InFlight() int { return int(p.inflight.Load()) }

// WaitIdle waits until no request is in flight, so that the counts are final, or fails
// after timeout.
func (p *CountingProxy) WaitIdle(ctx context.Context, timeout time.Duration) error {
	return Poll(ctx, "the origin proxy to finish its requests", timeout, func() error {
		if n := p.InFlight(); n > 0 {
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
}

// Requests returns every request counted so far, in order of arrival; those in flight
// with the status and bytes sent so far.
func (p *CountingProxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.log))
	for i, l := range p.log {
		out[i] = l.snapshot()
	}
	return out
}

// Total sums the requests of one kind.
func (p *CountingProxy) Total(k Kind) Count {
	return p.count(func(r Request) bool { return r.Kind == k })
}

// Blob sums the requests for blob d.
func (p *CountingProxy) Blob(d digest.Digest) Count {
	return p.count(func(r Request) bool { return r.Kind == KindBlob && r.Ref == d.String() })
}

// Manifest sums the requests for the manifest with reference ref (a tag or a digest).
func (p *CountingProxy) Manifest(ref string) Count {
	return p.count(func(r Request) bool { return r.Kind == KindManifest && r.Ref == ref })
}

func (p *CountingProxy) count(match func(Request) bool) Count {
	p.mu.Lock()
	defer p.mu.Unlock()
	var c Count
	for _, l := range p.log {
		r := l.snapshot()
		if !match(r) {
			continue
		}
		c.Requests++
		c.Bytes += r.Bytes
		if r.Method == http.MethodGet && (r.Status == http.StatusOK || r.Status == http.StatusPartialContent) {
			c.GETs++
		}
	}
	return c
}

// ParsePath splits a /v2 path into its kind, repository and reference.
func ParsePath(path string) (kind Kind, repo, ref string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return KindOther, "", ""
	}
	for _, k := range []struct {
		sep  string
		kind Kind
	}{{"/blobs/", KindBlob}, {"/manifests/", KindManifest}} {
		if i := strings.LastIndex(rest, k.sep); i > 0 {
			ref := rest[i+len(k.sep):]
			if k.kind == KindBlob && strings.HasPrefix(ref, "uploads/") {
				return KindOther, rest[:i], ref
			}
			return k.kind, rest[:i], ref
		}
	}
	return KindOther, "", ""
}

type ctxKey struct{}

func (p *CountingProxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	kind, repo, ref := ParsePath(r.URL.Path)
	rec := &liveRequest{Request: Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Range: r.Header.Get("Range"),
		Kind: kind, Repo: repo, Ref: ref,
	}}
	cw := &countingResponseWriter{ResponseWriter: w, rec: rec}
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	p.mu.Lock()
	p.log = append(p.log, rec)
	down := p.down
	p.mu.Unlock()
	if down {
		// A connection accepted just before the listener closed: cut it.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
		return
	}
	p.rp.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, &rec.Request)))
}

func (p *CountingProxy) modifyResponse(resp *http.Response) error {
	rec, _ := resp.Request.Context().Value(ctxKey{}).(*Request)
	p.mu.Lock()
	tamper := rec != nil && rec.Kind == KindBlob && resp.Request.Method == http.MethodGet &&
		(resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent) &&
		(p.tampAll || p.tamper[digest.Digest(rec.Ref)])
	limiter := p.limiter
	p.mu.Unlock()
	if tamper {
		resp.Body = &flipFirstByte{ReadCloser: resp.Body}
	}
	if limiter != nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, ctx: resp.Request.Context(), lim: limiter}
	}
	return nil
}

// flipFirstByte inverts the first byte read.
type flipFirstByte struct {
	io.ReadCloser
	done bool
}

func (f *flipFirstByte) Read(b []byte) (int, error) {
	n, err := f.ReadCloser.Read(b)
	if n > 0 && !f.done {
		b[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// limitedBody waits for the limiter before handing out bytes.
type limitedBody struct {
	io.ReadCloser
	ctx context.Context
	lim *rate.Limiter
}

func (l *limitedBody) Read(b []byte) (int, error) {
	if len(b) > l.lim.Burst() {
		b = b[:l.lim.Burst()]
	}
	n, err := l.ReadCloser.Read(b)
	if n > 0 {
		if werr := l.lim.WaitN(l.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// countingResponseWriter records status and bytes in rec before passing them on, so that a
// client never sees more than has been counted.
type countingResponseWriter struct {
	http.ResponseWriter
	rec *liveRequest
}

func (c *countingResponseWriter) WriteHeader(code int) {
	c.rec.status.CompareAndSwap(0, int64(code))
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingResponseWriter) Write(b []byte) (int, error) {
	c.rec.status.CompareAndSwap(0, http.StatusOK)
	c.rec.n.Add(int64(len(b)))
	n, err := c.ResponseWriter.Write(b)
	c.rec.n.Add(int64(n - len(b))) // what was not written after all
	return n, err
}

func (c *countingResponseWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingResponseWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
