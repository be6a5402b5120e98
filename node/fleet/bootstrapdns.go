package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/p2p"
)

// A headless Service (or any name with one A/AAAA record per node) tells a node where its
// fleet is, but a record carries only an IP and a libp2p dial needs the peer ID too. So the
// node asks each IP's admin endpoint for its /status addrs, which end in /p2p/<id>. Every
// answer comes from the network and is treated as hostile: bounded in count, time and size,
// and only addresses that parse and make sense for the IP that was asked are kept.
const (
	// bootstrapDNSPort is where a peer's /status is asked for when the name carries no port:
	// the default --admin-addr port.
	bootstrapDNSPort = 5081
	// bootstrapDNSMaxIPs bounds how many of the name's records are asked. A few peers are
	// enough to join; the DHT finds the rest.
	bootstrapDNSMaxIPs = 16
	// bootstrapDNSLookupTimeout bounds the DNS lookup itself.
	bootstrapDNSLookupTimeout = 5 * time.Second
	// bootstrapDNSRequestTimeout bounds one /status request, body included.
	bootstrapDNSRequestTimeout = 2 * time.Second
	// bootstrapDNSMaxBody bounds a /status body; a real one is well under 4 KiB.
	bootstrapDNSMaxBody = 64 << 10
	// bootstrapDNSMaxAddrs bounds how many entries of one answer are looked at, and
	// bootstrapDNSMaxPeerAddrs how many are kept per peer.
	bootstrapDNSMaxAddrs     = 64
	bootstrapDNSMaxPeerAddrs = 8
)

// errNoBootstrapPeers means a bootstrap name led to no peer other than this node.
var errNoBootstrapPeers = errors.New("no peer learned")

// errAlone means the name has no other node behind it at all (no record, or only this
// node's): the first node of a fleet.
var errAlone = errors.New("no other node")

// lookupHost resolves a name to IP addresses; net.DefaultResolver.LookupHost in production.
type lookupHost func(ctx context.Context, host string) ([]string, error)

