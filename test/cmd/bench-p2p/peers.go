package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// env is what the node scenarios share: the shoal binary, the origin registry, and where
// nodes keep their data.
type env struct {
	out       io.Writer
	bin       string
	work      string
	reg       *harness.Registry
	chunkArgs []string
	runs      int
	profile   string // directory for CPU profiles; "" for none
	logLevel  string
	keep      bool // keep node directories
	seq       int  // names node directories
}

func newEnv(ctx context.Context, out io.Writer, work string, chunkSize int64, runs int, logLevel string, keep bool) (*env, error) {
	bin, err := harness.ShoalBinary()
	if err != nil {
		return nil, err
	}
	regDir := filepath.Join(work, "registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return nil, err
	}
	reg, err := harness.RunRegistry(ctx, regDir)
	if err != nil {
		return nil, err
	}
	e := &env{out: out, bin: bin, work: work, reg: reg, runs: runs, logLevel: logLevel, keep: keep}
	if chunkSize > 0 {
		e.chunkArgs = []string{"--chunk-size", strconv.FormatInt(chunkSize, 10)}
	}
	fmt.Fprintf(out, "origin: distribution registry at %s\n", reg.URL)
	return e, nil
}

func (e *env) close() {
	e.reg.Close()
	client.CloseIdleConnections()
}

// node is a shoal node started by a scenario, with the directory it owns.
type node struct {
	*harness.Node
	dir     string
	keepLog bool
}

