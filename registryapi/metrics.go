package registryapi

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	served   *prometheus.CounterVec
}

// newMetrics builds the collectors and registers them on reg when it is not nil; without
// a registerer they still count, unseen.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_requests_total",
			Help: "Requests to the /v2 mirror endpoint, by kind, method and result.",
		}, []string{"kind", "method", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "shoal_registry_request_duration_seconds",
			Help: "Time to answer a /v2 request, body included.",
			// Blob bodies stream for as long as the download runs: minutes, not
			// milliseconds.
			Buckets: []float64{.001, .005, .025, .1, .5, 1, 5, 30, 120, 600},
		}, []string{"kind"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_blob_served_bytes_total",
			Help: "Blob bytes written to clients, by where they came from.",
		}, []string{"source"}),
	}
	// Dashboards see every source from the start, not after its first byte.
	for _, source := range []string{"cache", "download"} {
		m.served.WithLabelValues(source)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.requests, m.duration, m.served}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return method
	}
	return "other"
}

// sourceLabel names where a blob's bytes come from, holding the label to a small set.
func sourceLabel(b Blob) string {
	if s, ok := b.(Sourced); ok {
		switch v := s.Source(); v {
		case "cache", "download":
			return v
		}
		return "other"
	}
	if _, ok := b.(FileBlob); ok {
		return "cache"
	}
	return "download"
}