// resolveBootstrapDNS returns bootstrap multiaddrs (each ending in /p2p/<id>) for the peers
// behind target, NAME[:PORT] with PORT the peers' admin port (default 5081). It resolves
// NAME, asks up to 16 of its IPs for GET /status concurrently, and keeps the addrs each
// reports, those on the IP that was asked first. Addresses of self (this node's peer ID)
// are dropped, so the node's own record is harmless. client nil means a client that uses
// no proxy; redirects are never followed. It fails only when no peer could be learned.
func resolveBootstrapDNS(ctx context.Context, target string, resolver lookupHost, client *http.Client, self string) ([]string, error) {
	host, port, err := splitBootstrapTarget(target)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, bootstrapDNSLookupTimeout)
	records, err := resolver(lctx, host)
	cancel()
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		// A headless Service without endpoints yet: this may be the fleet's first node.
		return nil, fmt.Errorf("bootstrap dns %s: look up %s: %w: %w: %w", target, host, errNoBootstrapPeers, errAlone, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bootstrap dns %s: look up %s: %w", target, host, err)
	}
	ips := bootstrapIPs(records)
	if len(ips) == 0 {
		return nil, fmt.Errorf("bootstrap dns %s: %w: %w: %s has no usable A/AAAA record (%d records)", target, errNoBootstrapPeers, errAlone, host, len(records))
	}
	self = p2p.CanonicalPeerID(self)

	var c *http.Client
	if client != nil {
		cc := *client
		c = &cc
	} else {
		// No proxy: peers are inside the fleet's network, and an HTTP_PROXY meant for the
		// upstream registries must not see (or break) these requests.
		tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		c = &http.Client{Transport: tr}
	}
	// A peer must not be able to send this node anywhere else.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	answers := make([]statusAnswer, len(ips))
	var wg sync.WaitGroup
	for i, ip := range ips {
		wg.Go(func() { answers[i] = askStatus(ctx, c, ip, port, self) })
	}
	wg.Wait()

	var (
		out      []string
		seen     = make(map[string]bool)
		peers    = make(map[string]bool)
		answered int
		failure  error
	)
	for _, a := range answers {
		if a.err != nil {
			if failure == nil {
				failure = a.err
			}
			continue
		}
		answered++
		if a.self {
			continue
		}
		if len(a.addrs) == 0 {
			if failure == nil {
				failure = fmt.Errorf("%s: no usable address in /status", a.ip)
			}
			continue
		}
		peers[a.id] = true
		for _, s := range a.addrs {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if len(peers) > 0 {
		return out, nil
	}
	if failure != nil {
		return nil, fmt.Errorf("bootstrap dns %s: %w: %d of %d addresses answered; first failure: %w", target, errNoBootstrapPeers, answered, len(ips), failure)
	}
	// Every answer came from this node: a fleet of one, so far.
	return nil, fmt.Errorf("bootstrap dns %s: %w: %w: %d of %d addresses answered, all of them this node", target, errNoBootstrapPeers, errAlone, answered, len(ips))
}

// CheckBootstrapDNS checks that target is NAME[:PORT], a bootstrap name a node can resolve.
func CheckBootstrapDNS(target string) error {
	_, _, err := splitBootstrapTarget(target)
	return err
}

// splitBootstrapTarget checks NAME[:PORT] and returns the name and the port.
func splitBootstrapTarget(target string) (string, int, error) {
	host, port := target, bootstrapDNSPort
	if strings.Contains(target, ":") {
		h, p, err := net.SplitHostPort(target)
		if err != nil {
			return "", 0, fmt.Errorf("bootstrap dns %q: want NAME[:PORT]: %w", target, err)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("bootstrap dns %q: port %q: want 1-65535", target, p)
		}
		host, port = h, int(n)
	}
	if _, err := netip.ParseAddr(host); err != nil && !isHostname(host) {
		return "", 0, fmt.Errorf("bootstrap dns %q: %q is not a host name", target, host)
	}
	return host, port, nil
}

// isHostname reports whether s is a DNS name: dot-separated labels of 1-63 letters, digits,
// '-' or '_', not starting or ending with '-', 253 bytes at most, one trailing dot allowed.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}

// bootstrapIPs keeps the records that are unicast IPs a peer could answer on, without
// duplicates, shuffled so that every node does not ask the same few peers, and at most
// bootstrapDNSMaxIPs of them.
func bootstrapIPs(records []string) []netip.Addr {
	seen := make(map[netip.Addr]bool, len(records))
	ips := make([]netip.Addr, 0, len(records))
	for _, r := range records {
		ip, err := netip.ParseAddr(r)
		if err != nil {
			continue
		}
		ip = ip.Unmap().WithZone("")
		if !ip.IsGlobalUnicast() && !ip.IsLoopback() || seen[ip] {
			continue
		}
		seen[ip] = true
		ips = append(ips, ip)
	}
	rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
	if len(ips) > bootstrapDNSMaxIPs {
		ips = ips[:bootstrapDNSMaxIPs]
	}
	return ips
}

// statusAnswer is what one IP taught: the peer's ID and addrs, or that it is this node, or
// why nothing was learned.
type statusAnswer struct {
	ip    netip.Addr
	id    string
	addrs []string
	self  bool
	err   error
}

// askStatus fetches ip's /status and picks the addrs out of it.
func askStatus(ctx context.Context, c *http.Client, ip netip.Addr, port int, self string) statusAnswer {
	ctx, cancel := context.WithTimeout(ctx, bootstrapDNSRequestTimeout)
	defer cancel()
	body, err := fetchStatus(ctx, c, "http://"+net.JoinHostPort(ip.String(), strconv.Itoa(port))+"/status")
	if err != nil {
		return statusAnswer{ip: ip, err: fmt.Errorf("%s: %w", ip, err)}
	}
	addrs, err := decodeStatusAddrs(body)
	if err != nil {
		return statusAnswer{ip: ip, err: fmt.Errorf("%s: %w", ip, err)}
	}
	id, kept, err := peerAddrs(ip, addrs)
	if err != nil {
		return statusAnswer{ip: ip, err: fmt.Errorf("%s: %w", ip, err)}
	}
	if id != "" && id == self {
		return statusAnswer{ip: ip, self: true}
	}
	return statusAnswer{ip: ip, id: id, addrs: kept}
}

func fetchStatus(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get /status: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, bootstrapDNSMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read /status: %w", err)
	}
	if len(body) > bootstrapDNSMaxBody {
		return nil, fmt.Errorf("read /status: body over %d bytes", bootstrapDNSMaxBody)
	}
	return body, nil
}

// decodeStatusAddrs takes the addrs field out of a /status body: one JSON object and nothing
// after it. Other fields are ignored so that /status can grow.
func decodeStatusAddrs(body []byte) ([]string, error) {
	var st struct {
		Addrs []string `json:"addrs"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("decode /status: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode /status: data after the object")
	}
	if len(st.Addrs) > bootstrapDNSMaxAddrs {
		st.Addrs = st.Addrs[:bootstrapDNSMaxAddrs]
	}
	return st.Addrs, nil
}

// peerAddrs picks out of a peer's reported addrs those worth dialling: /ip4 or /ip6, then a
// TCP or UDP port, ending in the one /p2p/<id>. Loopback addresses are kept only when the
// peer was itself asked on loopback, and link-local, unspecified or multicast ones never;
// those on the asked IP come first. One node has one ID, so an answer naming several is
// refused whole. It returns "" and no addrs when no entry is usable.
func peerAddrs(asked netip.Addr, addrs []string) (string, []string, error) {
	asked = asked.Unmap()
	var id string
	var onAsked, other []string
	for _, s := range addrs {
		ip, pid, canonical, ok := p2p.ParseDialAddr(s)
		if !ok {
			continue
		}
		if id == "" {
			id = pid
		} else if pid != id {
			return "", nil, fmt.Errorf("/status names several peers (%s, %s)", id, pid)
		}
		switch {
		case ip == asked:
			onAsked = append(onAsked, canonical)
		case ip.IsLoopback() && asked.IsLoopback(), ip.IsGlobalUnicast():
			other = append(other, canonical)
		}
	}
	out := append(onAsked, other...)
	if len(out) > bootstrapDNSMaxPeerAddrs {
		out = out[:bootstrapDNSMaxPeerAddrs]
	}
	if len(out) == 0 {
		return id, nil, nil
	}
	return id, out, nil
}
