package sim

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Result is what one rollout did.
type Result struct {
	Name       string  `json:"name"`
	Nodes      int     `json:"nodes"`
	Tracker    bool    `json:"tracker"`
	Batches    int     `json:"batches"`
	ImageBytes int64   `json:"image_bytes"`
	ChunkSize  int64   `json:"chunk_size"`
	NodeRate   float64 `json:"node_rate"`
	OriginRate float64 `json:"origin_rate"`

	// OriginBytes is what the origin sent; OriginRatio that over the image.
	OriginBytes int64   `json:"origin_bytes"`
	OriginRatio float64 `json:"origin_ratio"`
	// Bound is the fastest one node can have the image: across the origin's link once or
	// across its own link, whichever is slower (seconds).
	Bound       float64 `json:"bound_s"`
	BoundOrigin float64 `json:"bound_origin_s"`
	BoundNode   float64 `json:"bound_node_s"`
	// Times are the live nodes' pull times, sorted (seconds); P50, P99 and Max of them, and
	// each over Bound.
	Times    []float64 `json:"times_s"`
	P50      float64   `json:"p50_s"`
	P99      float64   `json:"p99_s"`
	Max      float64   `json:"max_s"`
	P50Ratio float64   `json:"p50_ratio"`
	P99Ratio float64   `json:"p99_ratio"`
	MaxRatio float64   `json:"max_ratio"`
	// Rollout is from the first pull's start to the last one's end (seconds).
	Rollout float64 `json:"rollout_s"`
	// Incomplete counts live nodes that did not finish; Dead the nodes that died.
	Incomplete int    `json:"incomplete"`
	Dead       int    `json:"dead"`
	FirstError string `json:"first_error,omitempty"`
	// Retries counts layer pulls that failed and were tried again; RetryError is one.
	Retries    int    `json:"retries"`
	RetryError string `json:"retry_error,omitempty"`
	// OriginNodes counts the nodes that took bytes from the origin.
	OriginNodes int `json:"origin_nodes"`
	// UploadMax is the busiest node's upload over the mean upload; UploadTop the five
	// busiest nodes' uploads over the mean, and the share of the image each took from the
	// origin, busiest first.
	UploadMax float64     `json:"upload_max_ratio"`
	UploadTop []TopUpload `json:"upload_top,omitempty"`
	// PerNodeSecond counts each request kind per node per second of pulling.
	PerNodeSecond Rates `json:"per_node_second"`
	// TrackerPeak is the most requests the tracker answered in one second.
	TrackerPeak int `json:"tracker_peak_rps,omitempty"`
	// Wall and CPU are the real seconds the simulation took, and the CPU seconds it used.
	Wall float64 `json:"wall_s"`
	CPU  float64 `json:"cpu_s"`
	// PeakHeap is the most live heap seen (bytes), PeakStacks the most goroutine stack
	// bytes and PeakGoroutines the most goroutines, sampled every few seconds when
	// -sim.memprofile is set.
	PeakHeap       uint64 `json:"peak_heap_bytes,omitempty"`
	PeakStacks     uint64 `json:"peak_stack_bytes,omitempty"`
	PeakGoroutines int    `json:"peak_goroutines,omitempty"`
}

// Rates are requests per node per second.
type Rates struct {
	Haves float64 `json:"have"`
	// Watches are the watches opened (p2p.Exchange.WatchHave), WatchAnswers the answers
	// they brought.
	Watches        float64 `json:"watch"`
	WatchAnswers   float64 `json:"watch_answer"`
	ChunkRequests  float64 `json:"chunk"`
	Lookups        float64 `json:"lookup"`
	Provides       float64 `json:"provide"`
	OriginRequests float64 `json:"origin"`
	Announces      float64 `json:"announce"`
	Leases         float64 `json:"lease"`
}

