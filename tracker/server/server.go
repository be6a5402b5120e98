// Package server is shoal's tracker: the HTTP handlers of the protocol in package tracker,
// over State, the soft state of swarms and chunk leases. It checks every signed request
// against the peer's key and the addresses a peer announces against its ID, which is why it,
// unlike the protocol and the client, uses p2p.
package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/tracker"
)

// Options configure New.
type Options struct {
	// Addrs returns the tracker's own libp2p addresses, each ending in /p2p/<id>, which
	// /bootstrap lists first. Nil means none.
	Addrs func() []string
	// Limits cap the state; zero fields take the defaults.
	Limits Limits
	// Registry receives the tracker's metrics and is what /metrics serves; nil means a
	// registry of its own.
	Registry *prometheus.Registry
	// Logger receives lifecycle and per-request messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the tracker's HTTP API: see package tracker for the protocol. It holds only soft state
// and needs no background work: expired entries are swept as requests arrive.
type Server struct {
	state    *State
	instance string
	addrs    func() []string
	log      *slog.Logger
	mux      *http.ServeMux

	announces *prometheus.CounterVec
	leases    *prometheus.CounterVec
	refused   prometheus.Counter
	duration  *prometheus.HistogramVec
}

// Results of requests, the values of the result label.
const (
	resultOK           = "ok"
	resultGranted      = "granted"
	resultHeld         = "held"
	resultReleased     = "released"
	resultInvalid      = "invalid"
	resultTooLarge     = "too_large"
	resultUnauthorized = "unauthorized"
	resultConflict     = "conflict"
	resultNotMember    = "not_member"
	resultFull         = "full"
)

// New returns a tracker with empty state and a fresh random Instance.
func New(o Options) (*Server, error) {
	var id [16]byte
	rand.Read(id[:])
	s := &Server{
		state:    NewState(o.Limits, o.Now),
		instance: hex.EncodeToString(id[:]),
		addrs:    o.Addrs,
		log:      o.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.addrs == nil {
		s.addrs = func() []string { return nil }
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.announces = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_tracker_announces_total",
		Help: "Announces received, by result.",
	}, []string{"result"})
	s.leases = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_tracker_leases_total",
		Help: "Lease requests received, by result.",
	}, []string{"result"})
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_tracker_refused_entries_total",
		Help: "Peers and swarm memberships not recorded because the tracker was full.",
	})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "shoal_tracker_request_duration_seconds",
		Help:    "Time to answer requests, by path.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	}, []string{"path"})
	for _, c := range []prometheus.Collector{s.announces, s.leases, s.refused, s.duration, stateCollector{s.state}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register tracker metrics: %w", err)
		}
	}

	s.mux = http.NewServeMux()
	s.mux.Handle("POST "+tracker.PathAnnounce, s.timed(tracker.PathAnnounce, s.handleAnnounce))
	s.mux.Handle("POST "+tracker.PathLease, s.timed(tracker.PathLease, s.handleLease))
	s.mux.Handle("GET "+tracker.PathBootstrap, s.timed(tracker.PathBootstrap, s.handleBootstrap))
	s.mux.Handle("GET "+tracker.PathSwarms, s.timed(tracker.PathSwarms, s.handleSwarms))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // a prober that left needs no answer
	})
	s.log.Info("tracker started", "instance", s.instance)
	return s, nil
}

// Instance identifies this run of the tracker.
func (s *Server) Instance() string { return s.instance }

// ServeHTTP serves the tracker's API, /metrics and /healthz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) timed(path string, h http.HandlerFunc) http.Handler {
	obs := s.duration.WithLabelValues(path)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h(w, r)
		obs.Observe(time.Since(start).Seconds())
	})
}

// refusal is a refused request: its status, a short message and the metrics result.
type refusal struct {
	status int
	result string
	msg    string
}

func (e *refusal) Error() string { return e.msg }

