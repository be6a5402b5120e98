// Package client is the node's client of its trackers: it announces what the node downloads
// and holds to every tracker, merges the members they answer, asks one tracker per blob for
// chunk leases, and gets peers to join the DHT through. A tracker is an aid only, so one
// that fails is left alone for a while and costs nothing until then.
//
// It needs no network stack: requests are signed through tracker.Signer, and the peers the
// trackers name are vetted by Options.PeerAddrs.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/backoff"
	"github.com/shoal-dev/shoal/tracker"
)

// ErrUnavailable means no configured tracker could answer (or all are known to be down).
var ErrUnavailable = errors.New("no tracker available")

// ErrSlow, alongside ErrUnavailable, says that a tracker skipped as down was taken to be so
// because it left requests unanswered in time, not because it could not be reached: it is
// most likely up but loaded, and what it would have answered is not known.
var ErrSlow = errors.New("tracker not answering in time")

// Client timing defaults.
const (
	// DefaultTimeout bounds one request: a tracker slower than this slowLimit times in a
	// row is treated as down.
	DefaultTimeout = 3 * time.Second
	// DefaultBackoff is how long a tracker that failed is left alone at first; each failure in
	// a row doubles it, up to maxBackoff.
	DefaultBackoff = 2 * time.Second
	maxBackoff     = 30 * time.Second
	// idleConnsPerTracker is how many connections to each tracker the default client keeps
	// open between requests.
	idleConnsPerTracker = 16
)

// Options configure New.
type Options struct {
	// URLs are the trackers' base URLs (http or https); at least one.
	URLs []string
	// Signer signs every POST; p2p.Signer is one.
	Signer tracker.Signer
	// PeerAddrs checks that id, a peer a tracker named, is a peer ID, and returns those of
	// addrs that are really its own, in order (p2p.PeerAddrs): what a tracker answers is
	// input, not truth.
	PeerAddrs func(id string, addrs []string) ([]string, error)
	// Addrs returns the node's multiaddrs (ending in /p2p/<id>) to announce.
	Addrs func() []string
	// HTTPClient, if set, replaces the default client (whose Timeout is not used: each
	// request is bounded by Timeout).
	HTTPClient *http.Client
	// Timeout bounds one request; 0 means DefaultTimeout.
	Timeout time.Duration
	// Backoff is the first wait after a tracker failed; 0 means DefaultBackoff.
	Backoff    time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Client talks to one or more trackers side by side.
//
// Announces go to every tracker, and the members they answer are merged. A lease on a chunk
// is asked of one tracker only, the first of the trackers ordered by rendezvous hash of the
// digest over their URLs that is not known to be down, so every node asks the same tracker
// for the same blob; when it fails the next in that order is asked. A tracker that fails (a
// transport error, a timeout or a 5xx) is marked down for a backoff and skipped until then,
// so a dead tracker costs nothing: a lease asked while every tracker is down fails at once
// with ErrUnavailable. Nothing is retried inside a request.
type Client struct {
	opts     Options
	backoff  backoff.Exponential
	self     string
	http     *http.Client
	log      *slog.Logger
	trackers []*endpoint

	requests *prometheus.CounterVec
	up       atomic.Bool

	restarted chan struct{}

	mu       sync.Mutex
	members  map[digest.Digest]map[*endpoint]swarmAnswer // the latest answer of each tracker for downloads
	interval time.Duration                               // the announce interval the trackers last asked for

	ctx    context.Context // ends with Close: background renewals and releases
	cancel context.CancelFunc
	bgMu   sync.Mutex
	closed bool
	bg     sync.WaitGroup
}

// endpoint is one tracker and what the client knows of its health.
type endpoint struct {
	base string

	mu        sync.Mutex
	downUntil time.Time
	failures  int
	slow      int  // requests in a row not answered in time
	slowDown  bool // down because of them, not because it could not be reached
	instance  string
}

// New checks o and returns a client.
func New(o Options) (*Client, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("no tracker URL")
	}
	if o.Signer == nil {
		return nil, errors.New("no signer")
	}
	if o.PeerAddrs == nil {
		return nil, errors.New("no peer address check")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Addrs == nil {
		o.Addrs = func() []string { return nil }
	}
	c := &Client{
		opts:      o,
		backoff:   backoff.Exponential{Base: o.Backoff, Max: maxBackoff},
		self:      o.Signer.ID(),
		http:      o.HTTPClient,
		log:       o.Logger,
		restarted: make(chan struct{}, 1),
		members:   make(map[digest.Digest]map[*endpoint]swarmAnswer),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_requests_total",
			Help: "Requests to trackers, by operation (announce, lease, bootstrap) and result (ok, refused, error).",
		}, []string{"op", "result"}),
	}
	if c.http == nil {
		// A node has several lease and announce requests out at once; net/http's default
		// of two idle connections per host would open a new one for most of them.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = idleConnsPerTracker
		c.http = &http.Client{Transport: t}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	seen := make(map[string]bool)
	for _, raw := range o.URLs {
		base, err := tracker.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		if !seen[base] {
			seen[base] = true
			c.trackers = append(c.trackers, &endpoint{base: base})
		}
	}
	for _, op := range []string{"announce", "lease", "bootstrap"} {
		for _, result := range []string{"ok", "refused", "error"} {
			c.requests.WithLabelValues(op, result)
		}
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(c.requests, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_tracker_up",
			Help: "1 if the last request to a tracker succeeded.",
		}, func() float64 {
			if c.up.Load() {
				return 1
			}
			return 0
		}))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close stops lease renewals and waits for the background requests to end.
