package p2p

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestCheckPeerAddr(t *testing.T) {
	t.Parallel()
	const (
		id    = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
		other = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
	)
	tests := []struct {
		name, addr, peer string
		ok               bool
	}{
		{name: "tcp", addr: "/ip4/10.0.0.1/tcp/5082/p2p/" + id, peer: id, ok: true},
		{name: "quic", addr: "/ip6/::1/udp/5082/quic-v1/p2p/" + id, peer: id, ok: true},
		{name: "dns", addr: "/dns4/node-1.shoal/tcp/5082/p2p/" + id, peer: id, ok: true},
		{name: "other peer", addr: "/ip4/10.0.0.1/tcp/5082/p2p/" + other, peer: id},
		{name: "no p2p part", addr: "/ip4/10.0.0.1/tcp/5082", peer: id},
		{name: "only p2p part", addr: "/p2p/" + id, peer: id},
		{name: "relayed", addr: "/ip4/10.0.0.1/tcp/5082/p2p/" + other + "/p2p-circuit/p2p/" + id, peer: id},
		{name: "malformed", addr: "/ip4/999.0.0.1/tcp/5082/p2p/" + id, peer: id},
		{name: "not a multiaddr", addr: "10.0.0.1:5082", peer: id},
		{name: "empty", addr: "", peer: id},
		{name: "bad peer ID", addr: "/ip4/10.0.0.1/tcp/5082/p2p/" + id, peer: "nobody"},
		{name: "ipfs alias", addr: "/ip4/10.0.0.1/tcp/5082/ipfs/" + id, peer: id, ok: true},
		{name: "path swallows the peer", addr: "/unix/run/shoal.sock/p2p/" + id, peer: id},
		{name: "trailing slash", addr: "/ip4/10.0.0.1/tcp/5082/p2p/" + id + "/", peer: id, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckPeerAddr(tt.addr, tt.peer)
			if tt.ok && err != nil {
				t.Fatalf("CheckPeerAddr(%q) = %v, want nil", tt.addr, err)
			}
			if !tt.ok && !errors.Is(err, ErrBadAddr) {
				t.Fatalf("CheckPeerAddr(%q) = %v, want ErrBadAddr", tt.addr, err)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("CheckPeerAddr(%q) error spans lines: %q", tt.addr, err)
			}
		})
	}
}

func FuzzCheckPeerAddr(f *testing.F) {
	const id = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	f.Add("/ip4/10.0.0.1/tcp/5082/p2p/" + id)
	f.Add("/ip6/::1/udp/1/quic-v1/p2p/" + id)
	f.Add("/dns/x/tcp/1")
	f.Fuzz(func(t *testing.T, s string) {
		if CheckPeerAddr(s, id) == nil && !strings.HasSuffix(s, id) {
			t.Fatalf("CheckPeerAddr(%q) = nil for an address not ending in the peer ID", s)
		}
	})
}

// The shortcut for an address ending in the peer's own ID text must agree with parsing the
// address whole.
func FuzzTransportOfShortcut(f *testing.F) {
	const id = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	want, err := peer.Decode(id)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"/ip4/10.0.0.1/tcp/5082/p2p/" + id, "/unix/a/p2p/" + id, "/p2p/" + id, "/dns4/x/tcp/1/p2p/" + id,
		"/ip4/1.2.3.4/tcp/1/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK/p2p-circuit/p2p/" + id,
		"/ip4/1.2.3.4/tcp/99999/p2p/" + id, "/ip6zone/x/ip6/::1/tcp/1/p2p/" + id,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast, ferr := transportOf(s, want, id)
		slow, serr := transportOf(s, want, "")
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("transportOf(%q): shortcut says %v, whole parse %v", s, ferr, serr)
		}
		if ferr == nil && !fast.Equal(slow) {
			t.Fatalf("transportOf(%q): shortcut gives %s, whole parse %s", s, fast, slow)
		}
	})
}

func BenchmarkPeerAddrs(b *testing.B) {
	const id = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	addrs := []string{"/ip4/10.0.0.1/tcp/5082/p2p/" + id, "/ip6/fd00::1/udp/5082/quic-v1/p2p/" + id}
	for b.Loop() {
		if got, err := PeerAddrs(id, addrs); err != nil || len(got) != 2 {
			b.Fatal(got, err)
		}
	}
}
