package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// meter sees every HTTP request the tracker clients send, from their transports: what the
// trackers were asked and how long each answer took, measured from the request's start to
// the end of its body, as the client reads it.
type meter struct {
	hosts    atomic.Pointer[map[string]int] // tracker host:port -> index
	inflight atomic.Int64
	dials    atomic.Int64
	rec      atomic.Pointer[recorder] // nil between measured windows
}

func newMeter() *meter {
	m := &meter{}
	m.setTrackers(nil)
	return m
}

// setTrackers names the trackers by their host:port, in the order of the figures.
func (m *meter) setTrackers(addrs []string) {
	hosts := make(map[string]int, len(addrs))
	for i, a := range addrs {
		hosts[a] = i
	}
	m.hosts.Store(&hosts)
}

// transport is one identity's HTTP transport, set up as the node's is (the defaults of
// net/http: keep-alive, two idle connections per tracker), counting the connections it
// opens and timing every request.
func (m *meter) transport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		m.dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}
	return &timed{next: t, m: m}
}

type timed struct {
	next *http.Transport
	m    *meter
}

func (t *timed) RoundTrip(req *http.Request) (*http.Response, error) {
	m := t.m
	rec := m.rec.Load()
	tr := (*m.hosts.Load())[req.URL.Host]
	start := time.Now()
	m.inflight.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		m.inflight.Add(-1)
		rec.failed(tr, errorKind(err))
		return nil, err
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, m: m, rec: rec, tracker: tr, start: start, status: resp.StatusCode}
	return resp, nil
}

func (t *timed) closeIdle() { t.next.CloseIdleConnections() }

// timedBody records its request when the client closes it, having read it.
type timedBody struct {
	io.ReadCloser
	m       *meter
	rec     *recorder
	tracker int
	start   time.Time
	status  int
	readErr error
	once    sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.readErr = err
	}
	return n, err
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.m.inflight.Add(-1)
		switch {
		case b.readErr != nil:
			b.rec.failed(b.tracker, errorKind(b.readErr))
		case b.status != http.StatusOK:
			b.rec.failed(b.tracker, fmt.Sprintf("HTTP %d", b.status))
		default:
			b.rec.answered(b.tracker, time.Since(b.start))
		}
	})
	return err
}

// errorKind names a transport error for the error counts.
func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "HTTP timeout (client's 1 s)"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port left"
	case errors.Is(err, syscall.EMFILE):
		return "too many open files"
	}
	return "transport: other"
}

// recorder collects the requests of one measured window. A nil recorder records nothing.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	answers   []int64 // per tracker: requests answered 200
	failures  []int64 // per tracker: requests failed or refused
	errs      map[string]int64
	last      time.Time // when the last answer came
}

func newRecorder(trackers int) *recorder {
	return &recorder{
		latencies: make([]time.Duration, 0, 1<<16),
		answers:   make([]int64, trackers),
		failures:  make([]int64, trackers),
		errs:      make(map[string]int64),
	}
}

func (r *recorder) answered(tracker int, d time.Duration) {
	if r == nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, d)
	r.answers[tracker]++
	r.last = now
}

func (r *recorder) failed(tracker int, kind string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[tracker]++
	r.errs[kind]++
}

// latency is the distribution of answer times, in milliseconds.
type latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// summarize sorts ds and returns its nearest-rank percentiles.
func summarize(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return latency{N: len(ds), P50Ms: ms(rank(0.50)), P99Ms: ms(rank(0.99)), MaxMs: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
