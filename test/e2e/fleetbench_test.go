package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/test/internal/fleet"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestFleetBenchmark runs the fleet benchmark's machinery on a small fleet: four hosts, each
// a network namespace behind a shaped link, the real registry as origin behind a slower one,
// each scenario cold and shoal rolling, containerd's resolver as every host's client. It
// checks what the figures must show whatever the machine: every host verified the image
// (Run fails otherwise), direct costs the origin one image per host, the central cache at
// most that, shoal about one image in all, and the network is gone afterwards.
func TestFleetBenchmark(t *testing.T) {
	harness.RequireNetns(t)
	harness.RequireTools(t, "registry", "crane")
	const hosts = 4
	e, err := fleet.Setup(t.Context(), fleet.Config{
		Hosts: hosts, HostLink: "500mbit", OriginLink: "125mbit", Layers: 2, LayerSize: 3 << 20,
		Log: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() }) // after a failure; a second Close does nothing
	runs := []struct {
		scenario, timing string
		minAmp, maxAmp   float64
	}{
		{"direct", fleet.Cold, hosts, hosts + 0.01},
		{"central-cache", fleet.Cold, 1, hosts + 0.01},
		{"shoal", fleet.Cold, 1, 1.25},
		{"shoal", fleet.Rolling, 1, 1.25},
		{"shoal+tracker", fleet.Cold, 1, 1.05},
	}
	for _, run := range runs {
		s, err := fleet.ScenarioNamed(run.scenario)
		if err != nil {
			t.Fatal(err)
		}
		r, err := fleet.Run(t.Context(), e, s, run.timing)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s %s: origin %.2fx, p50 %.2fs, max %.2fs, bound %.2fs, CPU %.0f%%",
			r.Scenario, r.Timing, r.OriginAmplification, r.P50Seconds, r.MaxSeconds, r.BoundSeconds, 100*r.CPUBusy)
		if r.Nodes != hosts || len(r.HostSeconds) != hosts || r.ImageBytes != e.ImageBytes {
			t.Errorf("%s %s: %d nodes, %d host times, image %d bytes; want %d, %d, %d", r.Scenario, r.Timing, r.Nodes, len(r.HostSeconds), r.ImageBytes, hosts, hosts, e.ImageBytes)
		}
		// The origin sends the whole image at least once in every scenario: the hosts'
		// digests checked out, so the bytes came from it.
		if r.OriginAmplification < run.minAmp-0.01 || r.OriginAmplification > run.maxAmp {
			t.Errorf("%s %s: origin sent %.3fx the image, want %.2f to %.2f", r.Scenario, r.Timing, r.OriginAmplification, run.minAmp, run.maxAmp)
		}
		if r.MaxSeconds < r.BoundSeconds*0.9 || r.P50Seconds > r.MaxSeconds {
			t.Errorf("%s %s: p50 %.2fs, max %.2fs against a bound of %.2fs: the links are not shaped as configured", r.Scenario, r.Timing, r.P50Seconds, r.MaxSeconds, r.BoundSeconds)
		}
		if strings.HasPrefix(run.scenario, "shoal") && r.PeerBytes <= 0 {
			t.Errorf("%s %s: the nodes report no bytes from peers", r.Scenario, r.Timing)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "shoalfleet") {
		t.Errorf("network namespaces left after Close:\n%s", out)
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
