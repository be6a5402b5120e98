package fleet

import (
	"testing"

	"github.com/shoal-dev/shoal/node/announce"
	"github.com/shoal-dev/shoal/node/swarm"
)

// TestSwarmLeases: only a member with trackers hands the downloads origin leases; a node
// outside any fleet gives them no fleet at all.
func TestSwarmLeases(t *testing.T) {
	t.Parallel()
	if _, ok := New(Options{Tracker: announce.Disabled{}}).Swarm().(swarm.OriginLeaser); ok {
		t.Errorf("the swarm side of a member without trackers implements OriginLeaser")
	}
	if _, ok := New(Options{Tracker: announce.New(announce.Options{}), Trackers: true}).Swarm().(swarm.OriginLeaser); !ok {
		t.Errorf("the swarm side of a member with trackers does not implement OriginLeaser")
	}
	if f := (None{}).Swarm(); f != nil {
		t.Errorf("None.Swarm() = %v, want nil: the origin alone", f)
	}
}
