package e2e

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/crowd"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestCrowd runs the 100-node benchmark's machinery small: 16 real nodes on loopback pull a
// cold image at once through a rate-limited origin, DHT-only and with a tracker, and every
// node then asks the DHT for other nodes' blobs. Every pull was checked against its digest
// (Run fails otherwise); the origin sent about one image in each fleet, and every ask found a
// holder.
func TestCrowd(t *testing.T) {
	harness.RequireTools(t, "registry", "crane")
	ctx := t.Context()
	res, err := crowd.Run(ctx, crowd.Config{
		Nodes: 16, Lookups: 4, Pairs: 1,
		Settings: []crowd.Setting{{ImageBytes: 4 << 20, OriginRate: 4 << 20}},
		Dir:      t.TempDir(),
		Log:      testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	limits := map[string]float64{crowd.DHT: 1.25, crowd.Tracker: 1.05}
	for _, f := range res.Fleets {
		for _, ro := range f.Rollouts {
			if ro.OriginAmplification > limits[f.Mode] {
				t.Errorf("%s: the origin sent %.3fx the image, want <= %.2fx", f.Mode, ro.OriginAmplification, limits[f.Mode])
			}
			if ro.PeerBytes < 8*ro.ImageBytes {
				t.Errorf("%s: nodes took %d bytes from peers, want at least half the fleet's %d", f.Mode, ro.PeerBytes, 16*ro.ImageBytes)
			}
			if ro.PerNodeSecond["watch"] <= 0 || ro.PerNodeSecond["chunk"] <= 0 {
				t.Errorf("%s: requests per node-second %v: the nodes count no WATCH or chunk requests", f.Mode, ro.PerNodeSecond)
			}
			if f.Mode == crowd.Tracker && ro.PerNodeSecond["lease"] <= 0 {
				t.Errorf("tracker: requests per node-second %v: no lease requests counted", ro.PerNodeSecond)
			}
			if ro.MaxSeconds > time.Minute.Seconds() {
				t.Errorf("%s: slowest node %.1f s", f.Mode, ro.MaxSeconds)
			}
		}
		if f.DataPathCPUPerGB <= 0 {
			t.Errorf("%s: data path %.2f CPU-s per GB", f.Mode, f.DataPathCPUPerGB)
		}
	}
	l := res.Lookup
	if l == nil {
		t.Fatal("no DHT check")
	}
	if l.OriginGets != 0 || l.Failed != 0 || l.Asked != 16*4 || l.FoundNone != 0 {
		t.Errorf("DHT check: %+v: want every ask to find a holder", *l)
	}
}
