package p2p

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

// notifyingStore is a fakeStore that tells watchers of every change made through set.
type notifyingStore struct {
	*fakeStore
	mu      sync.Mutex
	changed chan struct{}
}

func newNotifyingStore() *notifyingStore {
	return &notifyingStore{fakeStore: newFakeStore(), changed: make(chan struct{})}
}

func (s *notifyingStore) Changes(digest.Digest) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// set replaces what the store holds of d and wakes the watchers.
func (s *notifyingStore) set(d digest.Digest, h chunk.Have) {
	s.fakeStore.mu.Lock()
	b := s.blobs[d]
	b.have = h
	s.blobs[d] = b
	s.fakeStore.mu.Unlock()
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// watch runs WatchHave in the background: its answers arrive on the first channel, its
// end on the second.
func watch(ctx context.Context, client *Exchange, peerID string, d digest.Digest) (<-chan chunk.Have, <-chan error) {
	answers, done := make(chan chunk.Have, 64), make(chan error, 1)
	go func() {
		done <- client.WatchHave(ctx, peerID, d, func(h chunk.Have) { answers <- h })
	}()
	return answers, done
}

func nextAnswer(t *testing.T, answers <-chan chunk.Have) chunk.Have {
	t.Helper()
	select {
	case h := <-answers:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no watch answer in 10 s")
	}
	return chunk.Have{}
}

// A watch answers at once, again when a chunk lands or a fetch starts, and ends with the
// whole blob and its chunk list.
func TestExchangeWatch(t *testing.T) {
	t.Parallel()
	store := newNotifyingStore()
	data := randomBytes(t, 4*chunk.MinSize)
	d := store.add(data, chunk.MinSize, []int{0})
	client, server := exchangePair(t, ExchangeOptions{Store: store})
	answers, done := watch(testContext(t), client, server, d)

	if got, want := nextAnswer(t, answers), newHave(data, chunk.MinSize, []int{0}); !equalHave(got, want) {
		t.Fatalf("first answer %+v, want %+v", got, want)
	}
	start := time.Now()
	fetching := withFetching(newHave(data, chunk.MinSize, []int{0}), 2)
	store.set(d, fetching)
	if got := nextAnswer(t, answers); !equalHave(got, fetching) {
		t.Fatalf("answer after a fetch began %+v, want %+v", got, fetching)
	}
	if gap := time.Since(start); gap > WatchKeepalive {
		t.Errorf("a change took %v to reach the watcher, beyond the %v keepalive", gap, WatchKeepalive)
	}
	more := newHave(data, chunk.MinSize, []int{0, 1, 2})
	store.set(d, more)
	if got := nextAnswer(t, answers); !equalHave(got, more) {
		t.Fatalf("answer after two chunks landed %+v, want %+v", got, more)
	}
	whole := newHave(data, chunk.MinSize, nil)
	store.set(d, whole)
	if got := nextAnswer(t, answers); !equalHave(got, whole) {
		t.Fatalf("last answer %+v, want the whole blob with its chunk list %+v", got, whole)
	}
	if err := <-done; err != nil {
		t.Fatalf("WatchHave of a blob the peer now holds whole = %v, want nil", err)
	}
	if len(answers) != 0 {
		t.Errorf("%d answers after the whole blob", len(answers))
	}
}

// With nothing new, a watch repeats its last answer every WatchKeepalive, and ends after its
// lifetime (half the exchange's timeout).
func TestExchangeWatchKeepalive(t *testing.T) {
	t.Parallel()
	store := newNotifyingStore()
	data := randomBytes(t, 2*chunk.MinSize)
	d := store.add(data, chunk.MinSize, []int{1})
	timeout := 2*WatchKeepalive + time.Second
	lifetime := timeout / 2
	client, server := exchangePair(t, ExchangeOptions{Store: store, Timeout: timeout})
	start := time.Now()
	answers, done := watch(testContext(t), client, server, d)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchHave = %v at its lifetime's end, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch outlived its lifetime")
	}
	if took := time.Since(start); took < lifetime {
		t.Errorf("watch ended after %v, before its %v lifetime", took, lifetime)
	}
	if n := len(answers); n != 2 {
		t.Errorf("%d answers in a %v watch with nothing new, want the first and one keepalive", n, lifetime)
	}
}

func TestExchangeWatchRefused(t *testing.T) {
	t.Parallel()
	store := newNotifyingStore()
	data := randomBytes(t, 2*chunk.MinSize)
	d := store.add(data, chunk.MinSize, []int{0})
	client, server := exchangePair(t, ExchangeOptions{Store: store, MaxWatches: 1})
	ctx := testContext(t)

	if err := client.WatchHave(ctx, server, digest.FromString("other"), func(chunk.Have) {}); !errors.Is(err, chunk.ErrNotHeld) {
		t.Errorf("WatchHave of a blob the peer lacks = %v, want ErrNotHeld", err)
	}
	answers, done := watch(ctx, client, server, d)
	nextAnswer(t, answers)
	if err := client.WatchHave(ctx, server, d, func(chunk.Have) {}); !errors.Is(err, chunk.ErrBusy) {
		t.Errorf("WatchHave past the node's watches = %v, want ErrBusy", err)
	}
	// A watch holds none of the peer's request slots.
	if _, err := client.Have(ctx, server, d); err != nil {
		t.Errorf("Have during a watch = %v", err)
	}
	// The blob evicted: the watch ends, and the watcher learns of it by asking again.
	store.fakeStore.mu.Lock()
	delete(store.blobs, d)
	store.fakeStore.mu.Unlock()
	store.set(digest.FromString("wake"), chunk.Have{})
	if err := <-done; err != nil {
		t.Errorf("WatchHave of a blob evicted since = %v, want nil", err)
	}
}

