package sim

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestQuick rolls a 64 MiB image out to 200 simulated nodes at once, with and without a
// tracker, and with 5% of the nodes dying on the way: every live node gets the image, and the
// origin sends it about once. The pull times are reported, not asserted: make bench-sim
// measures them at the sizes.
func TestQuick(t *testing.T) {
	small := Config{Nodes: 200, Layers: 4, LayerSize: 16 << 20}
	for _, tc := range []struct {
		name    string
		tracker bool
		die     float64
		origin  float64 // the most origin bytes per image byte
	}{
		{"dht", false, 0, 1.10},
		{"tracker", true, 0, 1.05},
		{"dht-dying", false, 0.05, 1.25},
		{"tracker-dying", true, 0.05, 1.15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := small
			cfg.Name, cfg.Tracker = tc.name, tc.tracker
			cfg.DieFraction, cfg.DieAt = tc.die, 2*time.Second
			r := runTimed(t, cfg)
			t.Log(summary(r))
			if r.Incomplete > 0 {
				t.Errorf("%d live nodes did not get the image: %s", r.Incomplete, r.FirstError)
			}
			if r.OriginRatio > tc.origin {
				t.Errorf("origin sent %.3fx the image, want <= %.2fx", r.OriginRatio, tc.origin)
			}
			if want := int(float64(cfg.Nodes) * tc.die); r.Dead != want {
				t.Errorf("%d nodes died, want %d", r.Dead, want)
			}
		})
	}
}

// TestCalibration runs the fleet benchmark's setting (make bench-fleet: 10 hosts behind
// 500 Mbit/s, the origin behind 125 Mbit/s, 192 MiB in 4 layers, one bridge): the simulator
// must agree with what the real fleet measured there on the origin's bytes.
func TestCalibration(t *testing.T) {
	for _, tracker := range []bool{false, true} {
		cfg := calibration
		cfg.Tracker = tracker
		r := runTimed(t, cfg)
		t.Log(summary(r))
		if r.Incomplete > 0 || r.OriginRatio > 1.05 {
			t.Errorf("tracker %v: %d incomplete, origin %.3fx, want all done and <= 1.05x (bench-fleet: 1.00-1.04x)", tracker, r.Incomplete, r.OriginRatio)
		}
	}
}

// calibration is make bench-fleet's setting: on one bridge, latency is tens of microseconds
// and the DHT answers in milliseconds.
var calibration = Config{
	Name: "calibration", Nodes: 10, Layers: 4, LayerSize: 48 << 20,
	NodeRate: 62.5e6, OriginRate: 15.625e6,
	Latency: 100 * time.Microsecond, LookupTime: 10 * time.Millisecond, ProvideTime: 10 * time.Millisecond,
}

// TestDHTFind checks a lookup's answer: only records visible by now, never the asker, each
// at most once, and no more than asked for.
func TestDHTFind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := digest.FromString("blob")
		var tab dht
		now := time.Now()
		for i := range 50 {
			tab.add(d, fmt.Sprint(i), now.Add(time.Duration(i)*time.Second))
		}
		tab.add(d, "7", now.Add(time.Hour)) // later than its record: no change
		tab.add(d, "49", now)               // sooner: visible now
		rng := rand.New(rand.NewPCG(1, 2))
		for _, tc := range []struct {
			wait       time.Duration
			self       string
			pool, most int
			want       int
		}{
			{0, "x", 100, 20, 2},                // "0" and "49"
			{0, "0", 100, 20, 1},                // self left out
			{9 * time.Second, "x", 100, 20, 11}, // "0".."9" and "49"
			{30 * time.Second, "3", 100, 20, 20},
			{30 * time.Second, "3", 5, 20, 5},
			{time.Minute, "x", 100, 100, 50},
		} {
			time.Sleep(tc.wait - time.Since(now))
			got := tab.find(d, tc.self, tc.pool, tc.most, rng)
			if len(got) != tc.want {
				t.Errorf("after %v: find(%s) = %d records, want %d", tc.wait, tc.self, len(got), tc.want)
			}
			seen := make(map[string]bool)
			for _, id := range got {
				i, err := strconv.Atoi(id)
				if err != nil {
					t.Fatalf("find(%s) = %v: %s is not a record of the table", tc.self, got, id)
				}
				if seen[id] || id == tc.self || (i != 49 && time.Duration(i)*time.Second > tc.wait) {
					t.Errorf("after %v: find(%s) = %v: %s twice, self or not yet visible", tc.wait, tc.self, got, id)
				}
				seen[id] = true
			}
		}
		if got := tab.find(digest.FromString("other"), "x", 100, 20, rng); len(got) != 0 {
			t.Errorf("find of an unknown blob = %v, want none", got)
		}
	})
}
