package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/shoal-dev/shoal/p2p"
)

// probeReport is what probeDHT measured: raw latencies, summarised by runProbe.
type probeReport struct {
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

// probeDHT measures DHT lookups in a fleet of nodes real libp2p hosts on loopback TCP, all in
// this process, built with shoal's own p2p package as a node builds them (p2p.Start: the host
// with TLS, yamux and the resource manager, the kad-dht router with the node's defaults). The
// nodes join through one seed; one node provides keys random digests; every other node looks
// each one up, one lookup at a time, with FindProviders (its first lookup of the key, so never
// a cache hit) and then with FindProvidersFresh; then it looks up misses digests nobody
// provides.
func probeDHT(ctx context.Context, nodes, keys, misses int) (probeReport, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()

	fleet := make([]*p2p.Network, 0, nodes)
	defer func() {
		for _, n := range fleet {
			n.Close()
		}
	}()
	rep := probeReport{Nodes: nodes, Keys: keys, MissKeys: misses}

	// The seed first, then every other node bootstrapping from it, one after the other, as
	// a fleet's nodes start given one seed address.
	start := time.Now()
	for i := range nodes {
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
			return rep, fmt.Errorf("start node %d: %w", i, err)
		}
		fleet = append(fleet, n)
		if i == 0 {
			rep.Seed = n.Addrs()
			continue
		}
		if err := n.Router.Bootstrap(ctx); err != nil {
			return rep, fmt.Errorf("node %d: %w", i, err)
		}
	}
	// Each node bootstraps once more, now that all are up: its routing-table refresh learns
	// of the nodes that joined after it, as the periodic refresh would within a minute.
	for i, n := range fleet[1:] {
		if err := n.Router.Bootstrap(ctx); err != nil {
			return rep, fmt.Errorf("node %d: second bootstrap: %w", i+1, err)
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
	provided := randomDigests(keys)
	start = time.Now()
	for _, d := range provided {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		err := provider.Router.Provide(pctx, d)
		pcancel()
		if err != nil {
			return rep, err
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
				return rep, ctx.Err()
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
	for _, d := range randomDigests(misses) {
		for _, n := range fleet[:len(fleet)-1] {
			if ctx.Err() != nil {
				return rep, ctx.Err()
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
	return rep, nil
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

// dhtResult is the DHT scenario's summary, as reported.
type dhtResult struct {
	Nodes          int     `json:"nodes"`
	Keys           int     `json:"keys"`
	MissKeys       int     `json:"miss_keys_per_node"`
	JoinSeconds    float64 `json:"join_seconds"`
	ProvideSeconds float64 `json:"provide_seconds"`
	TableMin       int     `json:"routing_table_min"`
	TableMax       int     `json:"routing_table_max"`
	// Fresh are FindProvidersFresh lookups that found the provider: the measure. First are
	// FindProviders lookups just before them, each the node's first of that key (so not
	// cached either). Miss are FindProvidersFresh lookups of keys nobody provides.
	Fresh      stats  `json:"fresh"`
	First      stats  `json:"first"`
	Miss       stats  `json:"miss"`
	Lookups    int    `json:"provided_lookups"` // of provided keys, both kinds
	NotFound   int    `json:"not_found"`
	Errors     int    `json:"errors"`
	FalseHits  int    `json:"false_hits"`
	MissErrors int    `json:"miss_errors"`
	FirstErr   string `json:"first_err,omitempty"`
}

// runProbe runs probeDHT and summarises its latencies.
func runProbe(ctx context.Context, nodes, keys, misses int) (*dhtResult, error) {
	p, err := probeDHT(ctx, nodes, keys, misses)
	if err != nil {
		return nil, fmt.Errorf("dht probe: %w", err)
	}
	r := &dhtResult{
		Nodes: p.Nodes, Keys: p.Keys, MissKeys: p.MissKeys,
		JoinSeconds: p.JoinSeconds, ProvideSeconds: p.ProvideSeconds,
		Fresh: summarize(p.FreshNs), First: summarize(p.FirstNs), Miss: summarize(p.MissNs),
		Lookups:  2 * p.Keys * (p.Nodes - 1),
		NotFound: p.NotFound, Errors: p.Errors, FalseHits: p.FalseHits, MissErrors: p.MissErrors, FirstErr: p.FirstErr,
	}
	if len(p.RoutingTable) > 0 {
		r.TableMin, r.TableMax = slices.Min(p.RoutingTable), slices.Max(p.RoutingTable)
	}
	return r, nil
}

func (r *dhtResult) checks() []check {
	const scenario = "DHT"
	fleet := fmt.Sprintf("%d-node loopback fleet", r.Nodes)
	found := r.Lookups - r.NotFound - r.Errors
	cs := []check{
		{scenario, "lookup of a provided key (FindProvidersFresh), " + fleet,
			fmt.Sprintf("median %.2f ms, p90 %.2f ms, max %.2f ms (%d lookups)", r.Fresh.MedianMs, r.Fresh.P90Ms, r.Fresh.MaxMs, r.Fresh.N),
			fmt.Sprintf("median < %d ms", targetLookup.Milliseconds()),
			r.Fresh.N > 0 && r.Fresh.MedianMs < float64(targetLookup.Milliseconds())},
		{scenario, "lookups of provided keys that found the provider",
			fmt.Sprintf("%d of %d (errors %d)", found, r.Lookups, r.Errors),
			"all", found == r.Lookups},
	}
	if r.MissKeys > 0 {
		// The issue asks that a lookup finding nobody cost "milliseconds, not seconds".
		cs = append(cs, check{scenario, "lookup of a key nobody provides",
			fmt.Sprintf("median %.2f ms, p90 %.2f ms, max %.2f ms (%d lookups, %d errors, %d false hits)",
				r.Miss.MedianMs, r.Miss.P90Ms, r.Miss.MaxMs, r.Miss.N, r.MissErrors, r.FalseHits),
			"milliseconds, not seconds (median < 1 s)",
			r.Miss.N > 0 && r.Miss.MedianMs < 1000 && r.FalseHits == 0 && r.MissErrors == 0})
	}
	return cs
}
