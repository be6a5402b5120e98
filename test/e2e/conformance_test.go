package e2e

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// TestConformance runs the OCI distribution-spec conformance suite, read-only, against the
// node, and first against the bare origin registry to show the inputs are right. The node
// pulls from its default upstream, the origin, so the requests need no ns.
func TestConformance(t *testing.T) {
	t.Parallel()
	harness.RequireTools(t, "conformance")
	o := startOrigin(t)
	im := o.push(t, "e2e/conformance", "v1", 2, 256<<10)

	for _, target := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"registry", func(t *testing.T) string { return o.reg.Addr }},
		{"node", func(t *testing.T) string { return o.startNode(t, harness.NodeOptions{}).RegistryAddr }},
	} {
		t.Run(target.name, func(t *testing.T) {
			addr := target.addr(t)
			rep, err := harness.RunConformance(t.Context(), harness.ConformanceOptions{
				Registry: addr, Image: im, ResultsDir: t.TempDir(), Timeout: 2 * time.Minute,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := rep.Err(); err != nil {
				t.Errorf("conformance against the %s: %v\n%s", target.name, err, rep.Output)
				return
			}
			t.Logf("conformance against the %s: %s, %v", target.name, rep.Result, rep.Counts)
		})
	}
}