func (c *Client) Close() {
	c.bgMu.Lock()
	c.closed = true
	c.bgMu.Unlock()
	c.cancel()
	c.bg.Wait()
}

// background runs f in a goroutine the client owns, unless it is closed.
func (c *Client) background(f func()) bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed {
		return false
	}
	c.bg.Go(f)
	return true
}

// Restarted receives a value when a tracker answered with another Instance than before: it
// restarted and lost its state, and everything held should be announced again at once.
func (c *Client) Restarted() <-chan struct{} { return c.restarted }

// available reports whether the tracker may be asked now.
func (e *endpoint) available(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !now.Before(e.downUntil)
}

// downSlow reports whether the tracker is down for leaving requests unanswered in time
// rather than for being unreachable.
func (e *endpoint) downSlow() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slowDown
}

// errDown marks a failure that says the tracker is not answering: it could not be reached,
// its answer broke off, or it failed (5xx).
type errDown struct{ err error }

func (e errDown) Error() string { return e.err.Error() }
func (e errDown) Unwrap() error { return e.err }

// errSlow marks a request the tracker did not answer within Timeout. A loaded tracker
// answers late, which is not down: it counts as down only after slowLimit in a row.
type errSlow struct{ err error }

func (e errSlow) Error() string { return e.err.Error() }
func (e errSlow) Unwrap() error { return e.err }

// slowLimit is how many requests in a row a tracker may leave unanswered within Timeout
// before it is taken to be down.
const slowLimit = 10

// result records how a request to e ended.
func (c *Client) result(e *endpoint, op string, err error) {
	down := errors.As(err, new(errDown))
	slow := errors.As(err, new(errSlow))
	switch {
	case errors.Is(err, context.Canceled) && !down && !slow:
		// The caller gave up: that says nothing of the tracker.
		c.requests.WithLabelValues(op, "error").Inc()
		return
	case err == nil:
		c.requests.WithLabelValues(op, "ok").Inc()
	case down, slow:
		c.requests.WithLabelValues(op, "error").Inc()
	default:
		// The tracker answered, refusing the request: it is up.
		c.requests.WithLabelValues(op, "refused").Inc()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if slow {
		if e.slow++; e.slow < slowLimit {
			c.log.Debug("tracker slow", "tracker", e.base, "in a row", e.slow, "err", err)
			return
		}
		down = true
	}
	e.slow = 0
	e.slowDown = slow
	if down {
		e.failures++
		wait := c.backoff.Delay(e.failures)
		e.downUntil = time.Now().Add(wait)
		c.up.Store(false)
		c.log.Debug("tracker down", "tracker", e.base, "retry", wait, "err", err)
		return
	}
	e.failures = 0
	e.downUntil = time.Time{}
	c.up.Store(true)
}

// do sends one request to e and decodes its answer into out. A failure to reach the tracker
// or a 5xx is an errDown; another status is a plain error (the tracker refused).
func (c *Client) do(ctx context.Context, e *endpoint, method, path string, in, out any) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if len(body) > tracker.MaxBody {
			return fmt.Errorf("%s %s: %d-byte body, over the tracker's limit", method, path, len(body))
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if method == http.MethodPost {
		if err := tracker.Sign(req, c.opts.Signer, body); err != nil {
			return err
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		err = fmt.Errorf("%s %s%s: %w", method, e.base, path, err)
		switch {
		case errors.Is(parent.Err(), context.Canceled):
			return err // the caller gave up
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
			return errSlow{err}
		}
		return errDown{err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, tracker.MaxBody+1))
	if err != nil {
		return errDown{fmt.Errorf("%s %s%s: read answer: %w", method, e.base, path, err)}
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("%s %s%s: %s: %s", method, e.base, path, resp.Status, strings.TrimSpace(string(raw[:min(len(raw), 200)])))
		if resp.StatusCode >= 500 {
			return errDown{err}
		}
		return err
	}
	if len(raw) > tracker.MaxBody {
		return errDown{fmt.Errorf("%s %s%s: answer over %d bytes", method, e.base, path, tracker.MaxBody)}
	}
	if err := tracker.Decode(raw, out); err != nil {
		return errDown{fmt.Errorf("%s %s%s: answer: %w", method, e.base, path, err)}
	}
	return nil
}

// nowMillis is the Time of a request.
func nowMillis() int64 { return time.Now().UnixMilli() }

// addrs is the node's addrs within the tracker's limits.
func (c *Client) addrs() []string {
	var out []string
	for _, a := range c.opts.Addrs() {
		if len(a) <= tracker.MaxAddrLen && len(out) < tracker.MaxAddrs {
			out = append(out, a)
		}
	}
	return out
}
