package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/backoff"
)

// call is one idempotent request to an upstream.
type call struct {
	method string
	path   string // escaped, starting with /v2/
	header http.Header
	// ok lists the statuses handed back to the caller; any other is an error.
	ok []int
}

// do sends rq to up with the authenticated transport for repo, following redirects and
// retrying transport errors, 5xx and 429 with backoff. A 401 from a cached transport
// (expired or revoked token, rotated credentials) rebuilds the transport once. The
// response is returned before its body is read, so nothing is retried once the caller
// starts consuming it.
func (c *Client) do(ctx context.Context, up *upstream, repo string, rq call) (*http.Response, error) {
	reauthed := false
	for attempt := 1; ; {
		start := time.Now()
		e, fresh, err := c.authTransport(ctx, up, repo)
		var resp *http.Response
		if err == nil {
			resp, err = c.send(ctx, up, e.rt, rq)
		}
		if err == nil {
			c.log.Debug("origin request", "method", rq.method, "repo", up.key+"/"+repo, "path", rq.path,
				"status", resp.StatusCode, "attempt", attempt, "duration", time.Since(start))
			if slices.Contains(rq.ok, resp.StatusCode) {
				return resp, nil
			}
		}
		if ctx.Err() != nil {
			if resp != nil {
				drain(resp.Body)
			}
			return nil, ctx.Err()
		}

		var retryAfter time.Duration
		if resp != nil {
			if resp.StatusCode == http.StatusTooManyRequests {
				retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
				c.log.Warn("upstream rate limit", "repo", up.key+"/"+repo, "retry_after", resp.Header.Get("Retry-After"))
			}
			err = responseError(resp)
		} else if e != nil {
			// Sending failed (errors from building the transport come classified).
			err = transportError(err)
		}

		if e != nil && !fresh && !reauthed && unauthorized(err) {
			// The cached token or credentials no longer work: start the dance again.
			c.auth.remove(e)
			reauthed = true
			continue
		}
		if attempt >= maxAttempts || !retryable(err) || retryAfter > maxRetryAfter {
			return nil, err
		}
		wait := retryBackoff.Delay(attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		c.log.Debug("retrying origin request", "repo", up.key+"/"+repo, "path", rq.path,
			"attempt", attempt, "duration", wait, "err", err)
		if err := c.wait(ctx, wait); err != nil {
			return nil, err
		}
		attempt++
	}
}

// send makes one request, following redirects.
func (c *Client) send(ctx context.Context, up *upstream, rt http.RoundTripper, rq call) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, rq.method, up.scheme+"://"+up.host+rq.path, nil)
	if err != nil {
		return nil, permanent(err)
	}
	for k, v := range rq.header {
		req.Header[k] = slices.Clone(v)
	}
	// Without this net/http asks for gzip and decodes it transparently, dropping
	// Content-Length and breaking ranges.
	req.Header.Set("Accept-Encoding", "identity")
	hc := &http.Client{Transport: rt, CheckRedirect: up.checkRedirect}
	resp, err := hc.Do(req)
	if err != nil {
		// After a refused redirect Do returns the last response too, its body closed.
		return nil, err
	}
	return resp, nil
}

// checkRedirect bounds redirects and makes sure no Authorization header follows a
// redirect off the registry's own scheme and host. The auth transport only adds tokens
// for the registry host, but net/http would copy a header set on the request itself to
// any host with the same name (ports are not compared) or to a subdomain.
func (up *upstream) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return permanent(fmt.Errorf("%w: stopped after %d redirects", ErrUnavailable, maxRedirects))
	}
	if !strings.EqualFold(req.URL.Host, up.host) || req.URL.Scheme != up.scheme {
		req.Header.Del("Authorization")
	}
	return nil
}

// unauthorized reports whether err is a 401 from the registry or its token endpoint.
func unauthorized(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusUnauthorized
}

// retryBackoff is the wait after each failed attempt: exponential from baseBackoff, with
// jitter so nodes that failed together do not retry together.
var retryBackoff = backoff.Exponential{Base: baseBackoff, Jitter: 0.5}

// parseRetryAfter reads a Retry-After value (seconds or an HTTP date). It returns 0 when
// the value is absent, malformed or already past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(time.Hour/time.Second) {
			return time.Hour
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

// repoPath escapes each segment of a repository name for use in a URL path. Names are
// validated by the caller; a name with empty, "." or ".." segments is refused here all
// the same, since it would address another path on the registry.
func repoPath(repo string) (string, error) {
	if repo == "" {
		return "", errors.New("empty repository name")
	}
	segs := strings.Split(repo, "/")
	for i, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("invalid repository name %q", repo)
		}
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/"), nil
}
