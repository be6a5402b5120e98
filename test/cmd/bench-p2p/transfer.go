package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// transfer is a timed pull, printed the way this benchmark reports it.
type transfer struct{ harness.Transfer }

func (t transfer) rate() float64 { return t.BytesPerSecond() }

func (t transfer) String() string {
	return fmt.Sprintf("%.0f MB/s (%.1f MiB/s), first byte %.1f ms", t.rate()/1e6, t.rate()/(1<<20), ms(t.FirstByte))
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}

// pull GETs url, timing the first byte and the whole body, and hashes the body as containerd
// does; it fails unless the body is exactly d.
func pull(ctx context.Context, url string, d digest.Digest) (transfer, error) {
	t, err := harness.TimedPull(ctx, client, url, d, true)
	return transfer{t}, err
}

// stats summarises durations.
type stats struct {
	N        int     `json:"n"`
	MedianMs float64 `json:"median_ms"`
	P90Ms    float64 `json:"p90_ms"`
	MaxMs    float64 `json:"max_ms"`
}

func summarize(ns []int64) stats {
	if len(ns) == 0 {
		return stats{}
	}
	v := make([]float64, len(ns))
	for i, n := range ns {
		v[i] = float64(n) / 1e6
	}
	slices.Sort(v)
	// p90 by nearest rank.
	rank := (9*len(v) + 9) / 10
	return stats{N: len(v), MedianMs: median(v), P90Ms: v[rank-1], MaxMs: v[len(v)-1]}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sizeFlag defines a byte-count flag that takes a unit: 1GiB, 512MiB, 25MiB, 4096.
func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *int64 {
	v := units.Size(def)
	fs.Var(&v, name, usage)
	return (*int64)(&v)
}
