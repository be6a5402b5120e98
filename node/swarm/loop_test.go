package swarm

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/store"
)

// mockHarness runs a Downloader from o on a mock clock.
func mockHarness(t *testing.T, o Origin) (*Downloader, *clock.Mock) {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	clk := clock.NewMock()
	dl, _ := harnessWith(t, st, Options{Origin: o, Clock: clk})
	return dl, clk
}

// readAsync reads all of d in the background; the result comes on the channel.
func readAsync(t *testing.T, dl *Downloader, d digest.Digest) <-chan error {
	t.Helper()
	r, err := dl.Open(context.Background(), "reg", "repo", d)
	if err != nil {
		t.Fatalf("Open(%s) = %v", d, err)
	}
	done := make(chan error, 1)
	go func() {
		defer r.Close()
		_, err := io.Copy(io.Discard, io.NewSectionReader(r, 0, r.Size()))
		done <- err
	}()
	return done
}

// TestStallFollowsTheClock: a download in which nothing arrives gives up after stallTimeout
// of the download's clock, not of the wall's.
func TestStallFollowsTheClock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		data := randomBlob(t, 4*64<<10)
		o := newFakeOrigin(data)
		o.gate = make(chan struct{}) // bodies send nothing until the test ends
		dl, clk := mockHarness(t, o)
		t.Cleanup(func() { close(o.gate) })

		done := readAsync(t, dl, digest.FromBytes(data))
		for range 10 { // ten minutes of the mock's time; the bubble's own barely moves
			synctest.Wait()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "no progress") {
					t.Fatalf("read of a stalled download = %v, want no progress", err)
				}
				return
			default:
			}
			clk.Add(time.Minute)
		}
		t.Fatalf("the download did not give up; its clock stands at %v", clk.Now())
	})
}

// TestOriginBackoffFollowsTheClock: after a failed origin request the origin is asked again
// only once the backoff has passed on the download's clock. It runs in a synctest bubble, so
// "nothing happens while the mock stands still" is checked once every goroutine of the
// download is idle, not after some wall-clock wait.
func TestOriginBackoffFollowsTheClock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		data := randomBlob(t, 64<<10)
		o := newFakeOrigin(data)
		o.cutOnce = 1000
		dl, clk := mockHarness(t, o)

		done := readAsync(t, dl, digest.FromBytes(data))
		synctest.Wait() // the first request broke; the engine waits on its clock
		if offs := o.offsets(); !slices.Equal(offs, []int64{0}) {
			t.Fatalf("origin offsets before the backoff passed = %v, want [0]", offs)
		}
		// The first backoff is at most 200 ms: 400 ms of the mock's time is enough, while the
		// bubble's own clock, which a download ignoring its clock would follow, moves only
		// the millisecond Add yields for.
		for range 8 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("read = %v, want the blob", err)
				}
				if offs := o.offsets(); !slices.Equal(offs, []int64{0, 1000}) {
					t.Errorf("origin offsets = %v, want [0 1000]: one retry, where the first broke", offs)
				}
				return
			default:
			}
			clk.Add(50 * time.Millisecond)
			synctest.Wait()
		}
		t.Fatalf("no retry 400 ms after the failure on the download's clock; origin offsets %v", o.offsets())
	})
}

// TestPeerHeard: a watch that has answered counts as hearing from the peer now; one that has
// not answered yet (a frozen or dead peer takes a new stream) does not.
func TestPeerHeard(t *testing.T) {
	t.Parallel()
	last := time.Unix(1000, 0)
	now := last.Add(20 * time.Second)
	p := &peerState{id: "p"}
	p.observe(chunk.Have{Size: 1, ChunkSize: 1, Chunks: []bool{false}}, last)
	if got := p.heard(now); !got.Equal(last) {
		t.Errorf("polled peer heard %v, want its last answer %v", got, last)
	}
	p.watching, p.lastPoll = true, last.Add(time.Second) // a new watch, not answered yet
	if got := p.heard(now); !got.Equal(last) {
		t.Errorf("peer with a watch not yet answered heard %v, want its last answer %v", got, last)
	}
	p.observe(chunk.Have{Size: 1, ChunkSize: 1, Chunks: []bool{false}}, last.Add(2*time.Second))
	if got := p.heard(now); !got.Equal(now) {
		t.Errorf("peer with an answered watch heard %v, want now %v", got, now)
	}
}
