package p2p

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// PeerAddrs checks that id is a peer ID and returns those of addrs that pass CheckPeerAddr
// for it, in order. It is for peers learned from outside libp2p, such as a tracker's
// answers: an addr for another peer is dropped, not trusted.
func PeerAddrs(id string, addrs []string) ([]string, error) {
	pid, err := peer.Decode(id)
	if err != nil {
		return nil, fmt.Errorf("peer ID %q: %w", id, err)
	}
	var out []string
	for _, s := range addrs {
		if _, err := transportOf(s, pid, id); err == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// AddAddrs records addrs (multiaddrs ending in /p2p/<peerID>) of a peer learned outside the
// DHT, such as from a tracker, so chunk requests can dial it before the DHT knows it.
// Addrs that do not pass CheckPeerAddr are skipped.
func (n *Network) AddAddrs(peerID string, addrs []string) {
	pid, err := peer.Decode(peerID)
	if err != nil || pid == n.host.ID() {
		return
	}
	var mas []ma.Multiaddr
	for _, s := range addrs {
		if transport, err := transportOf(s, pid, peerID); err == nil {
			mas = append(mas, transport)
		}
	}
	if len(mas) > 0 {
		n.host.Peerstore().AddAddrs(pid, mas, peerstore.TempAddrTTL)
	}
}