func (w *world) result() *Result {
	cfg := w.cfg
	image := int64(cfg.Layers) * cfg.LayerSize
	r := &Result{
		Name: cfg.Name, Nodes: cfg.Nodes, Tracker: cfg.Tracker, Batches: cfg.Batches,
		ImageBytes: image, ChunkSize: cfg.ChunkSize, NodeRate: cfg.NodeRate, OriginRate: cfg.OriginRate,
		OriginBytes: w.origin.sent.Load(),
		BoundOrigin: float64(image) / cfg.OriginRate,
		BoundNode:   float64(image) / cfg.NodeRate,
	}
	r.OriginRatio = float64(r.OriginBytes) / float64(image)
	r.Bound = max(r.BoundOrigin, r.BoundNode)
	var first, last time.Time
	var pulling time.Duration
	var c Stats
	var uploads []float64
	end := time.Now()
	for _, n := range w.nodes {
		uploads = append(uploads, float64(n.uploaded.Load()))
		r.Retries += n.retries
		if n.fromOrigin.Load() > 0 {
			r.OriginNodes++
		}
		if r.RetryError == "" && n.retryErr != nil {
			r.RetryError = n.retryErr.Error()
		}
		if n.dead.Load() {
			r.Dead++
		}
		if n.start.IsZero() {
			continue
		}
		if first.IsZero() || n.start.Before(first) {
			first = n.start
		}
		stop := n.done
		if stop.IsZero() {
			stop = end
		}
		pulling += stop.Sub(n.start)
		if stop.After(last) {
			last = stop
		}
		c.Haves += n.stats.Haves.Load()
		c.Watches += n.stats.Watches.Load()
		c.WatchAnswers += n.stats.WatchAnswers.Load()
		c.ChunkRequests += n.stats.ChunkRequests.Load()
		c.Lookups += n.stats.Lookups.Load()
		c.Provides += n.stats.Provides.Load()
		c.OriginRequests += n.stats.OriginRequests.Load()
		c.Announces += n.stats.Announces.Load()
		c.Leases += n.stats.Leases.Load()
		if n.dead.Load() {
			continue
		}
		if n.done.IsZero() {
			r.Incomplete++
			if r.FirstError == "" && n.err != nil {
				r.FirstError = n.err.Error()
			}
			continue
		}
		r.Times = append(r.Times, n.done.Sub(n.start).Seconds())
	}
	if n := len(w.nodes) - r.Dead; n > 0 && r.Incomplete > 0 && r.FirstError == "" {
		r.FirstError = "timed out"
	}
	slices.Sort(r.Times)
	r.P50, r.P99, r.Max = quantile(r.Times, 0.5), quantile(r.Times, 0.99), quantile(r.Times, 1)
	r.P50Ratio, r.P99Ratio, r.MaxRatio = r.P50/r.Bound, r.P99/r.Bound, r.Max/r.Bound
	r.Rollout = last.Sub(first).Seconds()
	if s := pulling.Seconds(); s > 0 {
		r.PerNodeSecond = Rates{
			Haves: float64(c.Haves) / s, Watches: float64(c.Watches) / s, WatchAnswers: float64(c.WatchAnswers) / s,
			ChunkRequests: float64(c.ChunkRequests) / s,
			Lookups:       float64(c.Lookups) / s, Provides: float64(c.Provides) / s,
			OriginRequests: float64(c.OriginRequests) / s,
			Announces:      float64(c.Announces) / s, Leases: float64(c.Leases) / s,
		}
	}
	var sum, most float64
	for _, u := range uploads {
		sum += u
		most = max(most, u)
	}
	if sum > 0 {
		mean := sum / float64(len(uploads))
		r.UploadMax = most / mean
		byUpload := slices.Clone(w.nodes)
		slices.SortFunc(byUpload, func(a, b *node) int { return cmp.Compare(b.uploaded.Load(), a.uploaded.Load()) })
		for _, n := range byUpload[:min(5, len(byUpload))] {
			top := TopUpload{
				Upload:       float64(n.uploaded.Load()) / mean,
				OriginChunks: float64(n.upOrigin.Load()) / mean,
				FromOrigin:   float64(n.fromOrigin.Load()) / float64(image),
			}
			if !n.done.IsZero() {
				top.Done = n.done.Sub(n.start).Seconds() / r.Bound
			}
			r.UploadTop = append(r.UploadTop, top)
		}
	}
	if w.tracker != nil {
		r.TrackerPeak = w.tracker.peak()
	}
	return r
}

// TopUpload is one of the busiest uploaders.
type TopUpload struct {
	Upload     float64 `json:"upload_ratio"`
	FromOrigin float64 `json:"from_origin_ratio"`
	// OriginChunks is its upload of the chunks it took from the origin, over the mean upload.
	OriginChunks float64 `json:"origin_chunks_upload_ratio"`
	// Done is when the node had the whole image, against the bound; 0 if it did not.
	Done float64 `json:"done_ratio,omitempty"`
}

// quantile is the q-quantile of sorted xs by the nearest rank; NaN if empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(len(xs)-1, i))]
}
