// Package backoff says how long to wait before trying again after failures in a row.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Sleep waits d, or until ctx ends (returning its error); d <= 0 returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exponential waits Base after the first failure and doubles with each further one, up to
// Max. Jitter spreads the waits of nodes that failed together, so they do not retry together.
type Exponential struct {
	Base time.Duration
	// Max caps the wait; 0 means no cap.
	Max time.Duration
	// Jitter is the random part of each wait, as a fraction of it: 0 waits exactly, 0.5
	// waits between half the wait and all of it.
	Jitter float64
}

// Delay is the wait after the given number of failures in a row; failures below 1 count as 1.
func (e Exponential) Delay(failures int) time.Duration {
	d := e.Base
	for i := 1; i < failures && (e.Max == 0 || d < e.Max) && d < time.Duration(1)<<61; i++ {
		d *= 2
	}
	if e.Max > 0 {
		d = min(d, e.Max)
	}
	if e.Jitter <= 0 || d <= 0 {
		return d
	}
	spread := time.Duration(float64(d) * min(e.Jitter, 1))
	return d - spread + rand.N(spread+1)
}
