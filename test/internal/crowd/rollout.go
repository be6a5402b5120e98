package crowd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// pullTimeout bounds one node's pull in a rollout.
const pullTimeout = 5 * time.Minute

// counted are the request kinds a rollout reports per node and second: the node's
// shoal_p2p_requests_total kinds, the answers its watches brought
// (shoal_p2p_watch_answers_total, as "watch_answer"), then the tracker client's operations.
var (
	p2pKinds     = []string{"have", "watch", "chunk", "find", "provide", "seeds", "fetch"}
	trackerKinds = []string{"announce", "lease"}
)

// requestCounts sums the counted requests over the fleet's nodes.
func requestCounts(ctx context.Context, nodes []*harness.Node) (map[string]float64, int64, error) {
	sum := map[string]float64{}
	var peer float64
	for i, n := range nodes {
		m, err := n.Metrics(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("node %d: %w", i, err)
		}
		for _, k := range p2pKinds {
			sum[k] += m.Sum("shoal_p2p_requests_total", harness.Labels{"kind": k})
		}
		sum["watch_answer"] += m.Sum("shoal_p2p_watch_answers_total", nil)
		for _, k := range trackerKinds {
			sum[k] += m.Sum("shoal_tracker_requests_total", harness.Labels{"op": k})
		}
		peer += m.Sum("shoal_blob_fetched_bytes_total", harness.Labels{"source": "peer"})
	}
	return sum, int64(peer), nil
}

