// Package fleet runs a fleet of hosts on this one machine and rolls an image out to it in
// several ways, for the fleet benchmark (cmd/bench-fleet) and its end-to-end test.
//
// Every host is a network namespace joined by a veth pair to one bridge, which lives in a
// namespace of its own (the switch). Each pair is shaped with tc in both directions, so each
// host has a link of a known speed to the rest of the fleet. The origin registry, the
// central cache and the tracker are hosts too. This process reaches the bridge through one
// more, unshaped veth pair (the controller port) to start and watch things; the clients pull
// from inside their host's namespace (harness.DialerIn), so the bytes they fetch cross the
// links under test and nothing else does. The fleet's addresses (10.232.0.0/16) exist only on
// those pairs; nothing is routed anywhere.
package fleet

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// Fixed names and addresses: one fleet at a time owns them, and the next run removes what an
// interrupted one left behind.
const (
	prefix        = "shoalfleet"
	switchNetns   = prefix + "-switch"
	controllerDev = prefix + "0" // this namespace's end of the controller port
	bridgeDev     = "br0"
	controllerIP  = "10.232.0.1"
	originIP      = "10.232.0.2"
	cacheIP       = "10.232.0.3"
	trackerIP     = "10.232.0.4"
	maxHosts      = 500
)

// Member is one host of the fleet: a network namespace with one shaped link to the bridge.
type Member struct {
	Name  string // "origin", "cache", "h001", ...
	Netns string // for `ip netns exec` and harness.DialerIn
	IP    string // its address on the fleet's network
	Rate  string // tc rate of its link, each direction
	port  string // the link's end on the bridge
}

// Net is the fleet's network.
type Net struct {
	Controller string // this process's address on the bridge
	Origin     Member
	Cache      Member
	Tracker    Member
	Hosts      []Member
}

// NetOptions sizes the network.
type NetOptions struct {
	Hosts      int
	HostLink   string // tc rate, e.g. "1gbit"
	OriginLink string
	CacheLink  string
}

// BuildNet creates the namespaces, the bridge and the links, unshaped (Shape limits them).
// It needs root and iproute2. Close removes everything.
func BuildNet(o NetOptions) (_ *Net, err error) {
	if err := harness.CheckNetns(); err != nil {
		return nil, fmt.Errorf("the fleet is built from network namespaces: %w", err)
	}
	if o.Hosts < 1 || o.Hosts > maxHosts {
		return nil, fmt.Errorf("%d hosts: want 1 to %d", o.Hosts, maxHosts)
	}
	for _, r := range []string{o.HostLink, o.OriginLink, o.CacheLink} {
		if _, err := harness.ParseRate(r); err != nil {
			return nil, err
		}
	}
	if err := RemoveLeftovers(); err != nil {
		return nil, err
	}
	n := &Net{
		Controller: controllerIP,
		Origin:     member("origin", originIP, o.OriginLink),
		Cache:      member("cache", cacheIP, o.CacheLink),
		// A tracker is a small service on a host like the others.
		Tracker: member("tracker", trackerIP, o.HostLink),
	}
	for i := range o.Hosts {
		// 10.232.1.1 up to 10.232.2.244 and on: .0 and .255 are never used.
		ip := fmt.Sprintf("10.232.%d.%d", 1+i/250, 1+i%250)
		n.Hosts = append(n.Hosts, member(fmt.Sprintf("h%03d", i+1), ip, o.HostLink))
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	steps := [][]string{
		{"ip", "netns", "add", switchNetns},
		{"ip", "-n", switchNetns, "link", "set", "lo", "up"},
		{"ip", "-n", switchNetns, "link", "add", bridgeDev, "type", "bridge"},
		{"ip", "-n", switchNetns, "link", "set", bridgeDev, "up"},
		{"ip", "link", "add", controllerDev, "type", "veth", "peer", "name", "ctl", "netns", switchNetns},
		{"ip", "-n", switchNetns, "link", "set", "ctl", "master", bridgeDev, "up"},
		{"ip", "addr", "add", controllerIP + "/16", "dev", controllerDev},
		{"ip", "link", "set", controllerDev, "up"},
	}
	for _, m := range n.Members() {
		steps = append(steps,
			[]string{"ip", "netns", "add", m.Netns},
			[]string{"ip", "-n", m.Netns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", switchNetns, "link", "add", m.port, "type", "veth", "peer", "name", "eth0", "netns", m.Netns},
			[]string{"ip", "-n", switchNetns, "link", "set", m.port, "master", bridgeDev, "up"},
			[]string{"ip", "-n", m.Netns, "addr", "add", m.IP + "/16", "dev", "eth0"},
			[]string{"ip", "-n", m.Netns, "link", "set", "eth0", "up"},
		)
	}
	if err := harness.RunCommands(steps); err != nil {
		return nil, err
	}
	return n, nil
}

func member(name, ip, rate string) Member {
	return Member{Name: name, Netns: prefix + "-" + name, IP: ip, Rate: rate, port: "p-" + name}
}

// Members returns the origin, the cache, the tracker and the hosts.
func (n *Net) Members() []Member {
	return append([]Member{n.Origin, n.Cache, n.Tracker}, n.Hosts...)
}

// Shape limits every member's link to its rate in both directions: a token bucket on the
// member's own end (what it sends) and one on the bridge's end (what it receives).
func (n *Net) Shape() error {
	var steps [][]string
	for _, m := range n.Members() {
		tbf := []string{"root", "tbf", "rate", m.Rate, "burst", "1mb", "latency", "50ms"}
		steps = append(steps,
			append([]string{"tc", "-n", m.Netns, "qdisc", "replace", "dev", "eth0"}, tbf...),
			append([]string{"tc", "-n", switchNetns, "qdisc", "replace", "dev", m.port}, tbf...),
		)
	}
	return harness.RunCommands(steps)
}

// Close removes the fleet's namespaces and links.
func (n *Net) Close() error {
	return RemoveLeftovers()
}

// RemoveLeftovers deletes every namespace and link of a fleet, this one's or one an
// interrupted run left. Deleting a namespace deletes the veth ends in it, and with them
// their peers.
func RemoveLeftovers() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", f[0], err, strings.TrimSpace(string(out))))
		}
	}
	_ = exec.Command("ip", "link", "del", controllerDev).Run() // gone with the switch, normally
	return errors.Join(errs...)
}
