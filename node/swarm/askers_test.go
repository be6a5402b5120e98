package swarm

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestAskers(t *testing.T) {
	t.Parallel()
	a := newAskers()
	d, other := digest.FromString("blob"), digest.FromString("other")
	t0 := time.Unix(1000, 0)
	if got := a.list(d, t0); got != nil {
		t.Fatalf("askers of a blob never asked about = %q, want none", got)
	}
	a.add(d, "p1", t0)
	a.add(d, "p2", t0.Add(time.Second))
	a.add(d, "p1", t0.Add(2*time.Second)) // asked again: one entry, newest
	a.add(other, "p3", t0)
	if got, want := a.list(d, t0.Add(3*time.Second)), []string{"p1", "p2"}; !slices.Equal(got, want) {
		t.Errorf("askers = %q, want %q (newest first, once each)", got, want)
	}
	if got, want := a.list(d, t0.Add(askersFor+1500*time.Millisecond)), []string{"p1"}; !slices.Equal(got, want) {
		t.Errorf("askers after p2's ask expired = %q, want %q", got, want)
	}
	// More askers than are named: the oldest make way.
	for i := range maxAskers + 3 {
		a.add(d, fmt.Sprintf("q%d", i), t0.Add(time.Duration(10+i)*time.Second))
	}
	got := a.list(d, t0.Add(30*time.Second))
	if len(got) != maxAskers || got[0] != fmt.Sprintf("q%d", maxAskers+2) || slices.Contains(got, "q0") || slices.Contains(got, "p1") {
		t.Errorf("askers after %d more asked = %q, want the latest %d, newest first", maxAskers+3, got, maxAskers)
	}
	if got := a.list(other, t0.Add(time.Second)); !slices.Equal(got, []string{"p3"}) {
		t.Errorf("askers of the other blob = %q, want p3", got)
	}
}
