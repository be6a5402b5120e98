package rendezvous

import (
	"fmt"
	"testing"
)

func TestWeight(t *testing.T) {
	if w1, w2 := Weight("k", "a", 1), Weight("k", "a", 1); w1 != w2 {
		t.Fatal("the same inputs give different weights")
	}
	// The key, the member and the index each change the weight, and the separator keeps
	// "ab"+"c" apart from "a"+"bc".
	base := Weight("k", "a", 1)
	for name, w := range map[string]uint64{
		"key": Weight("k2", "a", 1), "member": Weight("k", "b", 1), "index": Weight("k", "a", 2),
	} {
		if w == base {
			t.Errorf("another %s, same weight", name)
		}
	}
	if Weight("ab", "c", 0) == Weight("a", "bc", 0) {
		t.Error("key and member run together")
	}
	// Over many keys, each of four members wins about a quarter.
	wins := map[string]int{}
	members := []string{"m1", "m2", "m3", "m4"}
	for k := range 4000 {
		best, top := "", uint64(0)
		for _, m := range members {
			if w := Weight(fmt.Sprint("key", k), m, 0); w >= top {
				best, top = m, w
			}
		}
		wins[best]++
	}
	for _, m := range members {
		if wins[m] < 800 || wins[m] > 1200 {
			t.Errorf("member %s won %d of 4000 keys, want about 1000", m, wins[m])
		}
	}
}
