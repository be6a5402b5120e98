package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

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

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// sizeFlag defines a byte-count flag that takes a unit: 1GiB, 512MiB, 25MiB, 4096.
func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *int64 {
	v := def
	fs.Func(name, fmt.Sprintf("%s (default %s)", usage, formatSize(def)), func(s string) error {
		n, err := parseSize(s)
		if err != nil {
			return err
		}
		v = n
		return nil
	})
	return &v
}

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := 1.0
	for _, u := range sizeUnits {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f || f*mult >= 1<<50 {
		return 0, errors.New("not a size (examples: 4096, 512MiB, 1GiB)")
	}
	return int64(f * mult), nil
}

func formatSize(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	}
	return strconv.FormatInt(n, 10)
}
