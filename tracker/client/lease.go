package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/tracker"
)

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
	req     tracker.LeaseRequest
	stop    chan struct{}
	once    sync.Once
	renewed sync.WaitGroup
}

// Lease asks for the lease on chunk of d (size bytes in chunks of chunkSize) from the
// tracker the digest hashes to, falling over to the next when it does not answer. Granted:
// a Lease, renewed every third of its TTL until released. Refused: a nil Lease and the
// holder's peer ID when the tracker named a valid one. ErrUnavailable (at once when every
// tracker is known to be down): no tracker answered; with ErrSlow too when one skipped was
// down for answering late, not for being unreachable.
func (c *Client) Lease(ctx context.Context, d digest.Digest, size, chunkSize int64, chunk int) (*Lease, string, error) {
	req := tracker.LeaseRequest{Peer: c.self, Digest: d, Size: size, ChunkSize: chunkSize, Chunk: chunk}
	var errs []error
	now := time.Now()
	slowSkipped := false
	for _, e := range c.order(d) {
		if !e.available(now) {
			slowSkipped = slowSkipped || e.downSlow()
			continue
		}
		resp, err := c.postLease(ctx, e, req)
		if err == nil && !resp.Granted {
			c.result(e, "lease", errors.New("refused"))
			holder := ""
			if _, err := c.opts.PeerAddrs(resp.Holder, nil); err == nil && resp.Holder != c.self {
				holder = resp.Holder
			}
			return nil, holder, nil
		}
		c.result(e, "lease", err)
		if err == nil {
			l := &Lease{c: c, e: e, req: req, stop: make(chan struct{})}
			ttl := time.Duration(resp.TTLMillis) * time.Millisecond
			if ttl <= 0 || ttl > tracker.LeaseTTL {
				ttl = tracker.LeaseTTL
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
	if slowSkipped {
		// A loaded tracker may well answer the next ask: no reason to fetch without.
		errs = append(errs, ErrSlow)
	}
	if len(errs) == 0 {
		return nil, "", ErrUnavailable
	}
	return nil, "", fmt.Errorf("lease chunk %d of %s: %w: %w", chunk, d, ErrUnavailable, errors.Join(errs...))
}

// postLease sends req to e, stamped with the time now.
func (c *Client) postLease(ctx context.Context, e *endpoint, req tracker.LeaseRequest) (tracker.LeaseResponse, error) {
	req.Time = nowMillis()
	var resp tracker.LeaseResponse
	err := c.do(ctx, e, http.MethodPost, tracker.PathLease, req, &resp)
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
		if err != nil && !errors.As(err, new(errDown)) && !errors.As(err, new(errSlow)) {
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
