// Command dhtprobe measures DHT lookups in a fleet of real libp2p hosts on loopback TCP, all
// in this process, built with shoal's own p2p package as a node builds them (p2p.Start: the
// host with TLS, yamux and the resource manager, the kad-dht router with the node's
// defaults). The nodes join through one seed; one node provides random digests; every
// other node looks each one up, one lookup at a time, with FindProviders (its first lookup of
// the key, so never a cache hit) and then with FindProvidersFresh; then it looks up digests
// nobody provides. It prints the raw latencies as JSON on stdout for bench-p2p.
//
// bench-p2p builds and runs it; see ../main.go.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
)

// Report is what the probe prints; bench-p2p decodes the same fields.
type Report struct {
	Nodes          int     `json:"nodes"`
	Keys           int     `json:"keys"`
	MissKeys       int     `json:"miss_keys"`
	JoinSeconds    float64 `json:"join_seconds"`
	ProvideSeconds float64 `json:"provide_seconds"`
	// RoutingTable is the size of every node's routing table once all joined.
	RoutingTable []int `json:"routing_table"`
	// FirstNs are FindProviders latencies (the node's first lookup of the key), FreshNs
	// FindProvidersFresh latencies, both of lookups that found the provider; MissNs are
	// FindProvidersFresh latencies of keys nobody provides. Nanoseconds.
	FirstNs []int64 `json:"first_ns"`
	FreshNs []int64 `json:"fresh_ns"`
	MissNs  []int64 `json:"miss_ns"`
	// NotFound counts lookups of provided keys that did not return the provider, Errors
	// those that failed; FalseHits counts lookups of keys nobody provides that returned
	// someone, MissErrors those that failed.
	NotFound   int      `json:"not_found"`
	Errors     int      `json:"errors"`
	FalseHits  int      `json:"false_hits"`
	MissErrors int      `json:"miss_errors"`
	FirstErr   string   `json:"first_err,omitempty"`
	Provider   string   `json:"provider"`
	Seed       []string `json:"seed"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhtprobe:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dhtprobe", flag.ContinueOnError)
	nodes := fs.Int("nodes", 20, "libp2p hosts in the fleet")
	keys := fs.Int("keys", 50, "random digests the provider announces; every other node looks up each")
	misses := fs.Int("misses", 5, "digests nobody provides that every other node looks up")
	timeout := fs.Duration("timeout", 4*time.Minute, "bound on the whole probe")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 2 || *nodes > 100 || *keys < 1 || *keys > 1000 || *misses < 0 || *misses > 100 {
		return errors.New("want 2-100 nodes, 1-1000 keys and 0-100 misses")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	fleet := make([]*p2p.Network, 0, *nodes)
	defer func() {
		for _, n := range fleet {
			n.Close()
		}
	}()
	rep := Report{Nodes: *nodes, Keys: *keys, MissKeys: *misses}

	// The seed first, then every other node bootstrapping from it, one after the other, as
	// a fleet's nodes start given one seed address.
	start := time.Now()
	for i := range *nodes {
		var boot []string
		if i > 0 {
			boot = rep.Seed
		}
		n, err := p2p.Start(p2p.NetworkOptions{
			Host:     p2p.HostOptions{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}},
			Router:   p2p.RouterOptions{Bootstrap: boot},
			Exchange: p2p.ExchangeOptions{Store: emptyStore{}},
		})
		if err != nil {
			return fmt.Errorf("start node %d: %w", i, err)
		}
		fleet = append(fleet, n)
		if i == 0 {
			rep.Seed = n.Addrs()
			continue
		}
		if err := n.Router.Bootstrap(ctx); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	// Each node bootstraps once more, now that all are up: its routing-table refresh learns
	// of the nodes that joined after it, as the periodic refresh would within a minute.
	for i, n := range fleet[1:] {
		if err := n.Router.Bootstrap(ctx); err != nil {
			return fmt.Errorf("node %d: second bootstrap: %w", i+1, err)
		}
	}
	rep.JoinSeconds = time.Since(start).Seconds()
	for _, n := range fleet {
		rep.RoutingTable = append(rep.RoutingTable, n.RoutingPeers())
	}

	// The provider is the last node to have joined, not the seed, so lookups do not all
	// end at the node everyone bootstrapped from.
	provider := fleet[len(fleet)-1]
	rep.Provider = provider.ID()
	provided := randomDigests(*keys)
	start = time.Now()
	for _, d := range provided {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		err := provider.Router.Provide(pctx, d)
		pcancel()
		if err != nil {
			return err
		}
	}
	rep.ProvideSeconds = time.Since(start).Seconds()

	note := func(count *int, err error) {
		*count++
		if rep.FirstErr == "" {
			rep.FirstErr = err.Error()
		}
	}
	// One lookup at a time across the whole fleet, so each measures a lookup rather than
	// the machine's two cores shared by many.
	for _, d := range provided {
		for _, n := range fleet[:len(fleet)-1] {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, fresh := range []bool{false, true} {
				t := time.Now()
				var peers []p2p.Peer
				var err error
				if fresh {
					peers, err = n.Router.FindProvidersFresh(ctx, d)
				} else {
					peers, err = n.Router.FindProviders(ctx, d)
				}
				took := time.Since(t).Nanoseconds()
				switch {
				case err != nil:
					note(&rep.Errors, err)
				case !holds(peers, rep.Provider):
					rep.NotFound++
				case fresh:
					rep.FreshNs = append(rep.FreshNs, took)
				default:
					rep.FirstNs = append(rep.FirstNs, took)
				}
			}
		}
	}
	for _, d := range randomDigests(*misses) {
		for _, n := range fleet[:len(fleet)-1] {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t := time.Now()
			peers, err := n.Router.FindProvidersFresh(ctx, d)
			took := time.Since(t).Nanoseconds()
			switch {
			case err != nil:
				note(&rep.MissErrors, err)
			case len(peers) > 0:
				rep.FalseHits++
			default:
				rep.MissNs = append(rep.MissNs, took)
			}
		}
	}
	enc := json.NewEncoder(stdout)
	return enc.Encode(rep)
}

func holds(peers []p2p.Peer, id string) bool {
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

func randomDigests(n int) []digest.Digest {
	ds := make([]digest.Digest, n)
	for i := range ds {
		var b [32]byte
		rand.Read(b[:])
		ds[i] = digest.FromBytes(b[:])
	}
	return ds
}

// emptyStore holds nothing: the probe measures lookups, not chunk exchange.
type emptyStore struct{}

func (emptyStore) Have(digest.Digest, bool) (p2p.Have, bool) { return p2p.Have{}, false }

func (emptyStore) ReadChunk(context.Context, digest.Digest, int, io.Writer) (int64, error) {
	return 0, p2p.ErrNotHeld
}
