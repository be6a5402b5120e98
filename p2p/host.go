package p2p

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// DefaultListenAddr is where a host listens when HostOptions.ListenAddrs is
// empty: every interface, a port the kernel picks.
const DefaultListenAddr = "/ip4/0.0.0.0/tcp/0"

// Resource and connection limits of every host. They are fixed rather than
// scaled to the machine so that a node behaves the same on any host size;
// they are sized for a fleet node that talks to a few hundred peers.
const (
	// resourceMemory is the memory the libp2p resource manager lets all
	// streams and connections together reserve (muxer windows, buffers).
	// Chunk payloads are streamed, not reserved, so this bounds overhead only.
	resourceMemory = 1 << 30
	// resourceFDs is the number of file descriptors libp2p may hold.
	resourceFDs = 4096
	// connLow and connHigh are the connection manager's watermarks: above
	// connHigh connections it trims back to connLow, sparing those opened
	// within connGrace.
	connLow   = 200
	connHigh  = 400
	connGrace = time.Minute
)

// ErrInvalidIdentity reports an identity key file that exists but does not
// hold an Ed25519 private key. Such a file is never overwritten.
var ErrInvalidIdentity = errors.New("invalid identity key file")

// ErrInvalidPSK reports a private network key that is not 32 bytes or not in
// the /key/swarm/psk/1.0.0/ file format.
var ErrInvalidPSK = errors.New("invalid private network key")

// HostOptions configure NewHost. The zero value is a usable host with a fresh
// identity on DefaultListenAddr.
type HostOptions struct {
	// ListenAddrs are multiaddrs to listen on: TCP (/ip4/…/tcp/…), and QUIC
	// (/ip4/…/udp/…/quic-v1) when no PSK is set; libp2p's QUIC has no
	// private-network support.
	// Empty means DefaultListenAddr.
	ListenAddrs []string
	// IdentityPath is a file holding the host's Ed25519 private key (libp2p
	// protobuf encoding). It is created with mode 0600 if absent and reused
	// after, so the peer ID survives restarts. Empty means a fresh identity.
	IdentityPath string
	// PSK is an optional 32-byte private network key: hosts only talk to
	// hosts with the same key. See LoadPSK.
	PSK []byte
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
}

// NewHost builds a libp2p host for a shoal node: TCP, TLS preferred with
// Noise as fallback, yamux, a resource manager and a connection manager with
// the fixed limits above. QUIC (its own encryption and streams) is there too,
// except on a private network: libp2p's QUIC cannot carry a PSK. Relaying is
// disabled: nodes of a fleet reach each other directly.
func NewHost(o HostOptions) (host.Host, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := o.ListenAddrs
	if len(listen) == 0 {
		listen = []string{DefaultListenAddr}
	}
	for _, s := range listen {
		if err := checkListenAddr(s, o.PSK != nil); err != nil {
			return nil, err
		}
	}

	var key crypto.PrivKey
	var err error
	if o.IdentityPath == "" {
		key, _, err = crypto.GenerateEd25519Key(nil)
	} else {
		key, err = loadIdentity(o.IdentityPath)
	}
	if err != nil {
		return nil, err
	}

	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(resourceMemory, resourceFDs)))
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}

	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		// libp2p would otherwise register into the global Prometheus
		// registry; shoal's metrics hang off an injected registerer.
		libp2p.DisableMetrics(),
		libp2p.UserAgent("shoal"),
	}
	switch {
	case o.PSK == nil:
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport))
	case len(o.PSK) != 32:
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("host: %w: %d bytes, want 32", ErrInvalidPSK, len(o.PSK))
	default:
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(bytes.Clone(o.PSK))))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p.New closes what it was given only on some paths; closing
		// twice is harmless for both.
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("host: %w", err)
	}
	log.Info("p2p host started", "peer", h.ID().String(), "addrs", Addrs(h), "private", o.PSK != nil)
	return h, nil
}

// checkListenAddr accepts plain TCP multiaddrs, and QUIC ones off a private
// network (private says a PSK is set). Checking up front keeps
// an unsupported address from reaching libp2p, which in v0.49 leaves the
// swarm's goroutines running when it fails to listen.
func checkListenAddr(s string, private bool) error {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", s, err)
	}
	if isQUIC(a) {
		if private {
			return fmt.Errorf("listen address %q: quic cannot carry a private network key; use tcp", s)
		}
		return nil
	}
	na, err := manet.ToNetAddr(a)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", s, err)
	}
	if _, ok := na.(*net.TCPAddr); !ok {
		return fmt.Errorf("listen address %q: only tcp and udp/…/quic-v1 are supported", s)
	}
	return nil
}

// isQUIC reports whether a is exactly /ip4|ip6/…/udp/…/quic-v1.
func isQUIC(a ma.Multiaddr) bool {
	ps := a.Protocols()
	return len(ps) == 3 && (ps[0].Code == ma.P_IP4 || ps[0].Code == ma.P_IP6) &&
		ps[1].Code == ma.P_UDP && ps[2].Code == ma.P_QUIC_V1
}

// loadIdentity reads the Ed25519 key at path, creating it if the file does
// not exist. A file that exists but cannot be parsed is an error and is left
// alone: silently replacing it would change the node's peer ID.
func loadIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createIdentity(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity %s: %w", path, err)
	}
	return parseIdentity(path, b)
}

func parseIdentity(path string, b []byte) (crypto.PrivKey, error) {
	key, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w: %w", path, ErrInvalidIdentity, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity %s: %w: key type %s, want Ed25519", path, ErrInvalidIdentity, key.Type())
	}
	return key, nil
}

// createIdentity writes a fresh key to a temporary file and links it into
// place, so that a crash never leaves a half-written key at path and two
// processes starting at once agree on one key.
func createIdentity(path string) (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal identity: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create identity %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return nil, fmt.Errorf("create identity %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write identity %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write identity %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write identity %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process won the race; use its key.
			return loadIdentity(path)
		}
		return nil, fmt.Errorf("create identity %s: %w", path, err)
	}
	return key, nil
}

// LoadPSK reads a private network key in the standard format shared with
// IPFS (three lines: "/key/swarm/psk/1.0.0/", an encoding such as
// "/base16/", and the 32-byte key in that encoding).
func LoadPSK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load psk: %w", err)
	}
	defer f.Close()
	// A key file is well under a kilobyte; the limit guards against being
	// pointed at something else.
	psk, err := pnet.DecodeV1PSK(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("load psk %s: %w: %w", path, ErrInvalidPSK, err)
	}
	if len(psk) != 32 {
		return nil, fmt.Errorf("load psk %s: %w: %d bytes, want 32", path, ErrInvalidPSK, len(psk))
	}
	return psk, nil
}

// Addrs returns the addresses other nodes can bootstrap from, as full
// multiaddrs ending in /p2p/<id>. Unspecified and link-local addresses are
// dropped; loopback addresses are kept only when there is nothing else, so a
// node on a laptop or in a test still reports something usable.
func Addrs(h host.Host) []string {
	var public, loopback []ma.Multiaddr
	for _, a := range h.Addrs() {
		switch {
		case manet.IsIPUnspecified(a), manet.IsIP6LinkLocal(a):
		case manet.IsIPLoopback(a):
			loopback = append(loopback, a)
		default:
			public = append(public, a)
		}
	}
	if len(public) == 0 {
		public = loopback
	}
	full, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: public})
	if err != nil {
		return nil
	}
	out := make([]string, len(full))
	for i, a := range full {
		out[i] = a.String()
	}
	return out
}
