package sim

import (
	"testing"
	"time"
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
