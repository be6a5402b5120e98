// Package registryapi is the HTTP edge of a shoal node: the pull side of the OCI
// distribution API that containerd (or any registry client) uses as a registry mirror.
//
// A Server validates every request (repository name, reference, the ns parameter that
// selects the upstream registry, Range) before it asks the node for anything, answers
// from a BlobSource and a ManifestSource, and maps their errors onto OCI error bodies so
// that a miss sends the client on to its next host. It never challenges for credentials
// and refuses every write method.
package registryapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Server.
type Options struct {
	// Blobs and Manifests answer the requests that pass validation; both are required.
	Blobs     BlobSource
	Manifests ManifestSource
	// Registries are the registry keys this node mirrors, e.g. "docker.io", "ghcr.io",
	// "127.0.0.1:5000". A request's ns must name one of them (after NormalizeNamespace).
	Registries []string
	// Default is the registry used for requests without ns; it must be one of
	// Registries. "" answers such requests with 404 NAME_UNKNOWN.
	Default string
	// Logger receives a Debug line per request and an Error line per failure a client
	// sees; nil discards.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil means none are exported.
	Registerer prometheus.Registerer
}

// Server serves the /v2 pull API. It is an http.Handler.
type Server struct {
	blobs      BlobSource
	manifests  ManifestSource
	registries map[string]string // normalised key -> key as configured (what sources see)
	def        string            // configured key, or ""
	log        *slog.Logger
	metrics    *metrics
	cacheBytes atomic.Int64 // the served{source="cache"} counter, readable
}

// CacheBytesServed is every blob byte served to clients from the cache so far.
func (s *Server) CacheBytesServed() int64 { return s.cacheBytes.Load() }

// NewServer checks opts and builds a Server.
func NewServer(opts Options) (*Server, error) {
	if opts.Blobs == nil || opts.Manifests == nil {
		return nil, errors.New("registryapi: Blobs and Manifests are required")
	}
	if len(opts.Registries) == 0 {
		return nil, errors.New("registryapi: no registries to mirror")
	}
	s := &Server{
		blobs:      opts.Blobs,
		manifests:  opts.Manifests,
		registries: make(map[string]string, len(opts.Registries)),
		log:        opts.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, reg := range opts.Registries {
		key, err := NormalizeNamespace(reg)
		if err != nil {
			return nil, fmt.Errorf("registryapi: registry %q: %w", reg, err)
		}
		if prev, dup := s.registries[key]; dup && prev != reg {
			return nil, fmt.Errorf("registryapi: registries %q and %q are the same", prev, reg)
		}
		s.registries[key] = reg
	}
	if opts.Default != "" {
		key, err := NormalizeNamespace(opts.Default)
		if err != nil {
			return nil, fmt.Errorf("registryapi: default registry %q: %w", opts.Default, err)
		}
		reg, ok := s.registries[key]
		if !ok {
			return nil, fmt.Errorf("registryapi: default registry %q is not among the registries", opts.Default)
		}
		s.def = reg
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("registryapi: %w", err)
	}
	s.metrics = m
	return s, nil
}

// request is a validated request, filled in as far as parsing got.
type request struct {
	kind  kind
	route route
	repo  Repo
}

// outcome is what serving a request came to, for metrics and the log.
type outcome struct {
	status int
	result string
	bytes  int64
	source string // blobs: where the bytes came from
	// fromPeers and fromOrigin: bytes of a downloaded blob fetched from each (fetched set).
	fromPeers, fromOrigin int64
	fetched               bool
	err                   error
	// abort cuts the connection after the handler returns: the body already promised
	// with the status line cannot be delivered.
	abort bool
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	q, err := s.parse(w, r)
	var out outcome
	switch {
	case err != nil:
		out = s.fail(w, r, q, err)
	case q.kind == kindBase:
		out = serveBase(w, r)
	case q.kind == kindBlob:
		out = s.serveBlob(w, r, q)
	case q.kind == kindManifest:
		out = s.serveManifest(w, r, q)
	}
	s.observe(r, q, out, time.Since(begin))
	if out.abort {
		// net/http recovers this value silently and closes the connection, so the client
		// sees a truncated body instead of a clean end.
		panic(http.ErrAbortHandler)
	}
}

// parse validates everything about r that does not need a source, in the order that gives
// a mirror client the most useful answer: not ours, then read-only, then malformed, then
// not mirrored.
func (s *Server) parse(w http.ResponseWriter, r *http.Request) (*request, error) {
	rt, err := parsePath(r.URL.EscapedPath())
	q := &request{kind: rt.kind, route: rt}
	if errors.Is(err, errOutside) {
		return q, err
	}
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return q, errMethod
	}
	if err != nil || q.kind == kindBase {
		return q, err
	}
	reg, err := s.registry(w, r.URL.RawQuery)
	if err != nil {
		return q, err
	}
	name := rt.name
	if s.isDockerHub(reg) && !strings.Contains(name, "/") {
		name = "library/" + name
	}
	q.repo = Repo{Registry: reg, Name: name}
	return q, nil
}