// startNode starts a node at site at, in a new directory under the work dir (or dir, when
// given: restarting a node on its data), with origin as its --origin.
func (e *env) startNode(ctx context.Context, name, dir, origin string, at site, args ...string) (*node, error) {
	if dir == "" {
		e.seq++
		dir = filepath.Join(e.work, fmt.Sprintf("%s-%d", name, e.seq))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	o := harness.NodeOptions{
		Binary:  e.bin,
		DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "node.log"),
		Origin:  origin,
		Args:    slices.Concat([]string{"--log-level", e.logLevel, "--pprof"}, e.chunkArgs, at.p2pListen(), args),
	}
	if at.netns != "" {
		// The namespace is the node's own: fixed ports cannot be taken.
		o.Netns, o.RegistryAddr, o.AdminAddr = at.netns, at.ip+":5000", at.ip+":5001"
	}
	n, err := harness.RunNode(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return &node{Node: n, dir: dir, keepLog: e.keep}, nil
}

// stop stops the node; with remove, it also deletes its data (and its log, unless kept).
func (n *node) stop(remove bool) error {
	err := n.Close()
	switch {
	case remove && n.keepLog:
		os.RemoveAll(filepath.Join(n.dir, "data"))
	case remove:
		os.RemoveAll(n.dir)
	}
	return err
}

// bootAddr is an address other nodes bootstrap from.
func (n *node) bootAddr(ctx context.Context) (string, error) {
	st, err := n.Status(ctx)
	if err != nil {
		return "", err
	}
	if len(st.Addrs) == 0 {
		return "", fmt.Errorf("node %s: /status has no addrs to bootstrap from", n.URL)
	}
	return st.Addrs[0], nil
}

func (n *node) blobURL(repo string, d digest.Digest) string {
	return n.URL + "/v2/" + repo + "/blobs/" + d.String()
}

// waitCommitted polls the node until no download runs and the blob is in its cache.
func (n *node) waitCommitted(ctx context.Context, size int64) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := n.Status(ctx)
		if err == nil && st.Downloads == 0 && st.Cache.Bytes >= size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: blob not committed within 2m (last status %+v, %v)", n.URL, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// counters are the node metrics the scenarios read.
type counters struct {
	fromPeer, fromOrigin, uploaded int64
}

func (n *node) counters(ctx context.Context) (counters, error) {
	m, err := n.Metrics(ctx)
	if err != nil {
		return counters{}, err
	}
	const fetched = "shoal_blob_fetched_bytes_total"
	const uploaded = "shoal_chunk_uploaded_bytes_total"
	if !m.Has(fetched) || !m.Has(uploaded) {
		return counters{}, fmt.Errorf("node %s: /metrics lacks %s or %s", n.URL, fetched, uploaded)
	}
	return counters{
		fromPeer:   int64(m.Sum(fetched, harness.Labels{"source": "peer"})),
		fromOrigin: int64(m.Sum(fetched, harness.Labels{"source": "origin"})),
		uploaded:   int64(m.Sum(uploaded, nil)),
	}, nil
}

// upload pushes a random blob of size bytes to the origin reg and pulls it once straight
// from there, so the origin's page cache holds it as it would a hot layer.
func (e *env) upload(ctx context.Context, reg *harness.Registry, repo string, size int64) (digest.Digest, error) {
	fmt.Fprintf(e.out, "uploading a %s random blob to %s\n", units.Human(size), repo)
	d, err := harness.UploadRandomBlob(ctx, reg.URL, repo, size, filepath.Join(e.work, "upload"))
	if err != nil {
		return "", err
	}
	if _, err := pull(ctx, directURL(reg, repo, d), d); err != nil {
		return "", fmt.Errorf("warm-up pull from the origin: %w", err)
	}
	return d, nil
}

func directURL(reg *harness.Registry, repo string, d digest.Digest) string {
	return reg.URL + "/v2/" + repo + "/blobs/" + d.String()
}

// originProxy puts a counting proxy in front of the registry: the origin of the nodes whose
// bytes must all come from peers. It is the same registry, so a node can HEAD the blob there,
// but every blob byte it sends is counted.
func originProxy(reg *harness.Registry) (*harness.CountingProxy, error) {
	return harness.NewCountingProxy(reg.URL)
}

// originBlobBytes waits for the proxy's requests to finish and returns the blob bytes it
// served since its last Reset.
func originBlobBytes(ctx context.Context, p *harness.CountingProxy) (int64, error) {
	if err := p.WaitIdle(ctx, 15*time.Second); err != nil {
		return 0, err
	}
	return p.Total(harness.KindBlob).Bytes, nil
}

// onePeer is the one-peer measure.
type onePeer struct {
	// Link is where the sources sit: "loopback", or a tc rate for an origin and a holder each
	// in its own network namespace behind a link of that speed.
	Link               string    `json:"link"`
	BlobBytes          int64     `json:"blob_bytes"`
	DirectMBps         []float64 `json:"direct_mbps"`
	PeerMBps           []float64 `json:"peer_mbps"`
	DirectFirstByteMs  []float64 `json:"direct_first_byte_ms"`
	PeerFirstByteMs    []float64 `json:"peer_first_byte_ms"`
	MedianDirectMBps   float64   `json:"median_direct_mbps"`
	MedianPeerMBps     float64   `json:"median_peer_mbps"`
	Ratio              float64   `json:"ratio"`
	OriginBlobBytes    int64     `json:"origin_blob_bytes"`     // what the proxy sent B, over all runs
	PeerFetchedBytes   []int64   `json:"peer_fetched_bytes"`    // B's shoal_blob_fetched_bytes_total{source=peer}
	OriginFetchedBytes []int64   `json:"origin_fetched_bytes"`  // B's ...{source=origin}
	HolderUploaded     []int64   `json:"holder_uploaded_bytes"` // A's shoal_chunk_uploaded_bytes_total, per run
	HolderFillMBps     float64   `json:"holder_fill_mbps"`      // A's own pull from the origin
	// CPU seconds per GB moved, by process (medians): where a 2-core machine's time goes.
	DirectCPU map[string]float64 `json:"direct_cpu_seconds_per_gb"`
	PeerCPU   map[string]float64 `json:"peer_cpu_seconds_per_gb"`
}

func (r *onePeer) checks() []check {
	scenario := "one peer, " + r.Link
	var fromOrigin int64
	for _, b := range r.OriginFetchedBytes {
		fromOrigin += b
	}
	where := "all on loopback"
	if r.Link != "loopback" {
		where = "origin and peer each behind its own " + r.Link + " link"
	}
	return []check{
		{scenario, fmt.Sprintf("%s through a fresh node from its one peer / straight from the origin, %s", units.Human(r.BlobBytes), where),
			fmt.Sprintf("%.2fx (%.0f vs %.0f MB/s)", r.Ratio, r.MedianPeerMBps, r.MedianDirectMBps),
			fmt.Sprintf(">= %.2fx", targetOnePeerRatio), r.Ratio >= targetOnePeerRatio},
		{scenario, "blob bytes the fresh nodes took from the origin (counting proxy; node metric)",
			fmt.Sprintf("%d B; %d B in %d runs", r.OriginBlobBytes, fromOrigin, len(r.PeerMBps)),
			"0: every byte from the peer", r.OriginBlobBytes == 0 && fromOrigin == 0},
	}
}

// onePeer has node A pull a blob from the origin, then, run after run, a fresh node B joined
// to A pull it through its /v2, alternating with pulls straight from the origin. l says
// where the origin, A and B sit.
func (e *env) onePeer(ctx context.Context, size int64, l *oneLink) (_ *onePeer, err error) {
	const repo = "bench/one-peer"
	fmt.Fprintf(e.out, "\none peer, %s:\n", l.name)
	d, err := e.upload(ctx, l.reg, repo, size)
	if err != nil {
		return nil, err
	}
	a, err := e.startNode(ctx, "A", "", l.holderOrigin, l.holder)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := a.stop(true); cerr != nil && err == nil {
			err = fmt.Errorf("node A: %w", cerr)
		}
	}()
	boot, err := a.bootAddr(ctx)
	if err != nil {
		return nil, err
	}
	fill, err := pull(ctx, a.blobURL(repo, d), d)
	if err != nil {
		return nil, fmt.Errorf("node A's pull from the origin: %w", err)
	}
	if err := a.waitCommitted(ctx, size); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.out, "  node A pulled it from the origin: %s\n", fill)
	proxy, err := originProxy(l.reg)
	if err != nil {
		return nil, err
	}
	defer proxy.Close()

	r := &onePeer{Link: l.name, BlobBytes: size, HolderFillMBps: fill.rate() / 1e6}
	var directCPU, peerCPU []map[string]float64
	// A profiled pull is slower; it is an extra run, left out of the figures.
	first := 0
	if e.profile != "" {
		first = -1
	}
	for i := first; i < e.runs; i++ {
		if i >= 0 {
			settleDisk()
			cpu := startCPU(map[string]int{"registry": l.reg.Pid(), "client": os.Getpid()})
			direct, err := pull(ctx, directURL(l.reg, repo, d), d)
			if err != nil {
				return nil, fmt.Errorf("direct pull: %w", err)
			}
			directCPU = append(directCPU, cpu.perGB(direct.Bytes))
			r.DirectMBps = append(r.DirectMBps, direct.rate()/1e6)
			r.DirectFirstByteMs = append(r.DirectFirstByteMs, ms(direct.FirstByte))
			fmt.Fprintf(e.out, "  run %d: straight from the origin   %s\n", i+1, direct)
		}

		b, err := e.startNode(ctx, "B", "", proxy.URL, l.fresh, "--bootstrap", boot)
		if err != nil {
			return nil, err
		}
		pr, err := e.peerRun(ctx, a, b, proxy, repo, d, size, l.name, i < 0)
		if serr := b.stop(true); serr != nil && err == nil {
			err = fmt.Errorf("node B: %w", serr)
		}
		if err != nil {
			return nil, err
		}
		origin := proxy.Total(harness.KindBlob)
		what := fmt.Sprintf("run %d:", i+1)
		if i < 0 {
			what = "profiled run, not counted:"
		}
		fmt.Fprintf(e.out, "  %s fresh node B, from peer A  %s; B fetched %s from peers, %s from the origin; A uploaded %s; the origin saw %d blob requests, sent %d blob bytes\n",
			what, pr.t, units.Human(pr.c.fromPeer), units.Human(pr.c.fromOrigin), units.Human(pr.uploaded), origin.Requests, origin.Bytes)
		client.CloseIdleConnections()
		if i < 0 {
			continue
		}
		r.PeerMBps = append(r.PeerMBps, pr.t.rate()/1e6)
		r.PeerFirstByteMs = append(r.PeerFirstByteMs, ms(pr.t.FirstByte))
		r.PeerFetchedBytes = append(r.PeerFetchedBytes, pr.c.fromPeer)
		r.OriginFetchedBytes = append(r.OriginFetchedBytes, pr.c.fromOrigin)
		r.HolderUploaded = append(r.HolderUploaded, pr.uploaded)
		r.OriginBlobBytes += origin.Bytes
		peerCPU = append(peerCPU, pr.cpu)
	}
	r.MedianDirectMBps = median(r.DirectMBps)
	r.MedianPeerMBps = median(r.PeerMBps)
	r.Ratio = r.MedianPeerMBps / r.MedianDirectMBps
	r.DirectCPU = medianCPU(directCPU)
	r.PeerCPU = medianCPU(peerCPU)
	return r, nil
}

