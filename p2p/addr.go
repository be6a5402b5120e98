package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrBadAddr reports a multiaddr that is malformed, has no transport part, or names
// another peer than the one it is given for.
var ErrBadAddr = errors.New("bad peer address")

// CheckPeerAddr checks that s is a multiaddr peerID can be dialled at: a transport address
// followed by /p2p/<peerID>, as Addrs returns them. It lets a service outside libp2p (the
// tracker) vet the addresses a peer reports for itself without importing multiaddr.
func CheckPeerAddr(s, peerID string) error {
	want, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("%w: peer ID %q: %w", ErrBadAddr, peerID, err)
	}
	_, err = transportOf(s, want)
	return err
}

// transportOf checks that s is a multiaddr of peer want, as CheckPeerAddr describes, and
// returns its transport part.
func transportOf(s string, want peer.ID) (ma.Multiaddr, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadAddr, s, err)
	}
	transport, id := peer.SplitAddr(a)
	switch {
	case id == "":
		return nil, fmt.Errorf("%w: %q does not end in /p2p/<id>", ErrBadAddr, s)
	case id != want:
		return nil, fmt.Errorf("%w: %q is for peer %s, not %s", ErrBadAddr, s, id, want)
	case len(transport) == 0:
		return nil, fmt.Errorf("%w: %q has no transport address", ErrBadAddr, s)
	}
	for _, c := range transport {
		if c.Code() == ma.P_P2P || c.Code() == ma.P_CIRCUIT {
			return nil, fmt.Errorf("%w: %q: relayed addresses are not used", ErrBadAddr, s)
		}
	}
	return transport, nil
}
