// Package p2ptest gives tests a node's identity as the fleet sees it: a real libp2p host on
// loopback, its full addresses and the signer of its key.
package p2ptest

import (
	"testing"

	"github.com/shoal-dev/shoal/p2p"
)

// Peer is one node's identity.
type Peer struct {
	ID     string
	Addrs  []string
	Signer *p2p.Signer
}

// NewPeer starts a host on a loopback port, closed when the test ends.
func NewPeer(t testing.TB) *Peer {
	t.Helper()
	h, err := p2p.NewHost(p2p.HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	signer, err := p2p.NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	return &Peer{ID: signer.ID(), Addrs: p2p.Addrs(h), Signer: signer}
}
