package p2p

import (
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Defaults of the repeat limit (ExchangeOptions.MaxRepeats).
const (
	// DefaultMaxRepeats is how many times a node sends one chunk within RepeatWindow.
	DefaultMaxRepeats = 3
	// RepeatWindow is the span the repeat limit counts over: about the time the peers
	// that just got a chunk take to say so to the others asking.
	RepeatWindow = 2 * time.Second
)

// RepeatLimit bounds how often a node sends the same chunk: at most a few times within
// RepeatWindow; more requests for it are answered busy, and the askers take it from the
// peers that just got it. In a rollout the first holders of a chunk (the seeds, which took
// it from the origin) are the only ones most of the fleet knows of for a moment, and would
// otherwise send it to a large share of the fleet, uploading many times the mean; with the
// limit each of them sends it to a few, who pass it on (as BitTorrent's super-seeding
// makes a seed hand each piece to one peer). A holder asked for many different chunks is
// not slowed: the limit is per chunk. Safe for concurrent use.
type RepeatLimit struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	sent  map[repeatKey][]sending // each chunk's sends within the window, oldest first
	swept time.Time
}

type sending struct {
	at time.Time
	to string
}

type repeatKey struct {
	d     digest.Digest
	index int
}

// NewRepeatLimit allows each chunk max sends within window.
func NewRepeatLimit(max int, window time.Duration) *RepeatLimit {
	return &RepeatLimit{max: max, window: window, sent: make(map[repeatKey][]sending)}
}

// Take reports whether chunk index of d may be sent to peer to now, and if so counts it as
// sent. When it may not, others are the peers it was sent to within the window, the
// latest first: the asker can take it from them.
func (l *RepeatLimit) Take(d digest.Digest, index int, to string) (ok bool, others []string) {
	now := time.Now()
	k := repeatKey{d, index}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= l.window {
		l.sweep(now)
	}
	sends := l.sent[k]
	i := 0
	for i < len(sends) && now.Sub(sends[i].at) >= l.window {
		i++
	}
	sends = sends[i:]
	if len(sends) >= l.max {
		l.sent[k] = sends
		for j := len(sends) - 1; j >= 0; j-- {
			if sends[j].to != to && !slices.Contains(others, sends[j].to) {
				others = append(others, sends[j].to)
			}
		}
		return false, others
	}
	l.sent[k] = append(sends, sending{at: now, to: to})
	return true, nil
}

// sweep drops the chunks not sent within the window, so the map holds only recent ones.
func (l *RepeatLimit) sweep(now time.Time) {
	l.swept = now
	for k, times := range l.sent {
		if now.Sub(times[len(times)-1].at) >= l.window {
			delete(l.sent, k)
		}
	}
}