func refuse(status int, result, format string, args ...any) *refusal {
	return &refusal{status: status, result: result, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	var req tracker.AnnounceRequest
	if rerr := s.readSigned(w, r, tracker.PathAnnounce, &req, func() (string, int64) { return req.Peer, req.Time }); rerr != nil {
		s.fail(w, r, s.announces, rerr)
		return
	}
	if rerr := checkAnnounce(req); rerr != nil {
		s.fail(w, r, s.announces, rerr)
		return
	}
	res, err := s.state.Announce(req)
	if err != nil {
		s.fail(w, r, s.announces, refusalOf(err))
		return
	}
	if res.Refused > 0 {
		s.refused.Add(float64(res.Refused))
		s.log.Warn("tracker full: announce entries not recorded", "peer", req.Peer, "refused", res.Refused)
	}
	s.announces.WithLabelValues(resultOK).Inc()
	s.log.Debug("announce", "peer", req.Peer, "blobs", len(req.Blobs))
	serveJSON(w, http.StatusOK, tracker.AnnounceResponse{Instance: s.instance, Swarms: res.Swarms, IntervalMillis: res.Interval.Milliseconds()})
}

func (s *Server) handleLease(w http.ResponseWriter, r *http.Request) {
	var req tracker.LeaseRequest
	if rerr := s.readSigned(w, r, tracker.PathLease, &req, func() (string, int64) { return req.Peer, req.Time }); rerr != nil {
		s.fail(w, r, s.leases, rerr)
		return
	}
	if rerr := checkLease(req); rerr != nil {
		s.fail(w, r, s.leases, rerr)
		return
	}
	resp, err := s.state.Lease(req)
	if err != nil {
		s.fail(w, r, s.leases, refusalOf(err))
		return
	}
	result := resultHeld
	switch {
	case req.Release:
		result = resultReleased
	case resp.Granted:
		result = resultGranted
	}
	s.leases.WithLabelValues(result).Inc()
	s.log.Debug("lease", "peer", req.Peer, "digest", req.Digest, "chunk", req.Chunk, "result", result)
	serveJSON(w, http.StatusOK, resp)
}

func (s *Server) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	peers := slices.Concat([]string{}, s.addrs(), s.state.Bootstrap())
	serveJSON(w, http.StatusOK, tracker.BootstrapResponse{Peers: peers})
}

func (s *Server) handleSwarms(w http.ResponseWriter, r *http.Request) {
	serveJSON(w, http.StatusOK, tracker.SwarmsResponse{Instance: s.instance, Swarms: s.state.Swarms()})
}

// readSigned reads a signed request's body, checks its signature against HeaderPeer, and
// decodes it strictly into v. sender returns the peer and time v claims once decoded: the
// peer must be the one that signed, the time within MaxClockSkew of the tracker's.
func (s *Server) readSigned(w http.ResponseWriter, r *http.Request, path string, v any, sender func() (string, int64)) *refusal {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, tracker.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return refuse(http.StatusRequestEntityTooLarge, resultTooLarge, "body over %d bytes", tracker.MaxBody)
		}
		return refuse(http.StatusBadRequest, resultInvalid, "read body: %v", err)
	}
	peer, err := tracker.Verify(r.Header, r.Method, path, body, p2p.VerifySignature)
	if err != nil {
		return refuse(http.StatusUnauthorized, resultUnauthorized, "%v", err)
	}
	if err := tracker.Decode(body, v); err != nil {
		return refuse(http.StatusBadRequest, resultInvalid, "body: %v", err)
	}
	claimed, ms := sender()
	if claimed != peer {
		return refuse(http.StatusUnauthorized, resultUnauthorized, "peer %q is not the signer %s", claimed, peer)
	}
	if skew := s.state.now().Sub(time.UnixMilli(ms)).Abs(); skew > tracker.MaxClockSkew {
		return refuse(http.StatusUnauthorized, resultUnauthorized, "time is %v off the tracker's clock, over %v", skew.Round(time.Second), tracker.MaxClockSkew)
	}
	return nil
}

