package sim

import (
	"context"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/backoff"
)

// link is one direction of a network interface: it carries one transfer at a time at its
// rate, in the order they were asked (a store-and-forward model: a chunk's bytes occupy the
// sender's uplink and the receiver's downlink for its size over each rate).
type link struct {
	mu   sync.Mutex
	rate float64   // virtual bytes per second
	free time.Time // when the transfers queued so far have gone
}

// reserve queues n virtual bytes from now and returns when they have gone.
func (l *link) reserve(now time.Time, n int64) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := l.free
	if start.Before(now) {
		start = now
	}
	l.free = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.free
}

// transfer moves n virtual bytes across up and down, queued on both, and returns when the
// last of them has arrived.
func transfer(up, down *link, n int64) time.Time {
	now := time.Now()
	a, b := up.reserve(now, n), down.reserve(now, n)
	if b.After(a) {
		return b
	}
	return a
}

// sleep waits for d or for ctx to end.
var sleep = backoff.Sleep

// sleepUntil waits until at or for ctx to end.
func sleepUntil(ctx context.Context, at time.Time) error {
	return sleep(ctx, time.Until(at))
}