// peerResult is one pull through B.
type peerResult struct {
	t        transfer
	c        counters           // B's, once it committed
	uploaded int64              // what A uploaded meanwhile
	cpu      map[string]float64 // CPU seconds per GB of A, B and the client during the pull
}

// peerRun pulls the blob through b, whose one source is its peer a.
func (e *env) peerRun(ctx context.Context, a, b *node, proxy *harness.CountingProxy, repo string, d digest.Digest, size int64, link string, profile bool) (peerResult, error) {
	before, err := a.counters(ctx)
	if err != nil {
		return peerResult{}, err
	}
	proxy.Reset()
	var wg sync.WaitGroup
	if profile {
		for name, n := range map[string]*node{"B": b, "A": a} {
			wg.Go(func() {
				path := filepath.Join(e.profile, "one-peer-"+link+"-"+name+".pprof")
				if err := saveProfile(ctx, n.AdminURL, path, 3); err != nil {
					fmt.Fprintf(e.out, "  profile of node %s: %v\n", name, err)
					return
				}
				fmt.Fprintf(e.out, "  CPU profile of node %s (first 3 s of the pull): %s\n", name, path)
			})
		}
	}
	settleDisk()
	cpu := startCPU(map[string]int{"A": a.Pid(), "B": b.Pid(), "client": os.Getpid()})
	t, err := pull(ctx, b.blobURL(repo, d), d)
	r := peerResult{t: t, cpu: cpu.perGB(t.Bytes)}
	wg.Wait()
	if err != nil {
		return peerResult{}, fmt.Errorf("pull through node B: %w", err)
	}
	if err := b.waitCommitted(ctx, size); err != nil {
		return peerResult{}, err
	}
	if _, err := originBlobBytes(ctx, proxy); err != nil {
		return peerResult{}, err
	}
	if r.c, err = b.counters(ctx); err != nil {
		return peerResult{}, err
	}
	after, err := a.counters(ctx)
	if err != nil {
		return peerResult{}, err
	}
	r.uploaded = after.uploaded - before.uploaded
	return r, nil
}

