package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-dev/shoal/node/prefetch"
)

// Status is what /status reports.
type Status struct {
	Version      string      `json:"version"`
	PeerID       string      `json:"peerID,omitempty"`
	Addrs        []string    `json:"addrs,omitempty"`
	Peers        int         `json:"peers"`
	Joined       bool        `json:"joined"`
	RegistryAddr string      `json:"registryAddr"`
	Upstreams    []string    `json:"upstreams"`
	Cache        CacheStatus `json:"cache"`
	Downloads    int         `json:"downloads"`
}

// CacheStatus describes the disk cache.
type CacheStatus struct {
	Bytes         int64 `json:"bytes"`
	Blobs         int   `json:"blobs"`
	CapacityBytes int64 `json:"capacityBytes"`
	Evictions     int64 `json:"evictions"`
}

// Status reports the node's state.
func (n *Node) Status() Status {
	cache := n.store.Stats()
	ups := append([]string(nil), n.registries...)
	sort.Strings(ups)
	st := Status{
		Version:      n.cfg.Version,
		RegistryAddr: n.RegistryAddr(),
		Upstreams:    ups,
		Cache:        CacheStatus{Bytes: cache.Bytes, Blobs: cache.Blobs, CapacityBytes: cache.Capacity, Evictions: cache.Evictions},
		Downloads:    n.downloader.Len(),
	}
	f := n.fleet.Status()
	st.PeerID, st.Addrs, st.Peers, st.Joined = f.PeerID, f.Addrs, f.Peers, f.Joined
	return st
}

func (n *Node) adminHandler(prefetchHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{}))
	mux.Handle("POST "+prefetch.Path, prefetchHandler)
	if n.cfg.Pprof {
		// Profiles, for finding where a slow transfer spends its time. Off by default: the
		// admin address may be open to the cluster (for --bootstrap-dns).
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // a prober that left needs no answer
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-n.ready:
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if !n.fleet.Ready() {
			http.Error(w, "joining the fleet", http.StatusServiceUnavailable)
			return
		}
		if err := n.store.Writable(); err != nil {
			n.log.Warn("not ready: the cache cannot be written", "err", err)
			http.Error(w, "cache not writable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n")) // a prober that left needs no answer
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.Status()) // fails only once the client has gone
	})
	return mux
}

func (n *Node) registerStoreMetrics() {
	stats := n.store.Stats
	n.metrics.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_store_bytes", Help: "Bytes of committed blobs in the cache.",
		}, func() float64 { return float64(stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_store_blobs", Help: "Committed blobs in the cache.",
		}, func() float64 { return float64(stats().Blobs) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_store_capacity_bytes", Help: "Cache capacity in bytes (0: unlimited).",
		}, func() float64 { return float64(stats().Capacity) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shoal_store_evictions_total", Help: "Blobs evicted from the cache.",
		}, func() float64 { return float64(stats().Evictions) }),
	)
}
