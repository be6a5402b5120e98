// Command bench-p2p measures shoal nodes exchanging blobs with each other, with real
// `shoal node` processes and the real distribution registry, and reports each figure
// against a baseline or a limit taken in the same run:
//
//   - one peer: a blob (--size, 1 GiB) pulled through a fresh node whose only source is a
//     peer that holds it, against the same blob pulled straight from the origin registry
//     (target >= 0.6x). The fresh node's origin is the same registry behind a counting proxy,
//     and the run checks that the proxy sent it no blob byte, so the bytes provably came from
//     the peer. Runs alternate between the two; each peer run has a fresh node. It runs once
//     per --links kind: loopback, and a tc rate such as 1gbit, where the origin and the peer
//     each sit in a network namespace behind a veth pair shaped to that rate (needs root;
//     see link.go), so that both paths cross the same kind of link.
//   - four peers: a blob (--four-size, 512 MiB) held by four nodes each limited to
//     --upload-limit L, pulled through a fresh fifth node (target >= 3.2 L, that is 0.8 of the
//     four nodes' aggregate), with each holder's uploaded bytes to show how the load spread.
//   - DHT lookups: a fleet of 20 libp2p hosts built with shoal's p2p package in this process
//     (dht.go), one providing 50 random digests and every other looking each up with
//     FindProvidersFresh (target: median < 20 ms), plus lookups of digests nobody provides.
//
// Clients hash what they receive, as containerd does. Apart from the shaped one-peer variant
// everything listens on 127.0.0.1, so the nodes, the origin and the client share the
// machine's cores: the one-peer figures come with the CPU seconds each process spent per GB
// moved, which say where the time went.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

func main() { harness.Main("bench-p2p", run) }

// Targets from the peer-to-peer issue.
const (
	targetOnePeerRatio = 0.6
	targetFourPeers    = 3.2 // times the upload limit of one holder
	targetLookup       = 20 * time.Millisecond
	holders            = 4
)

// params are the run's settings, recorded with its results.
type params struct {
	OnePeerBlobBytes  int64  `json:"one_peer_blob_bytes"`
	FourPeerBlobBytes int64  `json:"four_peer_blob_bytes"`
	UploadLimit       int64  `json:"upload_limit_bytes_per_second"`
	ChunkSize         int64  `json:"chunk_size_bytes,omitempty"` // 0: the node's default
	Runs              int    `json:"runs"`
	DHTNodes          int    `json:"dht_nodes"`
	DHTKeys           int    `json:"dht_keys"`
	DHTMisses         int    `json:"dht_miss_keys_per_node"`
	Scenarios         string `json:"scenarios"`
	OnePeerLinks      string `json:"one_peer_links"`
	ClientHash        bool   `json:"client_hash"`
}

type report struct {
	Date      string          `json:"date"`
	Machine   harness.Machine `json:"machine"`
	Params    params          `json:"parameters"`
	OnePeer   []*onePeer      `json:"one_peer,omitempty"` // one per --links kind
	FourPeers *fourPeers      `json:"four_peers,omitempty"`
	DHT       *dhtResult      `json:"dht,omitempty"`
	Checks    []check         `json:"checks"`
	Seconds   float64         `json:"seconds"`
}