// fourPeers is the four-peer measure.
type fourPeers struct {
	BlobBytes       int64          `json:"blob_bytes"`
	UploadLimit     int64          `json:"upload_limit_bytes_per_second"`
	Holders         int            `json:"holders"`
	MBps            []float64      `json:"mbps"`
	FirstByteMs     []float64      `json:"first_byte_ms"`
	MedianMBps      float64        `json:"median_mbps"`
	TimesLimit      float64        `json:"times_limit"` // median throughput / L
	OriginBlobBytes int64          `json:"origin_blob_bytes"`
	Runs            []fourPeersRun `json:"runs_detail"`
	FillMBps        []float64      `json:"holder_fill_mbps"` // each holder's pull from the origin
}

type fourPeersRun struct {
	HolderUploaded []int64 `json:"holder_uploaded_bytes"`
	PeerFetched    int64   `json:"peer_fetched_bytes"`
	OriginFetched  int64   `json:"origin_fetched_bytes"`
}

func (r *fourPeers) checks() []check {
	const scenario = "four peers"
	var fromOrigin int64
	for _, run := range r.Runs {
		fromOrigin += run.OriginFetched
	}
	return []check{
		{scenario, fmt.Sprintf("%s through a fresh node from %d holders, each --upload-limit L = %s/s", units.Human(r.BlobBytes), r.Holders, units.Human(r.UploadLimit)),
			fmt.Sprintf("%.2f L (%.1f MiB/s; aggregate %d L)", r.TimesLimit, r.MedianMBps*1e6/(1<<20), r.Holders),
			fmt.Sprintf(">= %.1f L", targetFourPeers), r.TimesLimit >= targetFourPeers},
		{scenario, "blob bytes the fresh nodes took from the origin (counting proxy; node metric)",
			fmt.Sprintf("%d B; %d B in %d runs", r.OriginBlobBytes, fromOrigin, len(r.Runs)),
			"0: every byte from the holders", r.OriginBlobBytes == 0 && fromOrigin == 0},
	}
}

