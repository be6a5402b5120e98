package p2p

import (
	"net/netip"
	"testing"
)

func TestParseDialAddr(t *testing.T) {
	t.Parallel()
	id := newTestHost(t, HostOptions{}).ID().String()
	good := []struct {
		in string
		ip string
	}{
		{"/ip4/10.0.0.1/tcp/5082/p2p/" + id, "10.0.0.1"},
		{"/ip6/::ffff:10.0.0.1/tcp/5082/p2p/" + id, "10.0.0.1"},
		{"/ip6/fd00::1/udp/5082/quic-v1/p2p/" + id, "fd00::1"},
	}
	for _, tt := range good {
		ip, gotID, canonical, ok := ParseDialAddr(tt.in)
		if !ok || ip != netip.MustParseAddr(tt.ip) || gotID != id || canonical == "" {
			t.Errorf("ParseDialAddr(%q) = %s, %s, %q, %t, want %s, %s", tt.in, ip, gotID, canonical, ok, tt.ip, id)
		}
	}
	bad := []string{
		"", "nonsense", "/ip4/10.0.0.1/tcp/5082", "/dns4/shoal/tcp/5082/p2p/" + id,
		"/ip4/10.0.0.1/tcp/0/p2p/" + id, "/ip4/10.0.0.1/p2p/" + id,
		"/ip4/10.0.0.1/tcp/1/p2p/" + id + "/p2p-circuit/p2p/" + id,
		"/ip4/10.0.0.1/tcp/1/p2p/" + id + "/p2p/" + id,
	}
	for _, s := range bad {
		if _, _, _, ok := ParseDialAddr(s); ok {
			t.Errorf("ParseDialAddr(%q) = ok, want refused", s)
		}
	}
	if got := CanonicalPeerID(id); got != id {
		t.Errorf("CanonicalPeerID(%s) = %s, want it unchanged", id, got)
	}
	if got := CanonicalPeerID("not/a/peer"); got != "not/a/peer" {
		t.Errorf("CanonicalPeerID(not/a/peer) = %s, want it unchanged", got)
	}
}
