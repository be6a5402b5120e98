package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		e        Exponential
		failures int
		lo, hi   time.Duration
	}{
		{"first", Exponential{Base: time.Second}, 1, time.Second, time.Second},
		{"below one counts as one", Exponential{Base: time.Second}, 0, time.Second, time.Second},
		{"doubles", Exponential{Base: time.Second}, 4, 8 * time.Second, 8 * time.Second},
		{"capped", Exponential{Base: 2 * time.Second, Max: 30 * time.Second}, 9, 30 * time.Second, 30 * time.Second},
		{"no overflow", Exponential{Base: time.Second}, 1000, time.Duration(1) << 61, time.Duration(1) << 62},
		{"half jitter", Exponential{Base: 200 * time.Millisecond, Jitter: 0.5}, 2, 200 * time.Millisecond, 400 * time.Millisecond},
		{"jitter under the cap", Exponential{Base: time.Second, Max: 4 * time.Second, Jitter: 0.25}, 7, 3 * time.Second, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for range 200 {
				if got := tt.e.Delay(tt.failures); got < tt.lo || got > tt.hi {
					t.Fatalf("%+v.Delay(%d) = %v, want %v..%v", tt.e, tt.failures, got, tt.lo, tt.hi)
				}
			}
		})
	}
}
