package p2p

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// NetworkOptions configure Start.
type NetworkOptions struct {
	Host   HostOptions
	Router RouterOptions
	// Exchange fetches chunks from peers; it serves this node's once Exchange.Serve is called
	// (or at once when its Store is set).
	Exchange ExchangeOptions
	Logger   *slog.Logger
}

// Network is a node's presence in the fleet: its libp2p host, the DHT router on it and the
// chunk exchange serving its blobs. It lets the rest of shoal hold them without importing
// libp2p.
type Network struct {
	host     host.Host
	Router   *Router
	Exchange *Exchange
}

// Start builds the host, the router and the exchange. Call Router.Bootstrap to join the
// fleet, and Exchange.Serve to answer peers' chunk requests.
func Start(o NetworkOptions) (*Network, error) {
	if o.Host.Logger == nil {
		o.Host.Logger = o.Logger
	}
	if o.Router.Logger == nil {
		o.Router.Logger = o.Logger
	}
	if o.Exchange.Logger == nil {
		o.Exchange.Logger = o.Logger
	}
	h, err := NewHost(o.Host)
	if err != nil {
		return nil, err
	}
	r, err := NewRouter(h, o.Router)
	if err != nil {
		h.Close()
		return nil, err
	}
	x, err := NewExchange(h, o.Exchange)
	if err != nil {
		r.Close()
		h.Close()
		return nil, err
	}
	return &Network{host: h, Router: r, Exchange: x}, nil
}

// ID is this node's peer ID.
func (n *Network) ID() string { return n.host.ID().String() }

// Addrs are this node's full multiaddrs, each ending in /p2p/<id>: what another node
// bootstraps from.
func (n *Network) Addrs() []string { return Addrs(n.host) }

// Signer signs with this node's identity key, for services outside libp2p (a tracker).
func (n *Network) Signer() (*Signer, error) { return NewSigner(n.host) }

// Peers is the number of peers connected now.
func (n *Network) Peers() int {
	count := 0
	for _, p := range n.host.Network().Peers() {
		if n.host.Network().Connectedness(p) == network.Connected {
			count++
		}
	}
	return count
}

// RoutingPeers is the number of peers in the DHT routing table.
func (n *Network) RoutingPeers() int { return n.Router.dht.RoutingTable().Size() }

// Close stops serving chunks, then the router, then the host.
func (n *Network) Close() error {
	xerr := n.Exchange.Close()
	rerr := n.Router.Close()
	herr := n.host.Close()
	if err := errors.Join(xerr, rerr, herr); err != nil {
		return fmt.Errorf("close p2p: %w", err)
	}
	return nil
}
