package p2p

import (
	"slices"
	"testing"
)

func TestPeerAddrs(t *testing.T) {
	a, b := newTestHost(t, HostOptions{}), newTestHost(t, HostOptions{})
	addrA, addrB := Addrs(a)[0], Addrs(b)[0]
	got, err := PeerAddrs(a.ID().String(), []string{addrA, addrB, "/garbage", "/ip4/1.2.3.4/tcp/1"})
	if err != nil || !slices.Equal(got, []string{addrA}) {
		t.Errorf("PeerAddrs = %v, %v; want [%s]", got, err, addrA)
	}
	if _, err := PeerAddrs("not-a-peer", []string{addrA}); err == nil {
		t.Errorf("PeerAddrs(bad ID) = nil error")
	}
}

func TestAddAddrs(t *testing.T) {
	a, b := newTestHost(t, HostOptions{}), newTestHost(t, HostOptions{})
	n := &Network{host: a}
	n.AddAddrs(b.ID().String(), append(Addrs(a), Addrs(b)...))
	if got := a.Peerstore().Addrs(b.ID()); len(got) != len(Addrs(b)) {
		t.Errorf("peerstore addrs of b = %v, want b's %v only", got, Addrs(b))
	}
	if err := a.Connect(t.Context(), a.Peerstore().PeerInfo(b.ID())); err != nil {
		t.Errorf("dial b through the added addrs: %v", err)
	}
}