// registry picks the upstream for a request from its ns parameter. The value is only
// looked up among the configured registries; nothing is ever derived from it.
func (s *Server) registry(w http.ResponseWriter, rawQuery string) (string, error) {
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", errMalformedQuery
	}
	values := query["ns"]
	switch len(values) {
	case 0:
		if s.def == "" {
			return "", errUnknownRegistry
		}
		return s.def, nil
	case 1:
	default:
		return "", fmt.Errorf("%d ns parameters: %w", len(values), ErrNamespaceInvalid)
	}
	key, err := NormalizeNamespace(values[0])
	if err != nil {
		return "", err
	}
	reg, ok := s.registries[key]
	if !ok {
		return "", errUnknownRegistry
	}
	// Valid by now, so safe to echo (OCI distribution spec, "Registry Proxying").
	w.Header().Set("OCI-Namespace", values[0])
	return reg, nil
}

func (s *Server) isDockerHub(reg string) bool {
	return s.registries[DockerHub] == reg
}

func serveBase(w http.ResponseWriter, r *http.Request) outcome {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "{}")
	}
	return outcome{status: http.StatusOK, result: resultOK}
}

// fail answers r with the error. A client that has gone gets no answer.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, q *request, err error) outcome {
	if r.Context().Err() != nil {
		return outcome{status: statusClientClosed, result: resultCanceled, err: err}
	}
	e := errorFor(q.kind, err)
	var detail any
	if e.result == resultNotFound && q.route.reference != "" {
		detail = q.route.reference
	}
	e.write(w, r, detail)
	return outcome{status: e.status, result: e.result, err: err}
}

// observe counts and logs one request. Lines at Error are for failures a client sees that
// are the node's fault; Warn for those that send the client to the upstream.
func (s *Server) observe(r *http.Request, q *request, out outcome, took time.Duration) {
	k := q.kind
	if k == kindBase {
		k = kindOther
	}
	s.metrics.requests.WithLabelValues(k.String(), methodLabel(r.Method), out.result).Inc()
	s.metrics.duration.WithLabelValues(k.String()).Observe(took.Seconds())
	if out.source != "" && out.bytes > 0 {
		s.metrics.served.WithLabelValues(out.source).Add(float64(out.bytes))
		if out.source == "cache" {
			s.cacheBytes.Add(out.bytes)
		}
	}

	// A blob a client pulled gets one line at Info: what, how much, how long, from where.
	level, msg := slog.LevelDebug, "registry request"
	if k == kindBlob && r.Method == http.MethodGet && out.result == resultOK {
		level, msg = slog.LevelInfo, "blob pulled"
	}
	switch out.result {
	case resultError, resultAborted:
		level = slog.LevelError
	case resultDenied, resultRateLimited, resultUnavailable:
		level = slog.LevelWarn
	case resultNotFound:
		if errors.Is(out.err, ErrTooLarge) {
			level = slog.LevelWarn
		}
	}
	ctx := context.WithoutCancel(r.Context())
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("kind", k.String()),
		slog.Int("status", out.status),
	}
	if q.repo.Name != "" {
		attrs = append(attrs, slog.String("repo", q.repo.String()))
	}
	if q.route.digest != "" {
		attrs = append(attrs, slog.String("digest", q.route.digest.String()))
	} else if q.route.reference != "" {
		attrs = append(attrs, slog.String("tag", q.route.reference))
	}
	if out.source != "" {
		attrs = append(attrs, slog.String("source", out.source))
	}
	attrs = append(attrs, slog.Int64("bytes", out.bytes), slog.Duration("duration", took))
	if out.fetched {
		attrs = append(attrs, slog.Int64("peerBytes", out.fromPeers), slog.Int64("originBytes", out.fromOrigin))
	}
	if out.err != nil {
		attrs = append(attrs, slog.Any("err", out.err))
	}
	s.log.LogAttrs(ctx, level, msg, attrs...)
}