// checkAnnounce checks what an announce may say on its own; State checks it against the
// swarms.
func checkAnnounce(req tracker.AnnounceRequest) *refusal {
	bad := func(format string, args ...any) *refusal {
		return refuse(http.StatusBadRequest, resultInvalid, format, args...)
	}
	if len(req.Addrs) > tracker.MaxAddrs {
		return bad("%d addrs, over %d", len(req.Addrs), tracker.MaxAddrs)
	}
	for _, a := range req.Addrs {
		if len(a) > tracker.MaxAddrLen {
			return bad("addr of %d bytes, over %d", len(a), tracker.MaxAddrLen)
		}
		if err := p2p.CheckPeerAddr(a, req.Peer); err != nil {
			return bad("%v", err)
		}
	}
	if len(req.Blobs) > tracker.MaxBlobs {
		return bad("%d blobs, over %d", len(req.Blobs), tracker.MaxBlobs)
	}
	seen := make(map[digest.Digest]bool, len(req.Blobs))
	for _, b := range req.Blobs {
		if err := b.Digest.Validate(); err != nil {
			return bad("digest %.80q: %v", b.Digest, err)
		}
		if seen[b.Digest] {
			return bad("%s announced twice", b.Digest)
		}
		seen[b.Digest] = true
		switch {
		case b.Size < 0 || b.ChunkSize < 0 || b.Done < 0 || b.FromOrigin < 0 || b.FromPeers < 0:
			return bad("%s: negative size or count", b.Digest)
		case b.Done > b.Size:
			return bad("%s: done %d over size %d", b.Digest, b.Done, b.Size)
		}
	}
	return nil
}

func checkLease(req tracker.LeaseRequest) *refusal {
	bad := func(format string, args ...any) *refusal {
		return refuse(http.StatusBadRequest, resultInvalid, format, args...)
	}
	switch err := req.Digest.Validate(); {
	case err != nil:
		return bad("digest %.80q: %v", req.Digest, err)
	case req.Size <= 0 || req.ChunkSize <= 0:
		return bad("size and chunk size must be positive")
	case req.Chunk < 0:
		return bad("negative chunk index")
	case req.Done && !req.Release:
		return bad("done without release")
	}
	return nil
}

// refusalOf maps State's errors to responses.
func refusalOf(err error) *refusal {
	switch {
	case errors.Is(err, ErrConflict):
		return refuse(http.StatusConflict, resultConflict, "%v", err)
	case errors.Is(err, ErrNotMember):
		return refuse(http.StatusConflict, resultNotMember, "%v", err)
	case errors.Is(err, ErrOutOfRange):
		return refuse(http.StatusBadRequest, resultInvalid, "%v", err)
	case errors.Is(err, ErrFull):
		return refuse(http.StatusServiceUnavailable, resultFull, "%v", err)
	}
	return refuse(http.StatusInternalServerError, "error", "%v", err)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, results *prometheus.CounterVec, e *refusal) {
	results.WithLabelValues(e.result).Inc()
	s.log.Debug("request refused", "path", r.URL.Path, "peer", r.Header.Get(tracker.HeaderPeer), "status", e.status, "err", e.msg)
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "10")
	}
	serveJSON(w, e.status, refusalBody{Error: e.msg})
}

type refusalBody struct {
	Error string `json:"error"`
}

func serveJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // fails only once the client has gone
}

// stateCollector exports the sizes of the state, read once per scrape.
type stateCollector struct{ state *State }

var (
	peersDesc   = prometheus.NewDesc("shoal_tracker_peers", "Peers known: announced within the holder TTL or members of a swarm.", nil, nil)
	swarmsDesc  = prometheus.NewDesc("shoal_tracker_swarms", "Blobs with at least one member.", nil, nil)
	membersDesc = prometheus.NewDesc("shoal_tracker_members", "Members over all swarms.", nil, nil)
	leasesDesc  = prometheus.NewDesc("shoal_tracker_leases_active", "Chunks leased to a member.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- swarmsDesc
	ch <- membersDesc
	ch <- leasesDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state.Stats()
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(st.Peers))
	ch <- prometheus.MustNewConstMetric(swarmsDesc, prometheus.GaugeValue, float64(st.Swarms))
	ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(st.Members))
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(st.Leases))
}
