package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

const loopbackAddr = "/ip4/127.0.0.1/tcp/0"

// newTestHost starts a host on loopback TCP and closes it when the test ends.
func newTestHost(t testing.TB, o HostOptions) host.Host {
	t.Helper()
	if o.ListenAddrs == nil {
		o.ListenAddrs = []string{loopbackAddr}
	}
	h, err := NewHost(o)
	if err != nil {
		t.Fatalf("NewHost(%+v) = %v", o, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// addrInfo returns what a peer needs to dial h, going through Addrs as an
// operator would.
func addrInfo(t testing.TB, h host.Host) peer.AddrInfo {
	t.Helper()
	addrs := Addrs(h)
	if len(addrs) == 0 {
		t.Fatalf("Addrs(%s) is empty", h.ID())
	}
	a, err := ma.NewMultiaddr(addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		t.Fatal(err)
	}
	return *ai
}

func TestIdentityPersists(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "identity.key")
	h1, err := NewHost(HostOptions{ListenAddrs: []string{loopbackAddr}, IdentityPath: path})
	if err != nil {
		t.Fatalf("NewHost = %v", err)
	}
	id1 := h1.ID()
	h1.Close()

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("identity file not created: %v", err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("identity file mode = %v, want 0600", mode)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newTestHost(t, HostOptions{IdentityPath: path})
	if h2.ID() != id1 {
		t.Errorf("second NewHost ID = %s, want %s", h2.ID(), id1)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("identity file changed on reuse")
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("identity dir has %d entries, want only the key", len(entries))
	}

	other := newTestHost(t, HostOptions{})
	if other.ID() == id1 {
		t.Error("host without IdentityPath reused a persisted identity")
	}
}

func TestIdentityInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content []byte
	}{
		{name: "garbage", content: []byte("not a key\n")},
		{name: "empty", content: []byte{}},
		{name: "truncated", content: []byte{0x08, 0x01, 0x12, 0x40, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "identity.key")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			h, err := NewHost(HostOptions{ListenAddrs: []string{loopbackAddr}, IdentityPath: path})
			if !errors.Is(err, ErrInvalidIdentity) {
				if h != nil {
					h.Close()
				}
				t.Fatalf("NewHost with %s identity = %v, want %v", tt.name, err, ErrInvalidIdentity)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, tt.content) {
				t.Errorf("identity file after error = %q, %v, want it untouched", got, err)
			}
		})
	}
}

func TestNewHostInvalidOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    HostOptions
	}{
		{name: "bad listen addr", o: HostOptions{ListenAddrs: []string{"127.0.0.1:0"}}},
		{name: "short psk", o: HostOptions{ListenAddrs: []string{loopbackAddr}, PSK: make([]byte, 16)}},
		{name: "quic with a psk", o: HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, PSK: make([]byte, 32)}},
		{name: "udp without quic", o: HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/udp/0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := NewHost(tt.o)
			if err == nil {
				h.Close()
				t.Fatalf("NewHost(%+v) = nil error, want an error", tt.o)
			}
		})
	}
}

func TestHostsConnect(t *testing.T) {
	t.Parallel()
	pskA := randomPSK(t)
	pskB := randomPSK(t)
	tests := []struct {
		name        string
		a, b        []byte
		wantConnect bool
	}{
		{name: "public", wantConnect: true},
		{name: "same psk", a: pskA, b: pskA, wantConnect: true},
		{name: "different psk", a: pskA, b: pskB},
		{name: "psk and public", a: pskA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newTestHost(t, HostOptions{PSK: tt.a})
			b := newTestHost(t, HostOptions{PSK: tt.b})
			// A mismatched key garbles the handshake; depending on the
			// bytes that either fails at once or stalls until the deadline,
			// so the failing cases get a short one.
			timeout := time.Second
			if tt.wantConnect {
				timeout = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			err := b.Connect(ctx, addrInfo(t, a))
			if tt.wantConnect && err != nil {
				t.Fatalf("Connect = %v, want nil", err)
			}
			if !tt.wantConnect && err == nil {
				t.Fatal("Connect = nil, want an error")
			}
			if tt.wantConnect {
				s, err := b.NewStream(ctx, a.ID(), "/ipfs/id/1.0.0")
				if err != nil {
					t.Fatalf("NewStream = %v", err)
				}
				s.Close()
			}
		})
	}
}

func randomPSK(t *testing.T) []byte {
	t.Helper()
	psk := make([]byte, 32)
	if _, err := rand.Read(psk); err != nil {
		t.Fatal(err)
	}
	return psk
}

func TestLoadPSK(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{0xab}, 32)
	tests := []struct {
		name    string
		content string
		want    []byte
		wantErr bool
	}{
		{name: "base16", content: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n", want: key},
		{name: "no trailing newline", content: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key), want: key},
		{name: "wrong header", content: "/key/swarm/psk/2.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n", wantErr: true},
		{name: "unknown encoding", content: "/key/swarm/psk/1.0.0/\n/rot13/\n" + hex.EncodeToString(key) + "\n", wantErr: true},
		{name: "short key", content: "/key/swarm/psk/1.0.0/\n/base16/\nabcd\n", wantErr: true},
		{name: "bad hex", content: "/key/swarm/psk/1.0.0/\n/base16/\nzz\n", wantErr: true},
		{name: "empty", content: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "swarm.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadPSK(path)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("LoadPSK(%q) = %x, want an error", tt.content, got)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("LoadPSK(%q) = %x, %v, want %x", tt.content, got, err, tt.want)
			}
		})
	}
	if _, err := LoadPSK(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadPSK(missing file) = nil error, want an error")
	}
}

func TestAddrs(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, HostOptions{})
	addrs := Addrs(h)
	if len(addrs) == 0 {
		t.Fatal("Addrs of a loopback-only host is empty, want the loopback address")
	}
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatalf("Addrs() has %q: %v", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil || ai.ID != h.ID() {
			t.Errorf("Addrs() has %q, want it to end in /p2p/%s (%v)", s, h.ID(), err)
		}
	}

	// On every interface the unspecified address never shows, and loopback
	// only when the machine has nothing else.
	all := newTestHost(t, HostOptions{ListenAddrs: []string{DefaultListenAddr}})
	for _, s := range Addrs(all) {
		if bytes.Contains([]byte(s), []byte("/0.0.0.0/")) {
			t.Errorf("Addrs() has unspecified %q", s)
		}
	}
}
