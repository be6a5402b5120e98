package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-dev/shoal/p2p"
)

// testPeerID returns a valid, distinct peer ID for each n.
func testPeerID(t testing.TB, n int) string {
	t.Helper()
	h, err := mh.Sum([]byte("shoal test peer "+strconv.Itoa(n)), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return h.B58String()
}

// tcpAddr is the multiaddr a peer reports for ip.
func tcpAddr(ip string, port int, id string) string {
	proto := "ip4"
	if strings.Contains(ip, ":") {
		proto = "ip6"
	}
	return fmt.Sprintf("/%s/%s/tcp/%d/p2p/%s", proto, ip, port, id)
}

// statusBody is a /status answer shaped like the real one.
func statusBody(t testing.TB, id string, addrs ...string) []byte {
	t.Helper()
	// The fields of node.Status, which this package cannot import.
	type cacheStatus struct {
		Bytes int64 `json:"bytes"`
		Blobs int   `json:"blobs"`
	}
	b, err := json.MarshalIndent(struct {
		Version      string      `json:"version"`
		PeerID       string      `json:"peerID,omitempty"`
		Addrs        []string    `json:"addrs,omitempty"`
		Peers        int         `json:"peers"`
		Joined       bool        `json:"joined"`
		RegistryAddr string      `json:"registryAddr"`
		Upstreams    []string    `json:"upstreams"`
		Cache        cacheStatus `json:"cache"`
	}{
		Version: "test", PeerID: id, Addrs: addrs, Peers: 3, Joined: true,
		RegistryAddr: "127.0.0.1:5080", Upstreams: []string{"docker.io"},
		Cache: cacheStatus{Bytes: 1 << 20, Blobs: 3},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serveBody(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}

// testFleet stands for the fleet's network: every peer is a real HTTP server, and the
// client's dialer sends IP:port to the server standing for that IP, so tests can use any
// IP (private, IPv6) with the port shared by all of them, as in production.
type testFleet struct {
	mu     sync.Mutex
	routes map[string]string // IP:port -> listener address
	dialed []string
	hosts  []string // Host headers the servers saw
}

func newTestFleet() *testFleet { return &testFleet{routes: make(map[string]string)} }

// peer starts a server answering for ip on port.
func (f *testFleet) peer(t *testing.T, ip string, port int, h http.Handler) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hosts = append(f.hosts, r.Host)
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.mu.Lock()
	f.routes[net.JoinHostPort(ip, strconv.Itoa(port))] = srv.Listener.Addr().String()
	f.mu.Unlock()
}

func (f *testFleet) client(t *testing.T) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			f.mu.Lock()
			f.dialed = append(f.dialed, addr)
			to, ok := f.routes[addr]
			f.mu.Unlock()
			if !ok {
				return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, to)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (f *testFleet) dialCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dialed)
}

// fakeResolver answers every lookup of name with records, and fails any other.
func fakeResolver(t *testing.T, name string, records ...string) lookupHost {
	return func(ctx context.Context, host string) ([]string, error) {
		if host != name {
			t.Errorf("lookup %q, want %q", host, name)
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return slices.Clone(records), nil
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestBootstrapDNSPeers(t *testing.T) {
	t.Parallel()
	const name = "shoal.shoal-system.svc.cluster.local"
	self, a, b, c := testPeerID(t, 0), testPeerID(t, 1), testPeerID(t, 2), testPeerID(t, 3)

	// The peers each case can draw on, by IP.
	good := func(ip, id string) http.Handler {
		return serveBody(statusBody(t, id, tcpAddr(ip, 5082, id), tcpAddr("127.0.0.1", 5082, id)))
	}
	huge := statusBody(t, c, tcpAddr("10.0.0.3", 5082, c))
	huge = append(huge[:len(huge)-1], []byte(`, "pad": "`+strings.Repeat("x", 70<<10)+`"}`)...)
	behaviours := map[string]http.Handler{
		"a":       good("10.0.0.1", a),
		"b":       good("10.0.0.2", b),
		"c":       good("10.0.0.3", c),
		"self":    good("10.0.0.9", self),
		"garbage": serveBody([]byte("<html>not json</html>")),
		"huge":    serveBody(huge),
		"trailing": serveBody(append(statusBody(t, c, tcpAddr("10.0.0.3", 5082, c)),
			[]byte(` {"addrs": []}`)...)),
		"array": serveBody([]byte(`["/ip4/10.0.0.3/tcp/5082/p2p/` + c + `"]`)),
		"null":  serveBody([]byte(`null`)),
		"bad addrs": serveBody(statusBody(t, c,
			"garbage",
			"/ip4/10.0.0.3/tcp/5082",                              // no peer ID
			"/ip4/10.0.0.3/tcp/5082/p2p/notapeerid",               // bad peer ID
			"/ip4/10.0.0.3/tcp/0/p2p/"+c,                          // port 0
			"/dns4/evil.example/tcp/5082/p2p/"+c,                  // a name to resolve
			"/ip4/10.0.0.3/tcp/5082/p2p/"+a+"/p2p-circuit/p2p/"+c, // relay
			"/unix/tmp/sock/p2p/"+c,
			tcpAddr("0.0.0.0", 5082, c),
			tcpAddr("127.0.0.1", 5082, c), // loopback, but 10.0.0.3 was asked
			tcpAddr("169.254.1.1", 5082, c),
			tcpAddr("224.0.0.1", 5082, c),
		)),
		"several ids": serveBody(statusBody(t, c, tcpAddr("10.0.0.3", 5082, c), tcpAddr("10.0.0.3", 5083, b))),
		"500":         http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }),
		"redirect": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://10.0.0.99:5081/status", http.StatusFound)
		}),
	}
	ipOf := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "self": "10.0.0.9"}

	tests := []struct {
		name    string
		peers   []string // behaviours, each on its own IP
		down    int      // records nobody answers on
		want    []string
		wantErr string
	}{
		{
			name:  "three peers",
			peers: []string{"a", "b", "c"},
			want:  []string{tcpAddr("10.0.0.1", 5082, a), tcpAddr("10.0.0.2", 5082, b), tcpAddr("10.0.0.3", 5082, c)},
		},
		{
			name:  "self filtered",
			peers: []string{"a", "self"},
			want:  []string{tcpAddr("10.0.0.1", 5082, a)},
		},
		{
			name:  "one down",
			peers: []string{"a", "b"},
			down:  1,
			want:  []string{tcpAddr("10.0.0.1", 5082, a), tcpAddr("10.0.0.2", 5082, b)},
		},
		{
			name:  "hostile peers ignored",
			peers: []string{"a", "garbage", "huge", "trailing", "array", "null", "bad addrs", "several ids", "500", "redirect"},
			want:  []string{tcpAddr("10.0.0.1", 5082, a)},
		},
		{name: "only self", peers: []string{"self"}, wantErr: "1 of 1 addresses answered, all of them this node"},
		{name: "all down", down: 3, wantErr: "0 of 3 addresses answered; first failure:"},
		{name: "garbage", peers: []string{"garbage"}, wantErr: "0 of 1 addresses answered; first failure:"},
		{name: "huge body", peers: []string{"huge"}, wantErr: "body over 65536 bytes"},
		{name: "trailing data", peers: []string{"trailing"}, wantErr: "data after the object"},
		{name: "no usable addrs", peers: []string{"bad addrs"}, wantErr: "1 of 1 addresses answered; first failure: 10.0.0.100: no usable address"},
		{name: "several ids", peers: []string{"several ids"}, wantErr: "names several peers"},
		{name: "redirect", peers: []string{"redirect"}, wantErr: "302 Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newTestFleet()
			// The redirect target would count as a hit if it were followed.
			f.peer(t, "10.0.0.99", 5081, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				t.Errorf("redirect followed to %s", r.Host)
			}))
			var records []string
			for i, p := range tt.peers {
				ip, ok := ipOf[p]
				if !ok {
					ip = "10.0.0." + strconv.Itoa(100+i)
				}
				f.peer(t, ip, 5081, behaviours[p])
				records = append(records, ip)
			}
			for i := range tt.down {
				records = append(records, "10.0.1."+strconv.Itoa(i+1))
			}
			got, err := resolveBootstrapDNS(t.Context(), name, fakeResolver(t, name, records...), f.client(t), self)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errNoBootstrapPeers) {
					t.Fatalf("resolveBootstrapDNS = %q, %v, want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolveBootstrapDNS: %v", err)
			}
			if !slices.Equal(sorted(got), sorted(tt.want)) {
				t.Errorf("resolveBootstrapDNS = %q, want %q", got, tt.want)
			}
			if n := f.dialCount(); n != len(records) {
				t.Errorf("dialled %d times, want %d (one per record)", n, len(records))
			}
			for _, h := range f.hosts {
				if _, port, _ := net.SplitHostPort(h); port != "5081" {
					t.Errorf("request Host %q, want port 5081", h)
				}
			}
		})
	}
}