type check struct {
	Scenario string `json:"scenario"`
	Name     string `json:"name"`
	Result   string `json:"result"`
	Target   string `json:"target"`
	OK       bool   `json:"ok"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench-p2p", flag.ContinueOnError)
	size := sizeFlag(fs, "size", 1<<30, "size of the blob for the one-peer measure")
	fourSize := sizeFlag(fs, "four-size", 512<<20, "size of the blob for the four-peer measure")
	limit := sizeFlag(fs, "upload-limit", 25<<20, "`bytes per second` each of the four holders may upload (--upload-limit L)")
	chunk := sizeFlag(fs, "chunk-size", 0, "--chunk-size for every node (0: the node's default)")
	runs := fs.Int("runs", 3, "measured runs per scenario; each peer run uses a fresh node")
	dhtNodes := fs.Int("dht-nodes", 20, "libp2p hosts in the DHT fleet")
	dhtKeys := fs.Int("dht-keys", 50, "digests one DHT node provides and every other looks up")
	dhtMisses := fs.Int("dht-misses", 5, "digests nobody provides that every DHT node looks up")
	only := fs.String("scenarios", "one,four,dht", "comma-separated scenarios to run: one, four, dht")
	linkList := fs.String("links", "loopback,1gbit", "comma-separated links for the one-peer measure: loopback, or a tc rate such as 1gbit for an origin and a peer each in its own network namespace behind a link of that speed (needs root)")
	out := fs.String("json", "", "also write the results as JSON to this file")
	profile := fs.String("profile", "", "write CPU profiles of both nodes during an extra, unmeasured one-peer pull into this directory")
	logLevel := fs.String("log-level", "info", "--log-level of every node")
	keep := fs.Bool("keep", false, "keep the work directory (node logs) instead of removing it, and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *size <= 0 || *fourSize <= 0:
		return errors.New("--size and --four-size must be positive")
	case *limit <= 0:
		return errors.New("--upload-limit must be positive: the four-peer measure is a multiple of it")
	case *runs <= 0 || *runs > 20:
		return errors.New("--runs must be between 1 and 20")
	case *dhtNodes < 2 || *dhtNodes > 100 || *dhtKeys < 1 || *dhtKeys > 1000 || *dhtMisses < 0 || *dhtMisses > 100:
		return errors.New("want 2-100 --dht-nodes, 1-1000 --dht-keys and 0-100 --dht-misses")
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if s != "one" && s != "four" && s != "dht" {
			return fmt.Errorf("--scenarios: unknown scenario %q (want one, four, dht)", s)
		}
		want[s] = true
	}
	var links []string
	if want["one"] {
		var err error
		if links, err = parseLinks(*linkList); err != nil {
			return err
		}
	}
	began := time.Now()
	rep := report{
		Date:    time.Now().UTC().Format("2006-01-02"),
		Machine: harness.ThisMachine(),
		Params: params{
			OnePeerBlobBytes: *size, FourPeerBlobBytes: *fourSize, UploadLimit: *limit, ChunkSize: *chunk,
			Runs: *runs, DHTNodes: *dhtNodes, DHTKeys: *dhtKeys, DHTMisses: *dhtMisses,
			Scenarios: *only, OnePeerLinks: strings.Join(links, ","), ClientHash: true,
		},
	}

	work, err := os.MkdirTemp("", "shoal-bench-p2p-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintln(stdout, "work directory kept:", work)
	} else {
		defer os.RemoveAll(work)
	}
	defer harness.RemoveBuilds()

	if want["one"] || want["four"] {
		e, err := newEnv(ctx, stdout, work, *chunk, *runs, *logLevel, *keep)
		if err != nil {
			return err
		}
		defer e.close()
		if *profile != "" {
			if err := os.MkdirAll(*profile, 0o755); err != nil {
				return err
			}
			e.profile = *profile
		}
		for _, link := range links {
			r, err := e.onePeerOver(ctx, *size, link)
			if err != nil {
				return fmt.Errorf("one peer, %s: %w", link, err)
			}
			rep.OnePeer = append(rep.OnePeer, r)
			rep.Checks = append(rep.Checks, r.checks()...)
		}
		if want["four"] {
			r, err := e.fourPeers(ctx, *fourSize, *limit)
			if err != nil {
				return fmt.Errorf("four peers: %w", err)
			}
			rep.FourPeers = r
			rep.Checks = append(rep.Checks, r.checks()...)
		}
	}
	if want["dht"] {
		fmt.Fprintf(stdout, "DHT: %d libp2p hosts on loopback, %d provided keys, %d missing keys\n", *dhtNodes, *dhtKeys, *dhtMisses)
		r, err := runProbe(ctx, *dhtNodes, *dhtKeys, *dhtMisses)
		if err != nil {
			return fmt.Errorf("dht: %w", err)
		}
		rep.DHT = r
		rep.Checks = append(rep.Checks, r.checks()...)
	}
	rep.Seconds = time.Since(began).Seconds()

	pass := printReport(stdout, rep)
	if *out != "" {
		if err := harness.WriteJSON(*out, rep); err != nil {
			return err
		}
	}
	if !pass {
		return errors.New("a target was missed (see the table)")
	}
	return nil
}

// printReport prints the table and the details behind it; it reports whether every check
// passed.
func printReport(w io.Writer, rep report) bool {
	fmt.Fprintf(w, "\n%s; %s; medians of %d runs; clients hash what they receive; took %.0f s\n\n",
		rep.Date, rep.Machine, rep.Params.Runs, rep.Seconds)
	fmt.Fprintln(w, "| scenario | measure | result | target | |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	pass := true
	for _, c := range rep.Checks {
		verdict := "pass"
		if !c.OK {
			verdict = "**miss**"
			pass = false
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", c.Scenario, c.Name, c.Result, c.Target, verdict)
	}
	for _, r := range rep.OnePeer {
		fmt.Fprintf(w, "\nOne peer, %s, CPU seconds per GB moved (medians; the client hashes):\n  straight from the origin: %s\n  from the peer:            %s\n",
			r.Link, cpuString(r.DirectCPU, "registry", "client"), cpuString(r.PeerCPU, "A", "B", "client"))
	}
	if r := rep.FourPeers; r != nil {
		fmt.Fprintf(w, "\nFour peers, bytes each holder uploaded per run (blob %s):\n", units.Human(r.BlobBytes))
		for i, run := range r.Runs {
			parts := make([]string, len(run.HolderUploaded))
			for j, b := range run.HolderUploaded {
				parts[j] = fmt.Sprintf("%s (%.0f%%)", units.Human(b), 100*float64(b)/float64(r.BlobBytes))
			}
			fmt.Fprintf(w, "  run %d: %s\n", i+1, strings.Join(parts, ", "))
		}
	}
	if r := rep.DHT; r != nil {
		fmt.Fprintf(w, "\nDHT: %d nodes joined in %.2f s, routing tables %d-%d peers; %d keys provided in %.2f s;\n"+
			"  FindProviders (first lookup, uncached) median %.2f ms, p90 %.2f ms, max %.2f ms over %d lookups\n",
			r.Nodes, r.JoinSeconds, r.TableMin, r.TableMax, r.Keys, r.ProvideSeconds,
			r.First.MedianMs, r.First.P90Ms, r.First.MaxMs, r.First.N)
	}
	return pass
}
