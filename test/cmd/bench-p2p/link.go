package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// The one-peer measure runs once per link kind. On loopback everything listens on 127.0.0.1
// and shares the machine's cores, so it measures CPU. With a tc rate such as 1gbit, the two
// sources a client can pull from each sit in their own network namespace behind a veth pair
// shaped to that rate in each direction, as cmd/bench places its origin:
//
//	origin registry    ns shoal-p2p-origin, 10.231.210.2:5000
//	        | shaped veth (10.231.210.1 on this side)
//	root namespace     the client, fresh node B (p2p on 10.231.211.1), B's counting proxy,
//	                   and A's forwarder to the origin on 10.231.211.1
//	        | shaped veth (10.231.211.1 on this side)
//	node A, the holder ns shoal-p2p-holder, 10.231.211.2: /v2 :5000, admin :5001, p2p tcp
//
// So the baseline (the client straight from the origin) and the peer path (B from A) each
// cross one link of the same kind. A reaches the origin through a forwarder in the root
// namespace rather than by routing between the namespaces: routing would need ip_forward on
// the host and a FORWARD chain that lets the packets through (Docker's drops them), changes
// to the machine beyond the two namespaces. The forwarder only carries A's fill, which is
// not measured.

// Fixed link indices and namespace names: one run at a time owns these addresses, and a fixed
// name lets the next run remove what a killed one left (NewLink starts by removing it).
// cmd/bench uses index 200.
const (
	originLinkIndex = 210
	holderLinkIndex = 211
	originNetns     = "shoal-p2p-origin"
	holderNetns     = "shoal-p2p-holder"
)

// parseLinks reads --links and checks, before anything slow starts, that shaped links can be
// built here.
func parseLinks(s string) ([]string, error) {
	var links []string
	shaped := false
	for _, l := range strings.Split(s, ",") {
		l = strings.ToLower(strings.TrimSpace(l))
		if l != "loopback" {
			if _, err := harness.ParseRate(l); err != nil {
				return nil, fmt.Errorf("--links: %q is neither loopback nor a tc rate such as 1gbit", l)
			}
			shaped = true
		}
		links = append(links, l)
	}
	if shaped {
		if err := harness.CheckNetns(); err != nil {
			return nil, fmt.Errorf("--links: a shaped link puts the origin and a node in network namespaces: %w (or use --links loopback)", err)
		}
	}
	return links, nil
}

// site is where a node runs: the root namespace (netns "") or a namespace, and the address
// its p2p side listens on (default 127.0.0.1). In a namespace its /v2 and admin ports are on
// that address too, so this process reaches them across the link.
type site struct {
	netns string
	ip    string
}

func (s site) p2pListen() []string {
	ip := s.ip
	if ip == "" {
		ip = "127.0.0.1"
	}
	return []string{"--p2p-listen", "/ip4/" + ip + "/tcp/0"}
}

// oneLink is where one variant of the one-peer measure puts the origin and the holder.
type oneLink struct {
	name         string            // "loopback" or the tc rate
	reg          *harness.Registry // the origin
	holder       site              // node A
	holderOrigin string            // A's --origin
	fresh        site              // node B
	undo         []func()          // in reverse on close
}

// close stops what the link started and removes its namespaces.
func (l *oneLink) close() {
	for i := len(l.undo) - 1; i >= 0; i-- {
		l.undo[i]()
	}
	l.undo = nil
}

// openLink sets up a one-peer variant: on loopback, the env's origin with A and B in the
// root namespace; with a tc rate, a new origin and A each behind a link of that rate.
func (e *env) openLink(ctx context.Context, name string) (_ *oneLink, err error) {
	if name == "loopback" {
		return &oneLink{name: name, reg: e.reg, holderOrigin: e.reg.URL}, nil
	}
	l := &oneLink{name: name}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	originLink, err := harness.NewLink(originNetns, originLinkIndex, name)
	if err != nil {
		return nil, fmt.Errorf("origin link: %w", err)
	}
	l.undo = append(l.undo, func() { originLink.Close() })
	holderLink, err := harness.NewLink(holderNetns, holderLinkIndex, name)
	if err != nil {
		return nil, fmt.Errorf("holder link: %w", err)
	}
	l.undo = append(l.undo, func() { holderLink.Close() })

	regDir := filepath.Join(e.work, "registry-"+name)
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return nil, err
	}
	// The registry's storage goes with it: its copy of the blob is not needed afterwards.
	l.undo = append(l.undo, func() {
		if !e.keep {
			os.RemoveAll(filepath.Join(regDir, "storage"))
		}
	})
	l.reg, err = harness.RunRegistryWith(ctx, regDir, harness.RegistryOptions{
		Netns: originLink.Netns, Addr: originLink.PeerAddr + ":5000",
	})
	if err != nil {
		return nil, err
	}
	l.undo = append(l.undo, func() { l.reg.Close() })

	fwd, err := harness.NewCountingProxyAt(holderLink.HostAddr+":0", l.reg.URL)
	if err != nil {
		return nil, fmt.Errorf("node A's way to the origin: %w", err)
	}
	l.undo = append(l.undo, func() { fwd.Close() })
	l.holderOrigin = fwd.URL
	l.holder = site{netns: holderLink.Netns, ip: holderLink.PeerAddr}
	// B listens where A can dial it back, not on a loopback A cannot reach.
	l.fresh = site{ip: holderLink.HostAddr}
	fmt.Fprintf(e.out, "origin %s away: registry at %s in namespace %s; node A in namespace %s at %s, its origin a forwarder at %s\n",
		name, l.reg.URL, originLink.Netns, holderLink.Netns, holderLink.PeerAddr, fwd.URL)
	return l, nil
}

// onePeerOver runs the one-peer measure over link, tearing the link down afterwards.
func (e *env) onePeerOver(ctx context.Context, size int64, link string) (*onePeer, error) {
	l, err := e.openLink(ctx, link)
	if err != nil {
		return nil, err
	}
	defer l.close()
	return e.onePeer(ctx, size, l)
}
