package tracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/p2p"
)

// ErrUnavailable means no configured tracker could answer (or all are known to be down).
var ErrUnavailable = errors.New("no tracker available")

// Signer signs requests with the node's identity; p2p.Signer is one.
type Signer interface {
	ID() string
	Sign(data []byte) ([]byte, error)
}

// Client timing defaults.
const (
	// DefaultTimeout bounds one request: a tracker slower than this is treated as down.
	DefaultTimeout = time.Second
	// DefaultBackoff is how long a tracker that failed is left alone at first; each failure in
	// a row doubles it, up to maxBackoff.
	DefaultBackoff = 2 * time.Second
	maxBackoff     = 30 * time.Second
)

// ClientOptions configure NewClient.
type ClientOptions struct {
	// URLs are the trackers' base URLs (http or https); at least one.
	URLs []string
	// Signer signs every POST.
	Signer Signer
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
	opts     ClientOptions
	self     string
	http     *http.Client
	log      *slog.Logger
	trackers []*endpoint

	requests *prometheus.CounterVec
	up       atomic.Bool

	restarted chan struct{}

	mu      sync.Mutex
	members map[digest.Digest]map[*endpoint][]Member // the latest answer of each tracker for downloads

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
	instance  string
}

// NewClient checks o and returns a client.
func NewClient(o ClientOptions) (*Client, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("no tracker URL")
	}
	if o.Signer == nil {
		return nil, errors.New("no signer")
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
		self:      o.Signer.ID(),
		http:      o.HTTPClient,
		log:       o.Logger,
		restarted: make(chan struct{}, 1),
		members:   make(map[digest.Digest]map[*endpoint][]Member),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_requests_total",
			Help: "Requests to trackers, by operation (announce, lease, bootstrap) and result (ok, refused, error).",
		}, []string{"op", "result"}),
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	seen := make(map[string]bool)
	for _, raw := range o.URLs {
		base, err := ParseURL(raw)
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

// ParseURL checks a tracker's base URL (http or https with a host, no query) and returns it
// without a trailing slash.
func ParseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("tracker URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("tracker URL %q: want http[s]://host[:port][/path]", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
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

// errDown marks a failure that says the tracker is not answering.
type errDown struct{ err error }

func (e errDown) Error() string { return e.err.Error() }
func (e errDown) Unwrap() error { return e.err }

// result records how a request to e ended.
func (c *Client) result(e *endpoint, op string, err error) {
	down := errors.As(err, new(errDown))
	switch {
	case err == nil:
		c.requests.WithLabelValues(op, "ok").Inc()
	case down:
		c.requests.WithLabelValues(op, "error").Inc()
	default:
		// The tracker answered, refusing the request: it is up.
		c.requests.WithLabelValues(op, "refused").Inc()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if down {
		wait := min(c.opts.Backoff<<min(e.failures, 8), maxBackoff)
		e.failures++
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
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if len(body) > MaxBody {
			return fmt.Errorf("%s %s: %d-byte body, over the tracker's limit", method, path, len(body))
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if method == http.MethodPost {
		if err := Sign(req, c.opts.Signer, body); err != nil {
			return err
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return errDown{fmt.Errorf("%s %s%s: %w", method, e.base, path, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
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
	if len(raw) > MaxBody {
		return errDown{fmt.Errorf("%s %s%s: answer over %d bytes", method, e.base, path, MaxBody)}
	}
	if err := decodeStrict(raw, out); err != nil {
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
		if len(a) <= MaxAddrLen && len(out) < MaxAddrs {
			out = append(out, a)
		}
	}
	return out
}

// Announce tells every tracker not known to be down about blobs (in requests of at most
// MaxBlobs each) and returns the members they answered for the blobs neither complete nor
// gone, merged across trackers, this node left out. It fails only when no tracker answered.
// The members of downloads are also kept for Members.
func (c *Client) Announce(ctx context.Context, blobs []BlobState) (map[digest.Digest][]Member, error) {
	now := time.Now()
	var live []*endpoint
	for _, e := range c.trackers {
		if e.available(now) {
			live = append(live, e)
		}
	}
	if len(live) == 0 {
		return nil, ErrUnavailable
	}
	type answer struct {
		e     *endpoint
		swarm map[digest.Digest][]Member
		err   error
	}
	answers := make([]answer, len(live))
	var wg sync.WaitGroup
	for i, e := range live {
		wg.Go(func() {
			answers[i] = answer{e: e, swarm: make(map[digest.Digest][]Member)}
			for batch := range slices.Chunk(blobs, MaxBlobs) {
				got, err := c.announceOne(ctx, e, batch)
				if err != nil {
					answers[i].err = err
					return
				}
				for d, m := range got {
					answers[i].swarm[d] = m
				}
			}
		})
	}
	wg.Wait()

	downloading := make(map[digest.Digest]bool)
	for _, b := range blobs {
		downloading[b.Digest] = !b.Complete && !b.Gone
	}
	var errs []error
	merged := make(map[digest.Digest][]Member)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		for d, running := range downloading {
			if !running {
				delete(c.members, d)
				continue
			}
			byTracker := c.members[d]
			if byTracker == nil {
				byTracker = make(map[*endpoint][]Member)
				c.members[d] = byTracker
			}
			byTracker[a.e] = a.swarm[d]
		}
	}
	if len(errs) == len(answers) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	for d, running := range downloading {
		if running {
			merged[d] = c.mergedLocked(d)
		}
	}
	return merged, nil
}

// announceOne sends one announce to e and returns the validated members of the swarm of
// each download among blobs.
func (c *Client) announceOne(ctx context.Context, e *endpoint, blobs []BlobState) (map[digest.Digest][]Member, error) {
	req := AnnounceRequest{Peer: c.self, Addrs: c.addrs(), Time: nowMillis(), Blobs: blobs}
	var resp AnnounceResponse
	err := c.do(ctx, e, http.MethodPost, PathAnnounce, req, &resp)
	c.result(e, "announce", err)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	changed := e.instance != "" && resp.Instance != e.instance
	e.instance = resp.Instance
	e.mu.Unlock()
	if changed {
		c.log.Info("tracker restarted, announcing everything again", "tracker", e.base)
		select {
		case c.restarted <- struct{}{}:
		default:
		}
	}
	downloading := make(map[digest.Digest]bool, len(blobs))
	for _, b := range blobs {
		downloading[b.Digest] = !b.Complete && !b.Gone
	}
	out := make(map[digest.Digest][]Member)
	for _, s := range resp.Swarms {
		if !downloading[s.Digest] {
			// Not a download of ours: the tracker sends members only for those, and an
			// answer from outside is input, not truth.
			continue
		}
		out[s.Digest] = c.validMembers(s.Members)
	}
	return out, nil
}

// validMembers keeps the members whose peer ID decodes, other than this node, once each, at
// most MaxMembers, each with only its own addrs (at most MaxAddrs).
func (c *Client) validMembers(ms []Member) []Member {
	var out []Member
	seen := make(map[string]bool)
	for _, m := range ms {
		if len(out) == MaxMembers {
			break
		}
		if m.Peer == c.self || seen[m.Peer] {
			continue
		}
		addrs, err := p2p.PeerAddrs(m.Peer, m.Addrs)
		if err != nil {
			c.log.Debug("tracker member skipped", "peer", m.Peer, "err", err)
			continue
		}
		seen[m.Peer] = true
		if len(addrs) > MaxAddrs {
			addrs = addrs[:MaxAddrs]
		}
		out = append(out, Member{Peer: m.Peer, Addrs: addrs, Done: max(m.Done, 0), Complete: m.Complete})
	}
	return out
}

// Members returns the latest members the trackers gave for the download of d, merged.
func (c *Client) Members(d digest.Digest) []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mergedLocked(d)
}

// Forget drops what is known of d's swarm.
func (c *Client) Forget(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, d)
}

// mergedLocked merges the members of d the trackers gave, keeping each peer once with the
// most progress any tracker saw; capped at MaxMembers. Callers hold mu.
func (c *Client) mergedLocked(d digest.Digest) []Member {
	byPeer := make(map[string]int)
	var out []Member
	for _, e := range c.trackers { // a fixed order, so the cap keeps the same members
		for _, m := range c.members[d][e] {
			if i, ok := byPeer[m.Peer]; ok {
				if m.Done > out[i].Done || m.Complete {
					out[i].Done, out[i].Complete = max(out[i].Done, m.Done), out[i].Complete || m.Complete
				}
				continue
			}
			if len(out) == MaxMembers {
				continue
			}
			byPeer[m.Peer] = len(out)
			out = append(out, Member{Peer: m.Peer, Addrs: slices.Clone(m.Addrs), Done: m.Done, Complete: m.Complete})
		}
	}
	return out
}

// Bootstrap asks every tracker, even one known to be down (joining is rare and off any
// download's path), for peers to join the DHT through, and returns them merged: multiaddrs
// ending in /p2p/<id>, this node's own left out. It fails only when no tracker answered.
func (c *Client) Bootstrap(ctx context.Context) ([]string, error) {
	var (
		peers []string
		errs  []error
		seen  = make(map[string]bool)
	)
	for _, e := range c.trackers {
		var resp BootstrapResponse
		err := c.do(ctx, e, http.MethodGet, PathBootstrap, nil, &resp)
		c.result(e, "bootstrap", err)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range resp.Peers {
			if len(peers) == MaxMembers || len(a) > MaxAddrLen || seen[a] {
				continue
			}
			id := a[strings.LastIndex(a, "/")+1:]
			if id == c.self || p2p.CheckPeerAddr(a, id) != nil {
				continue
			}
			seen[a] = true
			peers = append(peers, a)
		}
	}
	if len(errs) == len(c.trackers) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return peers, nil
}

// order returns the trackers ordered by rendezvous hash of d over their URLs: the same
// order on every node.
func (c *Client) order(d digest.Digest) []*endpoint {
	type scored struct {
		e     *endpoint
		score uint64
	}
	s := make([]scored, len(c.trackers))
	for i, e := range c.trackers {
		s[i] = scored{e, rendezvous.Weight(string(d), e.base, 0)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return strings.Compare(a.e.base, b.e.base)
	})
	out := make([]*endpoint, len(s))
	for i := range s {
		out[i] = s[i].e
	}
	return out
}

// Lease is a granted lease on one chunk, kept alive until Release.
type Lease struct {
	c       *Client
	e       *endpoint
	req     LeaseRequest
	stop    chan struct{}
	once    sync.Once
	renewed sync.WaitGroup
}

// Lease asks for the lease on chunk of d (size bytes in chunks of chunkSize) from the
// tracker the digest hashes to, falling over to the next when it does not answer. Granted:
// a Lease, renewed every third of its TTL until released. Refused: a nil Lease and the
// holder's peer ID when the tracker named a valid one. ErrUnavailable (at once when every
// tracker is known to be down): no tracker answered.
func (c *Client) Lease(ctx context.Context, d digest.Digest, size, chunkSize int64, chunk int) (*Lease, string, error) {
	req := LeaseRequest{Peer: c.self, Digest: d, Size: size, ChunkSize: chunkSize, Chunk: chunk}
	var errs []error
	now := time.Now()
	for _, e := range c.order(d) {
		if !e.available(now) {
			continue
		}
		resp, err := c.postLease(ctx, e, req)
		if err == nil && !resp.Granted {
			c.result(e, "lease", errors.New("refused"))
			holder := ""
			if _, err := p2p.PeerAddrs(resp.Holder, nil); err == nil && resp.Holder != c.self {
				holder = resp.Holder
			}
			return nil, holder, nil
		}
		c.result(e, "lease", err)
		if err == nil {
			l := &Lease{c: c, e: e, req: req, stop: make(chan struct{})}
			ttl := time.Duration(resp.TTLMillis) * time.Millisecond
			if ttl <= 0 || ttl > LeaseTTL {
				ttl = LeaseTTL
			}
			l.renewed.Add(1)
			if !c.background(func() { defer l.renewed.Done(); l.renew(ttl / 3) }) {
				l.renewed.Done()
			}
			return l, "", nil
		}
		if !errors.As(err, new(errDown)) {
			// A live tracker refused the request: another would not coordinate with it.
			return nil, "", fmt.Errorf("lease chunk %d of %s: %w", chunk, d, err)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, "", ErrUnavailable
	}
	return nil, "", fmt.Errorf("lease chunk %d of %s: %w: %w", chunk, d, ErrUnavailable, errors.Join(errs...))
}

// postLease sends req to e, stamped with the time now.
func (c *Client) postLease(ctx context.Context, e *endpoint, req LeaseRequest) (LeaseResponse, error) {
	req.Time = nowMillis()
	var resp LeaseResponse
	err := c.do(ctx, e, http.MethodPost, PathLease, req, &resp)
	return resp, err
}

// renew keeps the lease alive until it is released or refused.
func (l *Lease) renew(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.c.ctx.Done():
			return
		case <-t.C:
		}
		resp, err := l.c.postLease(l.c.ctx, l.e, l.req)
		if err == nil && !resp.Granted {
			err = errors.New("renewal refused")
		}
		l.c.result(l.e, "lease", err)
		if err != nil && !errors.As(err, new(errDown)) {
			l.c.log.Debug("lease lost", "digest", l.req.Digest, "chunk", l.req.Chunk, "err", err)
			return
		}
	}
}

// Release gives the lease back, done saying the chunk arrived whole. It does not block; the
// tracker is told in the background. Later calls do nothing.
func (l *Lease) Release(done bool) {
	l.once.Do(func() {
		close(l.stop)
		l.c.background(func() {
			l.renewed.Wait()
			req := l.req
			req.Release, req.Done = true, done
			_, err := l.c.postLease(l.c.ctx, l.e, req)
			if l.c.ctx.Err() != nil {
				return // closing: the lease runs out on its own
			}
			l.c.result(l.e, "lease", err)
			if err != nil {
				l.c.log.Debug("lease release", "digest", l.req.Digest, "chunk", l.req.Chunk, "err", err)
			}
		})
	})
}
