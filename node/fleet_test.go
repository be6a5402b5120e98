package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/p2p"
)

func status(t *testing.T, n *Node) Status {
	t.Helper()
	resp, body := get(t, "http://"+n.AdminAddr()+"/status", nil)
	var st Status
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/status = %d %s (%v)", resp.StatusCode, body, err)
	}
	return st
}

// eventually polls check until it returns true or the deadline passes.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyz reports whether n's /readyz answers 200.
func readyz(t *testing.T, n *Node) bool {
	t.Helper()
	resp, _ := get(t, "http://"+n.AdminAddr()+"/readyz", nil)
	return resp.StatusCode == http.StatusOK
}

// pullFromPeer pulls team/app:v1, which a peer holds, through n: want blob bytes, none of
// them from the origin o.
func pullFromPeer(t *testing.T, o *countingOrigin, n *Node, want int64) {
	t.Helper()
	o.blobBytes.Store(0)
	if got := pullImage(t, n, "team/app", "v1", ""); got != want {
		t.Fatalf("pulled %d blob bytes from a peer, want %d", got, want)
	}
	if got := o.blobBytes.Load(); got != 0 {
		t.Errorf("origin sent %d blob bytes for an image a peer held, want 0", got)
	}
}

// TestFleetDiscovery: a node bootstraps from another's /status addrs, and finds through the
// DHT the blobs the other pulled.
func TestFleetDiscovery(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	a := startNode(t, Config{Origin: o.URL, P2PListen: listen})
	stA := status(t, a)
	if stA.PeerID == "" || len(stA.Addrs) == 0 || !strings.HasSuffix(stA.Addrs[0], "/p2p/"+stA.PeerID) {
		t.Fatalf("/status of the first node = %+v, want a peer ID and addrs ending in /p2p/<id>", stA)
	}
	b := startNode(t, Config{Origin: o.URL, P2PListen: listen, Bootstrap: stA.Addrs})
	eventually(t, "the second node to join", func() bool { return readyz(t, b) })
	if st := status(t, b); !st.Joined || st.Peers < 1 {
		t.Errorf("/status of the joined node = %+v, want joined with a peer", st)
	}

	pullImage(t, a, "team/app", "v1", "")
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	d := digest.Digest(ld.String())
	eventually(t, "the second node to find the first as a holder", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		peers, err := b.fleet.FindProviders(ctx, d, false)
		return err == nil && slices.Contains(peers, stA.PeerID)
	})
	_, metrics := get(t, "http://"+b.AdminAddr()+"/metrics", nil)
	for _, want := range []string{`shoal_dht_find_duration_seconds_count{result="found"}`, "shoal_p2p_peers 1", `shoal_dht_walks_total{kind="closest"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics of the second node lacks %s", want)
		}
	}
}

// newError returns New's error for cfg given a data directory, an origin and a registry
// address; a node it did build is closed.
func newError(t *testing.T, cfg Config) error {
	cfg.DataDir = t.TempDir()
	cfg.Origin = "http://127.0.0.1:9"
	cfg.RegistryAddr = "127.0.0.1:0"
	n, err := New(cfg)
	if err == nil {
		n.closeAll()
	}
	return err
}

func TestFleetConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badPSK := filepath.Join(dir, "psk")
	if err := os.WriteFile(badPSK, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bootstrap without listen", Config{Bootstrap: []string{"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}}, "no p2p listen address"},
		{"bad psk", Config{P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}, PSK: badPSK}, "private network key"},
		{"bad listen", Config{P2PListen: []string{"/ip4/127.0.0.1/udp/0"}}, "p2p"},
		{"bad bootstrap", Config{P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []string{"nonsense"}}, "p2p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := newError(t, tt.cfg)
			if err == nil {
				t.Fatalf("New(%s) = nil error, want one containing %q", tt.name, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%s) = %v, want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
}

// emptyStore is a chunk store that holds nothing, for a client-only peer.
type emptyStore struct{}

func (emptyStore) Have(digest.Digest, bool) (chunk.Have, bool) { return chunk.Have{}, false }
func (emptyStore) ReadChunk(context.Context, digest.Digest, int, io.Writer) (int64, error) {
	return 0, chunk.ErrNotHeld
}

// TestServesChunksToPeers: a peer asks a node what it has of a blob it pulled and fetches
// every chunk; the chunks reassemble into the blob.
func TestServesChunksToPeers(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	a := startNode(t, Config{Origin: o.URL, P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}, ChunkSize: 64 << 10})
	pullImage(t, a, "team/app", "v1", "")
	st := status(t, a)

	peer, err := p2p.Start(p2p.NetworkOptions{
		Host:     p2p.HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}},
		Router:   p2p.RouterOptions{Bootstrap: st.Addrs},
		Exchange: p2p.ExchangeOptions{Store: emptyStore{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := peer.Router.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	d := digest.Digest(ld.String())
	have, err := peer.Exchange.Have(ctx, st.PeerID, d)
	if err != nil {
		t.Fatalf("Have(%s) = %v", d, err)
	}
	if have.ChunkSize != 64<<10 || int64(len(have.Chunks)) != chunk.Count(have.Size, have.ChunkSize) || slices.Contains(have.Chunks, false) {
		t.Fatalf("Have(%s) = size %d chunk size %d chunks %v, want every chunk", d, have.Size, have.ChunkSize, have.Chunks)
	}
	var blob bytes.Buffer
	for i := range have.Chunks {
		if _, err := peer.Exchange.GetChunk(ctx, st.PeerID, d, i, &blob); err != nil {
			t.Fatalf("GetChunk(%d) = %v", i, err)
		}
	}
	if got := digest.FromBytes(blob.Bytes()); got != d {
		t.Errorf("reassembled chunks have digest %s, want %s", got, d)
	}
	if _, err := peer.Exchange.Have(ctx, st.PeerID, digest.FromString("nobody has this")); !errors.Is(err, chunk.ErrNotHeld) {
		t.Errorf("Have(unknown) = %v, want ErrNotHeld", err)
	}
	if _, err := peer.Exchange.GetChunk(ctx, st.PeerID, d, len(have.Chunks), io.Discard); err == nil {
		t.Errorf("GetChunk past the end = nil error")
	}
	_, metrics := get(t, "http://"+a.AdminAddr()+"/metrics", nil)
	if want := fmt.Sprintf("shoal_chunk_uploaded_bytes_total %d", blob.Len()); !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// TestFleetBootstrapDNS: the first node behind a name finds only itself and starts alone,
// ready; the next learns the first's addrs from its /status through the name and joins.
func TestFleetBootstrapDNS(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	a := startNode(t, Config{Origin: o.URL, P2PListen: listen, BootstrapDNS: "localhost:1"})
	// Port 1 answers nothing: every record failed, which is not "alone", so not ready.
	time.Sleep(300 * time.Millisecond)
	if readyz(t, a) {
		t.Errorf("/readyz of a node whose bootstrap name answers nothing = 200, want 503")
	}

	// A node alone behind its name: "localhost" resolves to itself.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	_, port, _ := strings.Cut(admin, ":")
	first := startNode(t, Config{Origin: o.URL, P2PListen: listen, AdminAddr: admin, BootstrapDNS: "localhost:" + port})
	eventually(t, "the first node to start alone", func() bool { return readyz(t, first) })
	b := startNode(t, Config{Origin: o.URL, P2PListen: listen, BootstrapDNS: "localhost:" + port})
	eventually(t, "the second node to join through DNS", func() bool { return readyz(t, b) })
	if st := status(t, b); !st.Joined || st.Peers < 1 {
		t.Errorf("/status of the node joined through DNS = %+v, want joined with a peer", st)
	}
	eventually(t, "the first node to see the second", func() bool { return status(t, first).Peers >= 1 })
}

// TestFleetPullFromPeer: over real libp2p TCP, a node pulls an image another node holds
// without any blob byte from the origin, and with the origin down still serves it by digest,
// manifest included, from its peer.
func TestFleetPullFromPeer(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	img := o.push(t, "team/app:v1")
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	a := startNode(t, Config{Origin: o.URL, P2PListen: listen})
	want := pullImage(t, a, "team/app", "v1", "")
	b := startNode(t, Config{Origin: o.URL, P2PListen: listen, Bootstrap: status(t, a).Addrs})
	c := startNode(t, Config{Origin: o.URL, P2PListen: listen, Bootstrap: status(t, a).Addrs})
	for _, n := range []*Node{b, c} {
		eventually(t, "a node to join", func() bool { return readyz(t, n) })
	}
	eventually(t, "the holder's announcements to land", func() bool { return status(t, a).Peers >= 2 })

	pullFromPeer(t, o, b, want)
	_, metrics := get(t, "http://"+b.AdminAddr()+"/metrics", nil)
	if !strings.Contains(string(metrics), `shoal_blob_fetched_bytes_total{source="peer"}`) ||
		strings.Contains(string(metrics), `shoal_blob_fetched_bytes_total{source="peer"} 0`+"\n") {
		t.Errorf("b's metrics show no peer bytes")
	}

	// Origin down: c has never seen the image, its peers have. By digest it is served.
	o.down.Store(true)
	md, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got := pullImage(t, c, "team/app", md.String(), ""); got != want {
		t.Fatalf("pulled %d blob bytes through c with the origin down, want %d", got, want)
	}
}
