// Package origin is the node's client for the upstream registries it mirrors (the
// "origin"). It fetches manifests and blobs over the OCI distribution API, handling the
// token and basic auth dance, redirects to blob storage, ranged reads, bounded retries and
// the mapping of upstream answers onto a small set of sentinel errors.
//
// Only registries named in Options.Upstreams are ever contacted: a request for any other
// registry key fails with ErrUnknownRegistry before any network I/O, so a registry name
// taken from a client request can never steer the node to an arbitrary host.
package origin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/shoal-dev/shoal/internal/backoff"
)

// MaxManifestSize is the largest manifest or index the client accepts, as containerd and
// distribution do.
const MaxManifestSize = 4 << 20

const (
	// maxAttempts bounds the requests made for one idempotent call.
	maxAttempts = 3
	// maxRedirects bounds the redirects followed for one request.
	maxRedirects = 10
	// maxRetryAfter is the longest Retry-After the client waits for; a longer one fails
	// the call at once, as retrying sooner would only be refused again.
	maxRetryAfter = 5 * time.Second
	// baseBackoff is the wait before the second attempt; it doubles after that.
	baseBackoff = 200 * time.Millisecond
	// authCacheSize bounds the authenticated transports kept, one per (registry, repo).
	authCacheSize = 512
)

// Options configures a Client.
type Options struct {
	// Upstreams maps a registry key to the base URL requests go to, e.g. "docker.io" ->
	// "https://registry-1.docker.io" or "127.0.0.1:5000" -> "http://127.0.0.1:5000". The
	// URL's scheme decides between http and https.
	Upstreams map[string]string
	// DockerConfig is the path of a docker config.json holding credentials ("auths",
	// credential helpers). Empty means anonymous access everywhere. The file is read
	// again when it changes, so rotated credentials are picked up without a restart.
	DockerConfig string
	// Transport carries every request. Nil means a default tuned for registries: bounded
	// dial, TLS and response-header timeouts but no overall timeout, since blob bodies
	// can be gigabytes.
	Transport http.RoundTripper
	// Logger receives debug records per request and warnings on rate limiting. Nil
	// discards.
	Logger *slog.Logger
	// UserAgent, when set, is sent as the User-Agent of every request.
	UserAgent string
}

// Client talks to the configured upstream registries. It is safe for concurrent use.
type Client struct {
	upstreams map[string]*upstream
	transport http.RoundTripper
	owned     *http.Transport // the default transport, when the client built it
	creds     *credentials
	auth      *authCache
	log       *slog.Logger
	userAgent string
	// wait pauses between attempts; tests replace it to observe backoff without waiting.
	wait func(ctx context.Context, d time.Duration) error
}

// upstream is one configured registry.
type upstream struct {
	key    string
	scheme string
	host   string // host[:port] requests are sent to
	reg    name.Registry
	rt     http.RoundTripper // the client's transport, pinned to this upstream's scheme
}

// New validates opts and returns a Client. It reads DockerConfig once to fail early on a
// malformed file.
func New(opts Options) (*Client, error) {
	c := &Client{
		upstreams: make(map[string]*upstream, len(opts.Upstreams)),
		transport: opts.Transport,
		log:       opts.Logger,
		userAgent: opts.UserAgent,
		auth:      newAuthCache(authCacheSize),
		wait:      sleep,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.transport == nil {
		c.owned = defaultTransport()
		c.transport = c.owned
	}
	keys := make([]string, 0, len(opts.Upstreams))
	for key := range opts.Upstreams {
		keys = append(keys, key)
	}
	sort.Strings(keys) // deterministic error messages
	for _, key := range keys {
		up, err := c.newUpstream(key, opts.Upstreams[key])
		if err != nil {
			return nil, err
		}
		c.upstreams[key] = up
	}
	creds, err := loadCredentials(opts.DockerConfig, c.log)
	if err != nil {
		return nil, err
	}
	c.creds = creds
	return c, nil
}

func (c *Client) newUpstream(key, raw string) (*upstream, error) {
	if key == "" {
		return nil, fmt.Errorf("upstream %q: empty registry key", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", key, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("upstream %s: URL %q: scheme must be http or https", key, raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("upstream %s: URL %q has no host", key, raw)
	case u.User != nil:
		return nil, fmt.Errorf("upstream %s: URL must not carry credentials; use the docker config", key)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("upstream %s: URL %q must not have a query or fragment", key, raw)
	case u.Path != "" && u.Path != "/":
		// The distribution API lives at /v2/ on the host's root.
		return nil, fmt.Errorf("upstream %s: URL %q must not have a path", key, raw)
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(strings.ToLower(u.Host), nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", key, err)
	}
	up := &upstream{
		key:    key,
		scheme: u.Scheme,
		// name rewrites "docker.io" to "index.docker.io"; requests and the
		// authenticated transport must agree on the host.
		host: reg.RegistryStr(),
		reg:  reg,
	}
	up.rt = &pinnedTransport{up: up, inner: c.transport, userAgent: c.userAgent}
	return up, nil
}

// CloseIdleConnections closes the idle connections of the default transport. It does
// nothing when Options.Transport was given: whoever built that transport owns it.
func (c *Client) CloseIdleConnections() {
	if c.owned != nil {
		c.owned.CloseIdleConnections()
	}
}

// lookup returns the configured upstream for a registry key.
func (c *Client) lookup(registry string) (*upstream, error) {
	up, ok := c.upstreams[registry]
	if !ok {
		return nil, fmt.Errorf("registry %q: %w", registry, ErrUnknownRegistry)
	}
	return up, nil
}

func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		// Swarm downloads fetch several chunks of one blob from the origin at once.
		MaxIdleConnsPerHost: 16,
		// Layers are compressed already, and transparent decoding would hide the real
		// Content-Length and break ranged reads.
		DisableCompression: true,
	}
}

// pinnedTransport sends requests for the upstream's own host with the upstream's scheme
// (go-containerregistry guesses http for loopback and private addresses and https
// elsewhere; the configured URL is authoritative) and sets the User-Agent.
type pinnedTransport struct {
	up        *upstream
	inner     http.RoundTripper
	userAgent string
}

func (p *pinnedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	repin := strings.EqualFold(req.URL.Host, p.up.host) && req.URL.Scheme != p.up.scheme
	if !repin && p.userAgent == "" {
		return p.inner.RoundTrip(req)
	}
	// A RoundTripper must not modify the request it was given.
	r := req.Clone(req.Context())
	if repin {
		r.URL.Scheme = p.up.scheme
	}
	if p.userAgent != "" {
		r.Header.Set("User-Agent", p.userAgent)
	}
	return p.inner.RoundTrip(r)
}

// sleep waits for d or until ctx is done.
var sleep = backoff.Sleep

// drain discards a little of what is left of a body before closing it, so the connection
// can be reused for the next request.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