func TestBootstrapDNSIPv6(t *testing.T) {
	t.Parallel()
	a, b := testPeerID(t, 1), testPeerID(t, 2)
	f := newTestFleet()
	f.peer(t, "fd00::1", 6000, serveBody(statusBody(t, a, tcpAddr("fd00::1", 5082, a), tcpAddr("10.0.0.1", 5082, a))))
	f.peer(t, "10.0.0.2", 6000, serveBody(statusBody(t, b, tcpAddr("10.0.0.2", 5082, b))))
	got, err := resolveBootstrapDNS(t.Context(), "shoal:6000", fakeResolver(t, "shoal", "fd00::1", "::ffff:10.0.0.2"), f.client(t), "")
	if err != nil {
		t.Fatalf("resolveBootstrapDNS: %v", err)
	}
	want := []string{tcpAddr("fd00::1", 5082, a), tcpAddr("10.0.0.1", 5082, a), tcpAddr("10.0.0.2", 5082, b)}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("resolveBootstrapDNS = %q, want %q", got, want)
	}
	// The address asked comes before the peer's others.
	if i, j := slices.Index(got, want[0]), slices.Index(got, want[1]); i > j {
		t.Errorf("resolveBootstrapDNS = %q, want %s before %s", got, want[0], want[1])
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.hosts, "[fd00::1]:6000") || !slices.Contains(f.dialed, "[fd00::1]:6000") {
		t.Errorf("hosts %q, dialled %q, want [fd00::1]:6000 in both", f.hosts, f.dialed)
	}
}

