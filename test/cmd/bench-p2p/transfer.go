package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// transfer is one timed pull.
type transfer struct {
	bytes     int64
	firstByte time.Duration
	total     time.Duration
}

func (t transfer) rate() float64 { return float64(t.bytes) / t.total.Seconds() } // bytes/s

func (t transfer) String() string {
	return fmt.Sprintf("%.0f MB/s (%.1f MiB/s), first byte %.1f ms", t.rate()/1e6, t.rate()/(1<<20), ms(t.firstByte))
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}

// pull GETs url, timing the first byte and the whole body, and hashes the body as containerd
// does; it fails unless the body is exactly d.
func pull(ctx context.Context, url string, d digest.Digest) (transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return transfer{}, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return transfer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return transfer{}, fmt.Errorf("GET %s: %s: %q", url, resp.Status, body)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var t transfer
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if t.bytes == 0 {
				t.firstByte = time.Since(start)
			}
			h.Write(buf[:n])
			t.bytes += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return transfer{}, fmt.Errorf("GET %s: after %d bytes: %w", url, t.bytes, err)
		}
	}
	t.total = time.Since(start)
	if got := digest.NewDigest(digest.SHA256, h); got != d {
		return transfer{}, fmt.Errorf("GET %s: %d bytes with digest %s, want %s", url, t.bytes, got, d)
	}
	return t, nil
}

// uploadRandomBlob writes size random bytes to path, pushes them to the registry as one
// monolithic upload, and returns the digest.
func uploadRandomBlob(ctx context.Context, registryURL, repo string, size int64, path string) (digest.Digest, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer os.Remove(path)
	defer f.Close()
	h := sha256.New()
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size); err != nil {
		return "", err
	}
	d := digest.NewDigest(digest.SHA256, h)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, registryURL+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("start upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = registryURL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc+sep+"digest="+d.String(), f)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("finish upload: %s", resp.Status)
	}
	return d, nil
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