// A peer that does not know WATCH, one that freezes mid-watch and one that changes its story
// each end the watch with an error, and the watcher with it.
func TestExchangeWatchHostilePeer(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 2*chunk.MinSize)
	first := encodeHave(t, newHave(data, chunk.MinSize, []int{0}))
	tests := []struct {
		name   string
		resp   []byte
		freeze bool // keep the stream open after resp
		err    error
	}{
		{name: "old node", resp: nil, err: ErrNoWatch},
		{name: "other size", resp: slices.Concat(first, encodeHave(t, newHave(data[1:], chunk.MinSize, []int{0}))), err: chunk.ErrProtocol},
		{name: "trailing data after the whole blob", resp: append(encodeHave(t, newHave(data, chunk.MinSize, nil)), 0), err: chunk.ErrProtocol},
		{name: "truncated answer", resp: slices.Concat(first, first[:len(first)-1]), err: chunk.ErrProtocol},
		{name: "frozen", resp: first, freeze: true, err: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ch, sh := connectedHosts(t)
			release := make(chan struct{})
			defer close(release)
			sh.SetStreamHandler(ChunkProtocol, func(s network.Stream) {
				if _, err := io.ReadAll(s); err != nil || tt.resp == nil {
					s.Reset()
					return
				}
				s.Write(tt.resp)
				if tt.freeze {
					<-release
				}
				s.Close()
			})
			client := newTestExchange(t, ch, ExchangeOptions{})
			start := time.Now()
			err := client.WatchHave(testContext(t), sh.ID().String(), digest.FromBytes(data), func(chunk.Have) {})
			if !errors.Is(err, tt.err) {
				t.Errorf("WatchHave answered by %s = %v, want %v", tt.name, err, tt.err)
			}
			if tt.freeze && time.Since(start) > 2*WatchSilence {
				t.Errorf("a frozen peer held the watch %v, beyond twice its %v silence", time.Since(start), WatchSilence)
			}
		})
	}
}

// WatchServer's decisions, as ServeWatch and the simulator's loop of many watches take
// them: the first look answers; an unchanged blob is answered again only at the
// keepalive; a change is answered no sooner than Every after the last answer; the whole
// blob is answered with its chunk list and ends the watch; so does the lifetime, or a blob
// no longer held.
func TestWatchServer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := NewWatchServer(WatchTiming{Every: 250 * time.Millisecond, Lifetime: 10 * time.Second}, t0)
	h := chunk.Have{Size: 3, ChunkSize: 1, Chunks: []bool{true, false, false}}
	held := true
	have := func(list bool) (chunk.Have, bool) {
		out := h
		if list {
			out.ChunkList = []digest.Digest{"a", "b", "c"}
		}
		return out, held
	}
	look := func(at time.Duration) (chunk.Have, bool, bool, error) {
		t.Helper()
		return w.Look(t0.Add(at), have)
	}

	a, answer, done, err := look(0)
	if err != nil || !answer || done || !slices.Equal(a.Chunks, h.Chunks) {
		t.Fatalf("first look: %v answer %v done %v err %v", a.Chunks, answer, done, err)
	}
	w.Sent(a, t0)
	change, deadline := w.Next()
	if want := t0.Add(250 * time.Millisecond); !change.Equal(want) {
		t.Errorf("change time %v, want %v", change, want)
	}
	if want := t0.Add(WatchKeepalive); !deadline.Equal(want) {
		t.Errorf("deadline %v, want the keepalive %v", deadline, want)
	}
	if _, answer, done, _ := look(time.Second); answer || done {
		t.Errorf("unchanged blob: answer %v done %v, want neither", answer, done)
	}
	if _, answer, _, _ := look(WatchKeepalive); !answer {
		t.Error("unchanged blob at the keepalive: no answer")
	}

	h.Chunks = []bool{true, true, false}
	a, answer, done, _ = look(WatchKeepalive + time.Millisecond)
	if !answer || done {
		t.Fatalf("changed blob: answer %v done %v", answer, done)
	}
	w.Sent(a, t0.Add(WatchKeepalive))

	h.Chunks = []bool{true, true, true}
	a, answer, done, _ = look(WatchKeepalive + 300*time.Millisecond)
	if !answer || !done || len(a.ChunkList) != 3 {
		t.Fatalf("whole blob: answer %v done %v list %d, want an answer with the list that ends the watch", answer, done, len(a.ChunkList))
	}

	h.Chunks = []bool{true, false, false}
	if _, _, done, _ := look(10 * time.Second); !done {
		t.Error("past its lifetime: the watch goes on")
	}
	held = false
	if _, _, done, err := look(time.Second); !done || !errors.Is(err, chunk.ErrNotHeld) {
		t.Errorf("blob gone: done %v err %v, want chunk.ErrNotHeld", done, err)
	}
}
