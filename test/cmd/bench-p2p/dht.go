package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// The DHT is measured in one process of real libp2p hosts built by shoal's p2p package:
// dhtprobe, built here from the test module, which requires the shoal module through its
// replace directive, so it builds against the working tree's p2p.

// buildProbe builds dhtprobe into dir and returns the binary's path.
func buildProbe(ctx context.Context, dir string) (string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "dhtprobe")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/bench-p2p/dhtprobe")
	cmd.Dir = filepath.Join(root, "test")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build dhtprobe: %w\n%s", err, out)
	}
	return bin, nil
}

// probeReport is what dhtprobe prints (its Report type).
type probeReport struct {
	Nodes          int     `json:"nodes"`
	Keys           int     `json:"keys"`
	MissKeys       int     `json:"miss_keys"`
	JoinSeconds    float64 `json:"join_seconds"`
	ProvideSeconds float64 `json:"provide_seconds"`
	RoutingTable   []int   `json:"routing_table"`
	FirstNs        []int64 `json:"first_ns"`
	FreshNs        []int64 `json:"fresh_ns"`
	MissNs         []int64 `json:"miss_ns"`
	NotFound       int     `json:"not_found"`
	Errors         int     `json:"errors"`
	FalseHits      int     `json:"false_hits"`
	MissErrors     int     `json:"miss_errors"`
	FirstErr       string  `json:"first_err"`
}

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

// runProbe runs dhtprobe and summarises its latencies.
func runProbe(ctx context.Context, bin string, nodes, keys, misses int) (*dhtResult, error) {
	const limit = 4 * time.Minute
	ctx, cancel := context.WithTimeout(ctx, limit+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"--nodes", strconv.Itoa(nodes), "--keys", strconv.Itoa(keys), "--misses", strconv.Itoa(misses),
		"--timeout", limit.String())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dhtprobe: %w\n%s", err, stderr.Bytes())
	}
	var p probeReport
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		return nil, fmt.Errorf("dhtprobe output: %w", err)
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
