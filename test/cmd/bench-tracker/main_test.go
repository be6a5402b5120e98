package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestSmallRun runs the benchmark small: 200 identities, one tracker, one low open-loop
// rate. Every request must be answered, every chunk leased from the origin at most once, and
// the tracker must hold every member announced (run fails on a missed check).
func TestSmallRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tracker.json")
	var log bytes.Buffer
	args := []string{"--identities", "200", "--rates", "300", "--workers", "0", "--step", "3s", "--trackers", "1", "--json", out}
	if err := run(t.Context(), args, &log); err != nil {
		t.Fatalf("run(%v) = %v\n%s", args, err, log.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Steps) != 2 {
		t.Fatalf("%d steps, want 2 (holders, 300/s)\n%s", len(rep.Steps), log.String())
	}
	for _, s := range rep.Steps {
		if s.Errors != 0 || s.Latency.N == 0 || len(s.Checks) == 0 {
			t.Errorf("step %s: %d errors, %d answers, %d checks; want 0 errors, some answers and checks", s.Step, s.Errors, s.Latency.N, len(s.Checks))
		}
		if s.TrackerCPU <= 0 || s.TrackerPeak <= 0 {
			t.Errorf("step %s: tracker CPU %.2f s, peak RSS %d bytes; want both read", s.Step, s.TrackerCPU, s.TrackerPeak)
		}
	}
	if r := rep.Steps[1]; r.Ops.Started == 0 || r.Ops.Granted == 0 || r.Ops.Held == 0 {
		t.Errorf("rollout step: %+v; want pullers started, leases granted and refused", r.Ops)
	}
}
