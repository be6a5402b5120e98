package p2p

import (
	"errors"
	"io"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

func TestRepeatLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewRepeatLimit(2, RepeatWindow)
		a, b := digest.FromString("a"), digest.FromString("b")
		take := func(d digest.Digest, i int, want bool, when string) {
			t.Helper()
			if got, _ := l.Take(d, i, "x"); got != want {
				t.Errorf("%s: Take(%.12s, %d) = %v, want %v", when, d, i, got, want)
			}
		}
		l.Take(a, 0, "p1")
		time.Sleep(RepeatWindow / 2)
		l.Take(a, 0, "p2")
		if ok, others := l.Take(a, 0, "p3"); ok || !slices.Equal(others, []string{"p2", "p1"}) {
			t.Errorf("third within the window: Take = %v, %q; want false and the peers it went to, latest first", ok, others)
		}
		if ok, others := l.Take(a, 0, "p1"); ok || !slices.Equal(others, []string{"p2"}) {
			t.Errorf("asked again by p1: Take = %v, %q; want false and only the other peer", ok, others)
		}
		// Other chunks, of the blob or another, are counted apart.
		take(a, 1, true, "another chunk")
		take(b, 0, true, "another blob's chunk")
		// The first send leaves the window: one more may go.
		time.Sleep(RepeatWindow / 2)
		take(a, 0, true, "a window after the first send")
		take(a, 0, false, "again within the window")
		// Chunks not sent for a window are forgotten.
		time.Sleep(2 * RepeatWindow)
		l.Take(b, 1, "x")
		l.mu.Lock()
		n := len(l.sent)
		l.mu.Unlock()
		if n != 1 {
			t.Errorf("%d chunks remembered after a quiet window, want only the one just sent", n)
		}
	})
}

// TestExchangeReferrals: a busy answer for a chunk sent often lately names the peers it
// went to, which the asker can take it from.
func TestExchangeReferrals(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, 2*chunk.MinSize)
	d := store.add(data, chunk.MinSize, nil)
	server := newTestHost(t, HostOptions{})
	newTestExchange(t, server, ExchangeOptions{Store: store, MaxRepeats: 2})
	ctx := testContext(t)
	var clients []*Exchange
	var ids []string
	for range 3 {
		h := newTestHost(t, HostOptions{})
		if err := h.Connect(ctx, addrInfo(t, server)); err != nil {
			t.Fatalf("Connect = %v", err)
		}
		clients = append(clients, newTestExchange(t, h, ExchangeOptions{}))
		ids = append(ids, h.ID().String())
	}
	for i := range 2 {
		if _, err := clients[i].GetChunk(ctx, server.ID().String(), d, 0, io.Discard); err != nil {
			t.Fatalf("GetChunk by client %d = %v", i, err)
		}
	}
	_, err := clients[2].GetChunk(ctx, server.ID().String(), d, 0, io.Discard)
	var busy *chunk.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, chunk.ErrBusy) || !slices.Equal(busy.Others, []string{ids[1], ids[0]}) {
		t.Fatalf("GetChunk by a third = %v, want busy naming %v", err, []string{ids[1], ids[0]})
	}
}

// TestExchangeRepeats: a node sends one chunk at most MaxRepeats times within
// RepeatWindow and answers busy beyond, while other chunks still go.
func TestExchangeRepeats(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	data := randomBytes(t, 2*chunk.MinSize)
	d := store.add(data, chunk.MinSize, nil)
	client, server := exchangePair(t, ExchangeOptions{Store: store, MaxRepeats: 2})
	ctx := testContext(t)
	for i := range 2 {
		if _, err := client.GetChunk(ctx, server, d, 0, io.Discard); err != nil {
			t.Fatalf("GetChunk %d of chunk 0 = %v", i+1, err)
		}
	}
	if _, err := client.GetChunk(ctx, server, d, 0, io.Discard); !errors.Is(err, chunk.ErrBusy) {
		t.Errorf("GetChunk of chunk 0 a third time = %v, want %v", err, chunk.ErrBusy)
	}
	if n, err := client.GetChunk(ctx, server, d, 1, io.Discard); err != nil || n != chunk.MinSize {
		t.Errorf("GetChunk of chunk 1 = %d, %v, want it whole", n, err)
	}

	unlimited, server := exchangePair(t, ExchangeOptions{Store: store, MaxRepeats: -1})
	for i := range DefaultMaxRepeats + 2 {
		if _, err := unlimited.GetChunk(ctx, server, d, 0, io.Discard); err != nil {
			t.Fatalf("without a limit: GetChunk %d of chunk 0 = %v", i+1, err)
		}
	}
}
