package harness

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
)

// Transfer is one timed GET of a blob.
type Transfer struct {
	Bytes     int64
	FirstByte time.Duration
	Total     time.Duration
}

// BytesPerSecond is the transfer's throughput.
func (t Transfer) BytesPerSecond() float64 { return float64(t.Bytes) / t.Total.Seconds() }

// TimedPull GETs url with client, timing the first byte and the whole body. With verify it
// hashes the body as containerd does and fails unless the body is exactly d; without, it only
// reads it (to measure servers, not the client's hashing).
func TimedPull(ctx context.Context, client *http.Client, url string, d digest.Digest, verify bool) (Transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Transfer{}, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return Transfer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return Transfer{}, fmt.Errorf("GET %s: %s: %q", url, resp.Status, body)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var t Transfer
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if t.Bytes == 0 {
				t.FirstByte = time.Since(start)
			}
			if verify {
				h.Write(buf[:n])
			}
			t.Bytes += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return Transfer{}, fmt.Errorf("GET %s: after %d bytes: %w", url, t.Bytes, err)
		}
	}
	t.Total = time.Since(start)
	if verify {
		if got := digest.NewDigest(digest.SHA256, h); got != d {
			return Transfer{}, fmt.Errorf("GET %s: %d bytes with digest %s, want %s", url, t.Bytes, got, d)
		}
	}
	return t, nil
}
