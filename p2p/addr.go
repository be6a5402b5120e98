package p2p

import (
	"errors"
	"fmt"
	"strings"

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
	_, err = transportOf(s, want, peerID)
	return err
}

// transportOf checks that s is a multiaddr of peer want, as CheckPeerAddr describes, and
// returns its transport part. id is the text want was decoded from: an s that ends in
// /p2p/<id> needs only its transport part parsed, which spares decoding and encoding the
// peer ID again for every address (a tracker's answer holds dozens).
func transportOf(s string, want peer.ID, id string) (ma.Multiaddr, error) {
	if prefix, ok := strings.CutSuffix(s, "/p2p/"+id); ok && id != "" {
		return checkTransport(s, prefix)
	}
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadAddr, s, err)
	}
	transport, got := peer.SplitAddr(a)
	switch {
	case got == "":
		return nil, fmt.Errorf("%w: %q does not end in /p2p/<id>", ErrBadAddr, s)
	case got != want:
		return nil, fmt.Errorf("%w: %q is for peer %s, not %s", ErrBadAddr, s, got, want)
	case len(transport) == 0:
		return nil, fmt.Errorf("%w: %q has no transport address", ErrBadAddr, s)
	}
	return noRelay(s, transport)
}

// checkTransport parses prefix, the part of address s before its /p2p/ part, as a
// transport address.
func checkTransport(s, prefix string) (ma.Multiaddr, error) {
	if prefix == "" {
		return nil, fmt.Errorf("%w: %q has no transport address", ErrBadAddr, s)
	}
	transport, err := ma.NewMultiaddr(prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadAddr, s, err)
	}
	for _, c := range transport {
		if c.Protocol().Path {
			// A path takes the rest of the address, /p2p/ part included, so parsed whole
			// s names no peer.
			return nil, fmt.Errorf("%w: %q does not end in /p2p/<id>", ErrBadAddr, s)
		}
	}
	return noRelay(s, transport)
}

// noRelay returns transport, the transport part of s, unless it goes through another peer.
func noRelay(s string, transport ma.Multiaddr) (ma.Multiaddr, error) {
	for _, c := range transport {
		if c.Code() == ma.P_P2P || c.Code() == ma.P_CIRCUIT {
			return nil, fmt.Errorf("%w: %q: relayed addresses are not used", ErrBadAddr, s)
		}
	}
	return transport, nil
}