// fourPeers fills four holders with a blob, restarts them as fleet members limited to
// limit bytes per second each, and has fresh nodes pull the blob from them.
func (e *env) fourPeers(ctx context.Context, size, limit int64) (_ *fourPeers, err error) {
	const repo = "bench/four-peers"
	fmt.Fprintln(e.out, "\nfour peers:")
	d, err := e.upload(ctx, e.reg, repo, size)
	if err != nil {
		return nil, err
	}
	r := &fourPeers{BlobBytes: size, UploadLimit: limit, Holders: holders}

	// Each holder first pulls the blob from the origin on its own, a fleet of one: fetched
	// from peers limited to L, filling four would take minutes. Being in a fleet, it keeps the
	// blob's chunk list when it commits, as any fleet member does; a node that got a blob
	// outside a fleet computes the list, reading the whole blob, when the first peer asks.
	// Then all four restart on their data as one fleet, each limited to L; on joining they
	// announce what they hold.
	dirs := make([]string, holders)
	for i := range dirs {
		dirs[i] = filepath.Join(e.work, fmt.Sprintf("holder-%d", i))
		n, err := e.startNode(ctx, "holder", dirs[i], e.reg.URL, site{})
		if err != nil {
			return nil, err
		}
		t, err := pull(ctx, n.blobURL(repo, d), d)
		if err == nil {
			err = n.waitCommitted(ctx, size)
		}
		if serr := n.stop(false); serr != nil && err == nil {
			err = fmt.Errorf("holder %d: %w", i, serr)
		}
		if err != nil {
			return nil, fmt.Errorf("filling holder %d: %w", i, err)
		}
		r.FillMBps = append(r.FillMBps, t.rate()/1e6)
	}
	defer func() {
		for _, dir := range dirs {
			if e.keep {
				os.RemoveAll(filepath.Join(dir, "data"))
			} else {
				os.RemoveAll(dir)
			}
		}
	}()
	fleet := make([]*node, 0, holders)
	defer func() {
		for i, n := range fleet {
			if cerr := n.stop(false); cerr != nil && err == nil {
				err = fmt.Errorf("holder %d: %w", i, cerr)
			}
		}
	}()
	limitArgs := []string{"--upload-limit", strconv.FormatInt(limit, 10)}
	var boot string
	for i, dir := range dirs {
		args := slices.Clone(limitArgs)
		if i > 0 {
			args = append(args, "--bootstrap", boot)
		}
		n, err := e.startNode(ctx, "holder", dir, e.reg.URL, site{}, args...)
		if err != nil {
			return nil, err
		}
		fleet = append(fleet, n)
		if i == 0 {
			if boot, err = n.bootAddr(ctx); err != nil {
				return nil, err
			}
		}
	}
	fmt.Fprintf(e.out, "  %d holders hold it, each uploading at most %s/s\n", holders, units.Human(limit))

	proxy, err := originProxy(e.reg)
	if err != nil {
		return nil, err
	}
	defer proxy.Close()
	for i := range e.runs {
		before := make([]counters, holders)
		for j, h := range fleet {
			if before[j], err = h.counters(ctx); err != nil {
				return nil, err
			}
		}
		proxy.Reset()
		n, err := e.startNode(ctx, "E", "", proxy.URL, site{}, "--bootstrap", boot)
		if err != nil {
			return nil, err
		}
		t, err := pull(ctx, n.blobURL(repo, d), d)
		if err == nil {
			err = n.waitCommitted(ctx, size)
		}
		var c counters
		if err == nil {
			c, err = n.counters(ctx)
		}
		if serr := n.stop(true); serr != nil && err == nil {
			err = fmt.Errorf("node E: %w", serr)
		}
		if err != nil {
			return nil, fmt.Errorf("pull through node E: %w", err)
		}
		origin, err := originBlobBytes(ctx, proxy)
		if err != nil {
			return nil, err
		}
		run := fourPeersRun{PeerFetched: c.fromPeer, OriginFetched: c.fromOrigin}
		for j, h := range fleet {
			after, err := h.counters(ctx)
			if err != nil {
				return nil, err
			}
			run.HolderUploaded = append(run.HolderUploaded, after.uploaded-before[j].uploaded)
		}
		r.Runs = append(r.Runs, run)
		r.MBps = append(r.MBps, t.rate()/1e6)
		r.FirstByteMs = append(r.FirstByteMs, ms(t.FirstByte))
		r.OriginBlobBytes += origin
		fmt.Fprintf(e.out, "  run %d: fresh node E, from %d holders  %s = %.2f L; holders uploaded %s\n",
			i+1, holders, t, t.rate()/float64(limit), humanList(run.HolderUploaded))
		client.CloseIdleConnections()
	}
	r.MedianMBps = median(r.MBps)
	r.TimesLimit = r.MedianMBps * 1e6 / float64(limit)
	return r, nil
}

func humanList(ns []int64) string {
	s := ""
	for i, n := range ns {
		if i > 0 {
			s += ", "
		}
		s += units.Human(n)
	}
	return s
}

// saveProfile records a node's CPU for seconds.
func saveProfile(ctx context.Context, adminURL, path string, seconds int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", adminURL, seconds), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// settleDisk writes out what earlier steps left dirty in the page cache (the upload, the
// previous runs' copies), so a run is not throttled by writeback it did not cause. It is not
// part of any measured time.
func settleDisk() { syscall.Sync() }
