package p2p

import (
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
)

// ParseDialAddr parses s as /ip{4,6}/IP/{tcp,udp}/PORT/.../p2p/ID, the shape of the addrs a
// node reports on /status, and returns the IP, the peer ID and s written the way multiaddrs
// print it. It reports false for anything else: malformed, DNS names, relays, unix sockets,
// port 0, several /p2p/ parts. It lets a node vet addresses learned over HTTP (bootstrap
// through DNS) without importing multiaddr.
func ParseDialAddr(s string) (ip netip.Addr, id, canonical string, ok bool) {
	a, err := ma.NewMultiaddr(s)
	if err != nil || len(a) < 3 {
		return netip.Addr{}, "", "", false
	}
	first, second, last := a[0], a[1], a[len(a)-1]
	if first.Code() != ma.P_IP4 && first.Code() != ma.P_IP6 {
		return netip.Addr{}, "", "", false
	}
	ip, ok = netip.AddrFromSlice(first.RawValue())
	if !ok {
		return netip.Addr{}, "", "", false
	}
	if second.Code() != ma.P_TCP && second.Code() != ma.P_UDP || second.Value() == "0" {
		return netip.Addr{}, "", "", false
	}
	if last.Code() != ma.P_P2P {
		return netip.Addr{}, "", "", false
	}
	for _, c := range a[2 : len(a)-1] {
		if c.Code() == ma.P_P2P || c.Code() == ma.P_CIRCUIT {
			return netip.Addr{}, "", "", false
		}
	}
	return ip.Unmap(), last.Value(), a.String(), true
}

// CanonicalPeerID writes a peer ID the way multiaddrs print it, so that an ID given as a CID
// still compares equal; an ID that does not parse is returned as is.
func CanonicalPeerID(id string) string {
	if id == "" {
		return ""
	}
	a, err := ma.NewMultiaddr("/p2p/" + id)
	if err != nil || len(a) != 1 {
		return id
	}
	return a[0].Value()
}