func TestBootstrapDNSCap(t *testing.T) {
	t.Parallel()
	f := newTestFleet()
	var records []string
	for i := range 40 {
		ip := "10.0.2." + strconv.Itoa(i+1)
		id := testPeerID(t, i+1)
		f.peer(t, ip, 5081, serveBody(statusBody(t, id, tcpAddr(ip, 5082, id))))
		records = append(records, ip, ip, "::ffff:"+ip) // duplicates count once
	}
	got, err := resolveBootstrapDNS(t.Context(), "shoal", fakeResolver(t, "shoal", records...), f.client(t), "")
	if err != nil {
		t.Fatalf("resolveBootstrapDNS: %v", err)
	}
	if len(got) != bootstrapDNSMaxIPs || f.dialCount() != bootstrapDNSMaxIPs {
		t.Errorf("learned %d addrs in %d dials, want %d of each", len(got), f.dialCount(), bootstrapDNSMaxIPs)
	}
}

func TestBootstrapDNSSlowPeer(t *testing.T) {
	t.Parallel()
	a := testPeerID(t, 1)
	f := newTestFleet()
	f.peer(t, "10.0.0.1", 5081, serveBody(statusBody(t, a, tcpAddr("10.0.0.1", 5082, a))))
	// Sends half an answer, then nothing until the client gives up.
	f.peer(t, "10.0.0.2", 5081, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"addrs": [`))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	// The outer deadline only keeps a broken timeout from hanging the test.
	ctx, cancel := context.WithTimeout(t.Context(), 4*bootstrapDNSRequestTimeout)
	defer cancel()
	start := time.Now()
	got, err := resolveBootstrapDNS(ctx, "shoal", fakeResolver(t, "shoal", "10.0.0.1", "10.0.0.2"), f.client(t), "")
	if err != nil {
		t.Fatalf("resolveBootstrapDNS: %v", err)
	}
	if want := []string{tcpAddr("10.0.0.1", 5082, a)}; !slices.Equal(got, want) {
		t.Errorf("resolveBootstrapDNS = %q, want %q", got, want)
	}
	if d := time.Since(start); d > 2*bootstrapDNSRequestTimeout {
		t.Errorf("resolveBootstrapDNS took %v, want about %v", d, bootstrapDNSRequestTimeout)
	}
}

// TestBootstrapDNSLoopback runs peers on distinct loopback IPs sharing one port, as the
// records of a real name would, through the default client.
func TestBootstrapDNSLoopback(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	var lns []net.Listener
	for attempt := 0; len(lns) < len(ips) && attempt < 10; attempt++ {
		for _, l := range lns {
			l.Close()
		}
		lns = lns[:0]
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, first)
		port := first.Addr().(*net.TCPAddr).Port
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				if errors.Is(err, syscall.EADDRNOTAVAIL) {
					first.Close()
					t.Skipf("cannot listen on %s (only 127.0.0.1 is configured here): %v", ip, err)
				}
				break
			}
			lns = append(lns, l)
		}
	}
	if len(lns) < len(ips) {
		t.Fatalf("could not bind %v on one port", ips)
	}
	port := lns[0].Addr().(*net.TCPAddr).Port
	self := testPeerID(t, 0)
	var want []string
	for i, l := range lns {
		id := testPeerID(t, i)
		body := statusBody(t, id, tcpAddr(ips[i], 5082, id))
		srv := httptest.NewUnstartedServer(serveBody(body))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		if id != self {
			want = append(want, tcpAddr(ips[i], 5082, id))
		}
	}
	target := "shoal.test:" + strconv.Itoa(port)
	got, err := resolveBootstrapDNS(t.Context(), target, fakeResolver(t, "shoal.test", ips...), nil, self)
	if err != nil {
		t.Fatalf("resolveBootstrapDNS: %v", err)
	}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("resolveBootstrapDNS = %q, want %q", got, want)
	}
}

func TestBootstrapDNSTarget(t *testing.T) {
	t.Parallel()
	good := []struct {
		target string
		host   string
		port   int
	}{
		{"shoal", "shoal", 5081},
		{"shoal.shoal-system.svc.cluster.local.", "shoal.shoal-system.svc.cluster.local.", 5081},
		{"shoal:6000", "shoal", 6000},
		{"shoal:1", "shoal", 1},
		{"shoal:65535", "shoal", 65535},
		{"_srv.a-b.example", "_srv.a-b.example", 5081},
		{"10.0.0.1:5081", "10.0.0.1", 5081},
		{"[fd00::1]:5081", "fd00::1", 5081},
		{strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example", 5081},
	}
	for _, tt := range good {
		host, port, err := splitBootstrapTarget(tt.target)
		if err != nil || host != tt.host || port != tt.port {
			t.Errorf("splitBootstrapTarget(%q) = %q, %d, %v, want %q, %d", tt.target, host, port, err, tt.host, tt.port)
		}
	}
	bad := []string{
		"", ":5081", "shoal:", "shoal:0", "shoal:65536", "shoal:99999999999", "shoal:-1", "shoal:+80",
		"shoal:http", "shoal:5081:1", "fd00::1", "-shoal", "shoal-", "shoal-.example", "a..b", ".",
		"..", "with space", "shoal/status", "http://shoal", "user@shoal", "shoal?x", "shoal%00",
		"shoal\n", "shöal", strings.Repeat("a", 64) + ".example",
		strings.Repeat("abcdefghi.", 26) + "x",
	}
	for _, target := range bad {
		resolver := func(ctx context.Context, host string) ([]string, error) {
			t.Errorf("resolveBootstrapDNS(%q) looked up %q", target, host)
			return nil, errors.New("unexpected")
		}
		if got, err := resolveBootstrapDNS(t.Context(), target, resolver, nil, ""); err == nil {
			t.Errorf("resolveBootstrapDNS(%q) = %q, want error", target, got)
		}
	}
}

func TestBootstrapDNSResolver(t *testing.T) {
	t.Parallel()
	errDNS := &net.DNSError{Err: "server misbehaving", Name: "shoal", IsTemporary: true}
	tests := []struct {
		name     string
		resolver lookupHost
		want     string
		is       error
	}{
		{
			name:     "error",
			resolver: func(context.Context, string) ([]string, error) { return nil, errDNS },
			want:     "look up shoal: lookup shoal: server misbehaving",
			is:       errDNS,
		},
		{
			name:     "no records",
			resolver: func(context.Context, string) ([]string, error) { return nil, nil },
			want:     "shoal has no usable A/AAAA record (0 records)",
			is:       errNoBootstrapPeers,
		},
		{
			name: "unusable records",
			resolver: func(context.Context, string) ([]string, error) {
				return []string{"0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "fe80::1%eth0", "169.254.0.1", "not-an-ip", ""}, nil
			},
			want: "(8 records)",
			is:   errNoBootstrapPeers,
		},
		{
			name: "lookup bounded in time",
			resolver: func(ctx context.Context, _ string) ([]string, error) {
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > bootstrapDNSLookupTimeout {
					return nil, errors.New("lookup not bounded")
				}
				return nil, errDNS
			},
			want: "server misbehaving",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolveBootstrapDNS(t.Context(), "shoal", tt.resolver, nil, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("resolveBootstrapDNS = %q, %v, want error containing %q", got, err, tt.want)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		f := newTestFleet()
		a := testPeerID(t, 1)
		f.peer(t, "10.0.0.1", 5081, serveBody(statusBody(t, a, tcpAddr("10.0.0.1", 5082, a))))
		got, err := resolveBootstrapDNS(ctx, "shoal", fakeResolver(t, "shoal", "10.0.0.1"), f.client(t), "")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("resolveBootstrapDNS = %q, %v, want context.Canceled", got, err)
		}
	})
}

func TestBootstrapDNSPeerAddrs(t *testing.T) {
	t.Parallel()
	a, b := testPeerID(t, 1), testPeerID(t, 2)
	many := make([]string, 0, 20)
	for i := range 20 {
		many = append(many, tcpAddr("10.0.3."+strconv.Itoa(i+1), 5082, a))
	}
	tests := []struct {
		name    string
		asked   string
		addrs   []string
		wantID  string
		want    []string
		wantErr bool
	}{
		{
			name:   "asked IP first",
			asked:  "10.0.0.1",
			addrs:  []string{tcpAddr("192.168.1.1", 5082, a), tcpAddr("10.0.0.1", 5082, a), "/ip4/10.0.0.1/udp/5082/quic-v1/p2p/" + a},
			wantID: a,
			want:   []string{tcpAddr("10.0.0.1", 5082, a), "/ip4/10.0.0.1/udp/5082/quic-v1/p2p/" + a, tcpAddr("192.168.1.1", 5082, a)},
		},
		{
			name:   "loopback dropped when asked elsewhere",
			asked:  "10.0.0.1",
			addrs:  []string{tcpAddr("127.0.0.1", 5082, a), tcpAddr("::1", 5082, a), tcpAddr("10.0.0.1", 5082, a)},
			wantID: a,
			want:   []string{tcpAddr("10.0.0.1", 5082, a)},
		},
		{
			name:   "loopback kept when asked on loopback",
			asked:  "127.0.0.5",
			addrs:  []string{tcpAddr("127.0.0.1", 5082, a), tcpAddr("10.0.0.1", 5082, a)},
			wantID: a,
			want:   []string{tcpAddr("127.0.0.1", 5082, a), tcpAddr("10.0.0.1", 5082, a)},
		},
		{
			name:   "unspecified, link-local and multicast dropped",
			asked:  "127.0.0.1",
			addrs:  []string{tcpAddr("0.0.0.0", 5082, a), tcpAddr("::", 5082, a), tcpAddr("fe80::1", 5082, a), tcpAddr("169.254.0.1", 5082, a), tcpAddr("239.1.1.1", 5082, a)},
			wantID: a,
		},
		{
			name:   "IPv4-mapped asked IP",
			asked:  "::ffff:10.0.0.1",
			addrs:  []string{tcpAddr("192.168.1.1", 5082, a), tcpAddr("10.0.0.1", 5082, a)},
			wantID: a,
			want:   []string{tcpAddr("10.0.0.1", 5082, a), tcpAddr("192.168.1.1", 5082, a)},
		},
		{
			name:   "capped",
			asked:  "10.0.3.20",
			addrs:  many,
			wantID: a,
			want:   append([]string{many[19]}, many[:bootstrapDNSMaxPeerAddrs-1]...),
		},
		{
			name:    "several peers",
			asked:   "10.0.0.1",
			addrs:   []string{tcpAddr("10.0.0.1", 5082, a), tcpAddr("10.0.0.1", 5082, b)},
			wantErr: true,
		},
		{name: "none", asked: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, got, err := peerAddrs(netip.MustParseAddr(tt.asked), tt.addrs)
			if (err != nil) != tt.wantErr || id != tt.wantID || !slices.Equal(got, tt.want) {
				t.Errorf("peerAddrs(%s, %q) = %q, %q, %v, want %q, %q, error %t", tt.asked, tt.addrs, id, got, err, tt.wantID, tt.want, tt.wantErr)
			}
		})
	}

	// p2p's TestParseDialAddr checks p2p.CanonicalPeerID.
}

// FuzzBootstrapDNSStatus feeds arbitrary /status bodies through the decoding and the
// filtering: whatever comes out must be a dialable /p2p/ multiaddr of the one peer named.
func FuzzBootstrapDNSStatus(f *testing.F) {
	a := testPeerID(f, 1)
	f.Add("10.0.0.1", statusBody(f, a, tcpAddr("10.0.0.1", 5082, a), tcpAddr("127.0.0.1", 5082, a)))
	f.Add("127.0.0.1", []byte(`{"addrs":["/ip6/::1/udp/1/quic-v1/p2p/`+a+`","/ip4/1.2.3.4/tcp/1"]}`))
	f.Add("fd00::1", []byte(`{"addrs":null} `))
	f.Add("10.0.0.1", []byte(`{"addrs":["/ip4/10.0.0.1/tcp/1/p2p/`+a+`/p2p-circuit/p2p/`+a+`"]}{}`))
	f.Add("10.0.0.1", []byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, asked string, body []byte) {
		ip, err := netip.ParseAddr(asked)
		if err != nil {
			return
		}
		addrs, err := decodeStatusAddrs(body)
		if err != nil {
			return
		}
		id, got, err := peerAddrs(ip, addrs)
		if err != nil {
			return
		}
		if len(got) > bootstrapDNSMaxPeerAddrs {
			t.Errorf("peerAddrs kept %d addrs, want at most %d", len(got), bootstrapDNSMaxPeerAddrs)
		}
		for _, s := range got {
			_, pid, _, ok := p2p.ParseDialAddr(s)
			if !ok || pid != id {
				t.Errorf("peerAddrs kept %q, not an address of %s", s, id)
			}
		}
	})
}
