package sim

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/tracker/server"
)

// trackerHost is the real tracker server behind a simulated network: a request takes the
// one-way latency there and back, and waits its turn at the tracker, which handles one
// request per Config.TrackerService (a tracker under load answers late).
type trackerHost struct {
	w   *world
	srv *server.Server

	mu      sync.Mutex
	free    time.Time     // when the requests queued so far are answered
	seconds map[int64]int // requests answered in each virtual second since the start
}

// RoundTrip serves req at the tracker: it is the nodes' http.Client transport.
func (t *trackerHost) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close() // read whole: nothing to lose
	}
	if err := sleep(ctx, t.w.cfg.Latency); err != nil {
		return nil, err
	}
	t.mu.Lock()
	now := time.Now()
	start := t.free
	if start.Before(now) {
		start = now
	}
	t.free = start.Add(t.w.cfg.TrackerService)
	done := t.free
	t.seconds[int64(done.Sub(t.w.start)/time.Second)]++
	t.mu.Unlock()
	if err := sleepUntil(ctx, done); err != nil {
		return nil, err
	}
	in := req.Clone(ctx)
	in.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	t.srv.ServeHTTP(rec, in)
	if err := sleep(ctx, t.w.cfg.Latency); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// peak is the most requests the tracker answered in one virtual second.
func (t *trackerHost) peak() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	most := 0
	for _, n := range t.seconds {
		most = max(most, n)
	}
	return most
}

// kind names a tracker request by its path, for counting.
func kind(path string) string {
	switch {
	case strings.HasSuffix(path, "/announce"):
		return "announce"
	case strings.HasSuffix(path, "/lease"):
		return "lease"
	}
	return "other"
}