// rollout pushes a cold single-layer image and has every node of f pull it at the same
// instant through an origin limited to s.OriginRate.
func (e *env) rollout(ctx context.Context, f *fleet, s Setting, dataPerGB float64) (*Rollout, error) {
	repo := e.repo(f.mode)
	im, err := harness.PushRandomImage(ctx, e.reg.Addr, repo, "v1", 1, s.ImageBytes)
	if err != nil {
		return nil, err
	}
	e.proxy.SetRateLimit(s.OriginRate)
	defer e.proxy.SetRateLimit(0)
	if err := e.proxy.WaitIdle(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	e.proxy.Reset()
	before, peer0, err := requestCounts(ctx, f.nodes)
	if err != nil {
		return nil, err
	}

	took := make([]time.Duration, len(f.nodes))
	errs := make([]error, len(f.nodes))
	go0 := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range f.nodes {
		wg.Go(func() {
			<-go0
			start := time.Now()
			pctx, cancel := context.WithTimeout(ctx, pullTimeout)
			defer cancel()
			if err := harness.PullThrough(pctx, n.URL, im); err != nil {
				errs[i] = fmt.Errorf("node %d: %w", i, err)
			}
			took[i] = time.Since(start)
		})
	}
	machine := harness.StartMachineCPU()
	cpu0 := harness.ProcessesCPU(f.pids())
	var tracker0 float64
	if f.tracker != nil {
		tracker0, _ = harness.ProcessCPU(f.tracker.Pid())
	}
	var profiles sync.WaitGroup
	if e.cfg.Profile != "" {
		for i := 0; i < len(f.nodes); i += max(1, len(f.nodes)/8) {
			profiles.Go(func() {
				path := filepath.Join(e.cfg.Profile, fmt.Sprintf("%s-node%d.pprof", repo[len("crowd/"):], i))
				if err := saveProfile(ctx, f.nodes[i].AdminURL, path); err != nil {
					e.log("profile of node %d: %v", i, err)
				}
			})
		}
	}
	begin := time.Now()
	close(go0)
	wg.Wait()
	span := time.Since(begin)
	profiles.Wait()
	cpu := harness.ProcessesCPU(f.pids()) - cpu0
	busy, _ := machine.Used()
	r := &Rollout{Setting: s, Repo: repo, CPUSeconds: cpu, MachineBusy: busy}
	if f.tracker != nil {
		t1, _ := harness.ProcessCPU(f.tracker.Pid())
		r.TrackerCPUSeconds = t1 - tracker0
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Every node stored what it served its client: the digests were checked on the way in
	// and again by the pull.
	for i, n := range f.nodes {
		if err := n.WaitStored(ctx, 30*time.Second, im.Blobs()...); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	after, peer1, err := requestCounts(ctx, f.nodes)
	if err != nil {
		return nil, err
	}
	if err := e.proxy.WaitIdle(ctx, 10*time.Second); err != nil {
		return nil, err
	}

	nodes := float64(len(f.nodes))
	r.OriginBytes = e.proxy.Total(harness.KindBlob).Bytes
	r.OriginAmplification = float64(r.OriginBytes) / float64(im.BlobBytes())
	r.ManifestsFromOrigin = e.proxy.Manifest(im.Manifest.Digest.String()).GETs
	r.BoundSeconds = float64(im.BlobBytes()) / float64(s.OriginRate)
	r.PeerBytes = peer1 - peer0
	secs := make([]float64, len(took))
	for i, d := range took {
		secs[i] = d.Seconds()
	}
	slices.Sort(secs)
	r.NodeSeconds = secs
	r.P50Seconds, r.P90Seconds, r.MaxSeconds = percentile(secs, 0.5), percentile(secs, 0.9), secs[len(secs)-1]
	delivered := nodes * float64(im.BlobBytes())
	r.CPUSecondsPerGB = cpu / (delivered / 1e9)
	r.ControlCorePerNode = max(0, cpu-dataPerGB*delivered/1e9) / span.Seconds() / nodes
	r.PerNodeSecond = map[string]float64{}
	for k, v := range after {
		if n := v - before[k]; n > 0 || slices.Contains(p2pKinds, k) {
			r.PerNodeSecond[k] = n / nodes / span.Seconds()
		}
	}
	return r, nil
}

// percentile is the value at fraction p of sorted v (nearest rank).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(p*float64(len(v))+0.5) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// dataPath measures what moving a blob between two nodes costs them, without the crowd:
// node a pulls a new blob from the origin alone, then node b pulls it from a; the CPU of a
// and b over b's pull, per GB, is the median over cfg.Pairs pairs.
func (e *env) dataPath(ctx context.Context, f *fleet) (float64, error) {
	size := slices.MaxFunc(e.cfg.Settings, func(a, b Setting) int { return int(a.ImageBytes - b.ImageBytes) }).ImageBytes
	var perGB []float64
	for p := range e.cfg.Pairs {
		a, b := f.nodes[(2*p)%len(f.nodes)], f.nodes[(2*p+1)%len(f.nodes)]
		im, err := harness.PushRandomImage(ctx, e.reg.Addr, e.repo(f.mode+"-pair"), "v1", 1, size)
		if err != nil {
			return 0, err
		}
		if err := harness.PullThrough(ctx, a.URL, im); err != nil {
			return 0, err
		}
		if err := a.WaitStored(ctx, 30*time.Second, im.Blobs()...); err != nil {
			return 0, err
		}
		// What a announces must be visible before b looks.
		if err := sleep(ctx, 2*time.Second); err != nil {
			return 0, err
		}
		e.proxy.Reset()
		pids := []int{a.Pid(), b.Pid()}
		cpu0 := harness.ProcessesCPU(pids)
		if err := harness.PullThrough(ctx, b.URL, im); err != nil {
			return 0, err
		}
		cpu := harness.ProcessesCPU(pids) - cpu0
		if got := e.proxy.Total(harness.KindBlob).Bytes; got > 0 {
			return 0, fmt.Errorf("pair %d: the second node took %d bytes from the origin, not from its peer", p, got)
		}
		perGB = append(perGB, cpu/(float64(im.BlobBytes())/1e9))
	}
	slices.Sort(perGB)
	return perGB[len(perGB)/2], nil
}

// lookups is the DHT check: every node pulls a blob of its own from the origin, so that it
// alone holds it and provides it; then every node asks for cfg.Lookups other nodes' blobs at
// once. Each ask that reached the origin is a lookup that did not find the holder.
func (e *env) lookups(ctx context.Context, f *fleet) (*LookupResult, error) {
	n := len(f.nodes)
	repo := e.repo("lookup")
	blobs := make([]digest.Digest, n)
	for i := range blobs {
		d, err := harness.UploadRandomBlob(ctx, e.reg.URL, repo, 64<<10, fmt.Sprintf("%s/lookup-%d", e.dir, i))
		if err != nil {
			return nil, err
		}
		blobs[i] = d
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, node := range f.nodes {
		wg.Go(func() { errs[i] = getBlob(ctx, node, repo, blobs[i], 64<<10) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// The announces are made as each download starts; give the last ones time to land.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	if err := e.proxy.WaitIdle(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	e.proxy.Reset()
	finds := func() (found, none, late uint64, err error) {
		for i, node := range f.nodes {
			m, err := node.Metrics(ctx)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("node %d: %w", i, err)
			}
			found += m.Count("shoal_dht_find_duration_seconds", harness.Labels{"result": "found"})
			none += m.Count("shoal_dht_find_duration_seconds", harness.Labels{"result": "none"})
			late += m.Count("shoal_dht_find_duration_seconds", harness.Labels{"result": "timeout"})
		}
		return found, none, late, nil
	}
	found0, none0, late0, err := finds()
	if err != nil {
		return nil, err
	}
	k := min(e.cfg.Lookups, n-1)
	r := &LookupResult{Blobs: n, Asked: n * k}
	failed := make([]bool, n*k)
	begin := time.Now()
	for i, node := range f.nodes {
		others := rand.Perm(n - 1)[:k]
		for j, o := range others {
			if o >= i {
				o++ // skip the node's own blob
			}
			wg.Go(func() { failed[i*k+j] = getBlob(ctx, node, repo, blobs[o], 64<<10) != nil })
		}
	}
	wg.Wait()
	r.Seconds = time.Since(begin).Seconds()
	found1, none1, late1, err := finds()
	if err != nil {
		return nil, err
	}
	for _, x := range failed {
		if x {
			r.Failed++
		}
	}
	r.OriginGets = e.proxy.Total(harness.KindBlob).GETs
	r.FoundNone = none1 - none0
	r.TimedOut = late1 - late0
	r.Lookups = found1 - found0 + r.FoundNone + r.TimedOut
	return r, nil
}

// getBlob fetches d through node and checks it.
func getBlob(ctx context.Context, node *harness.Node, repo string, d digest.Digest, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return harness.FetchBlob(ctx, node.URL, repo, harness.Descriptor{Digest: d, Size: size})
}

// profileSeconds is how long a rollout's CPU profiles last.
const profileSeconds = 10

// saveProfile writes a CPU profile of the node at adminURL (run with --pprof) to path.
func saveProfile(ctx context.Context, adminURL, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", adminURL, profileSeconds), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
