package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
	"github.com/shoal-dev/shoal/tracker"
)

// maxInflight caps the requests of an open-loop step on the way at once; a slot that finds
// the cap reached is dropped and counted, so an overloaded tracker shows as a shortfall
// rather than as an ever longer queue inside the load generator.
const maxInflight = 512

// env is a set of trackers side by side and the identities that load them.
type env struct {
	trackers []*harness.Tracker
	urls     []string
	ids      []*identity
	meter    *meter
	name     string // names the images of this set's steps
	steps    int
	checks   bool // the clients check members' addresses as a node does
}

// stepResult is one step's figures.
type stepResult struct {
	Trackers int    `json:"trackers"`
	Step     string `json:"step"`
	Mode     string `json:"mode"` // open (fixed rate), closed (workers back to back), holders
	// Open loop: the offered rate of node operations (announces, lease asks, releases).
	OfferedOps float64 `json:"offered_ops_per_second,omitempty"`
	Workers    int     `json:"workers,omitempty"` // closed loop
	Seconds    float64 `json:"seconds"`

	Issued  int64 `json:"ops_issued"`
	Dropped int64 `json:"slots_dropped,omitempty"` // open loop: maxInflight was reached
	Idle    int64 `json:"slots_idle,omitempty"`    // no identity left to start
	// SustainedOps is the node operations that succeeded per second.
	SustainedOps float64  `json:"sustained_ops_per_second"`
	Ratio        float64  `json:"sustained_over_offered,omitempty"`
	Ops          opCounts `json:"ops"`

	// HTTP requests the trackers answered with 200, per second, in all and by tracker.
	Answered      float64            `json:"requests_answered_per_second"`
	PerTracker    []int64            `json:"requests_answered_by_tracker"`
	Latency       latency            `json:"latency"`
	PacingLag     *latency           `json:"pacing_lag,omitempty"` // open loop: slots dispatched late by
	HTTPErrors    map[string]int64   `json:"http_errors,omitempty"`
	Errors        int64              `json:"errors"` // HTTP errors and failed operations
	Connections   int64              `json:"connections_opened"`
	HandlerMeanUs map[string]float64 `json:"tracker_handler_mean_us,omitempty"` // the trackers' own timing, by path

	TrackerCPU      float64   `json:"tracker_cpu_seconds"` // all trackers
	TrackerCPUBy    []float64 `json:"tracker_cpu_seconds_by_tracker"`
	TrackerCPUPer1k float64   `json:"tracker_cpu_seconds_per_1k_requests"`
	TrackerRSS      int64     `json:"tracker_rss_bytes"`      // most VmRSS sampled, largest tracker
	TrackerPeak     int64     `json:"tracker_peak_rss_bytes"` // VmHWM since the tracker started
	GeneratorCPU    float64   `json:"generator_cpu_seconds"`
	CoresBusy       float64   `json:"cores_busy"` // (trackers + generator) CPU over the step's time
	// OtherCPU is what other processes took of the machine meanwhile, and of it Niced what
	// processes at a positive nice value took.
	OtherCPU    float64 `json:"other_cpu_seconds"`
	Niced       float64 `json:"other_niced_cpu_seconds"`
	MachineBusy float64 `json:"machine_cores_busy"` // all processes

	Checks []check `json:"checks,omitempty"`
}

// driven is what a step's driver reports.
type driven struct {
	issued, dropped, idle int64
	lags                  []time.Duration
}

// open offers rate operations per second for d: each slot, at its time, takes the request
// due and sends it without waiting for the answers to earlier ones.
func (r *rollout) open(ctx context.Context, rate float64, d time.Duration) driven {
	total := int64(rate * d.Seconds())
	out := driven{lags: make([]time.Duration, 0, total)}
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for slot := int64(0); slot < total; {
		now := time.Now()
		due := min(int64(now.Sub(start).Seconds()*rate)+1, total)
		for ; slot < due; slot++ {
			out.lags = append(out.lags, now.Sub(start.Add(time.Duration(float64(slot)/rate*float64(time.Second)))))
			select {
			case sem <- struct{}{}:
			default:
				out.dropped++
				continue
			}
			e, ok := r.take(now)
			if !ok {
				<-sem
				out.idle++
				continue
			}
			out.issued++
			wg.Go(func() {
				defer func() { <-sem }()
				r.do(ctx, e)
			})
		}
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
	}
	return out
}

// closed runs workers that each send the next request as soon as the last is answered,
// for d.
func (r *rollout) closed(ctx context.Context, workers int, d time.Duration) driven {
	deadline := time.Now().Add(d)
	var issued, idle atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				e, ok := r.take(time.Now())
				if !ok {
					idle.Add(1)
					time.Sleep(time.Millisecond) // every identity started: let the due requests come
					continue
				}
				issued.Add(1)
				r.do(ctx, e)
			}
		})
	}
	wg.Wait()
	return driven{issued: issued.Load(), idle: idle.Load()}
}

// holders has every identity announce, once, that it holds the blobs of im, with workers
// announcing at once: a fleet that holds the previous image when the next rollout starts.
func (e *env) holders(ctx context.Context, im image, workers int) (driven, opCounts) {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	states := make([]tracker.BlobState, layers)
	for i := range states {
		states[i] = tracker.BlobState{Digest: im[i], Size: layerBytes, ChunkSize: chunkSize, Done: layerBytes, Complete: true}
	}
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(e.ids)) {
					return
				}
				c, err := e.ids[i].client(e.urls, e.checks)
				if err != nil {
					panic(err) // fixed options: a bug here
				}
				if _, err := c.Announce(ctx, states); err != nil {
					failed.Add(1)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	n := min(next.Load(), int64(len(e.ids)))
	ops := opCounts{Announces: n, Failed: map[string]int64{}}
	if f := failed.Load(); f > 0 {
		ops.Failed["announce: no tracker available"] = f
	}
	return driven{issued: n}, ops
}

// run measures one step: drive sends its requests; the step's figures come from the
// identities' transports, the trackers' /proc entries and their metrics.
func (e *env) run(ctx context.Context, res *stepResult, drive func() (driven, opCounts)) error {
	before, err := e.handlerTimes(ctx)
	if err != nil {
		return err
	}
	rec := newRecorder(len(e.trackers))
	pids := make([]int, len(e.trackers))
	for i, t := range e.trackers {
		pids[i] = t.Pid()
	}
	self := os.Getpid()
	cpu0 := make([]float64, len(pids))
	for i, pid := range pids {
		cpu0[i] = cpuOf(pid)
	}
	gen0, dials0 := cpuOf(self), e.meter.dials.Load()
	machine := harness.StartMachineCPU()

	sampled := make(chan int64, 1)
	stop := make(chan struct{})
	go func() {
		var most int64
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, pid := range pids {
				if m, err := harness.ProcessMemory(pid); err == nil {
					most = max(most, m.RSS)
				}
			}
			select {
			case <-stop:
				sampled <- most
				return
			case <-tick.C:
			}
		}
	}()

	e.meter.rec.Store(rec)
	start := time.Now()
	d, ops := drive()
	driven := time.Now()
	// Releases go out in the background: wait for the last answers before closing the books.
	drained := harness.Poll(ctx, "requests in flight to end", 3*time.Second, func() error {
		if n := e.meter.inflight.Load(); n > 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	e.meter.rec.Store(nil)
	res.TrackerCPUBy = make([]float64, len(pids))
	for i, pid := range pids {
		res.TrackerCPUBy[i] = cpuOf(pid) - cpu0[i]
		res.TrackerCPU += res.TrackerCPUBy[i]
	}
	gen1 := cpuOf(self)
	_, busy := machine.Used()
	niced := machine.Niced()
	close(stop)
	res.TrackerRSS = <-sampled
	for _, pid := range pids {
		if m, err := harness.ProcessMemory(pid); err == nil {
			res.TrackerPeak = max(res.TrackerPeak, m.Peak)
		}
	}
	if drained != nil && ctx.Err() == nil {
		res.Checks = append(res.Checks, check{Scenario: res.name(), Name: "answers in", Result: drained.Error(), Target: "all within 3 s of the step's end"})
	}

	rec.mu.Lock()
	elapsed := driven.Sub(start)
	if rec.last.After(driven) {
		elapsed = rec.last.Sub(start)
	}
	res.Latency = summarize(rec.latencies)
	res.PerTracker = rec.answers
	var answered int64
	for _, n := range rec.answers {
		answered += n
	}
	res.HTTPErrors = rec.errs
	for _, n := range rec.errs {
		res.Errors += n
	}
	rec.mu.Unlock()

	res.Seconds = elapsed.Seconds()
	res.Issued, res.Dropped, res.Idle = d.issued, d.dropped, d.idle
	if d.lags != nil {
		l := summarize(d.lags)
		res.PacingLag = &l
	}
	res.Ops = ops
	var failed int64
	for _, n := range ops.Failed {
		failed += n
	}
	res.Errors += failed
	res.SustainedOps = float64(d.issued-failed) / res.Seconds
	if res.OfferedOps > 0 {
		res.Ratio = res.SustainedOps / res.OfferedOps
	}
	res.Answered = float64(answered) / res.Seconds
	res.Connections = e.meter.dials.Load() - dials0
	if answered > 0 {
		res.TrackerCPUPer1k = res.TrackerCPU / (float64(answered) / 1000)
	}
	res.GeneratorCPU = gen1 - gen0
	res.CoresBusy = (res.TrackerCPU + res.GeneratorCPU) / res.Seconds
	res.OtherCPU = max(0, busy-res.TrackerCPU-res.GeneratorCPU)
	res.Niced = min(res.OtherCPU, niced)
	res.MachineBusy = busy / res.Seconds

	after, err := e.handlerTimes(ctx)
	if err != nil {
		return err
	}
	res.HandlerMeanUs = map[string]float64{}
	for path, a := range after {
		b := before[path]
		if n := a.count - b.count; n > 0 {
			res.HandlerMeanUs[path] = (a.sum - b.sum) / float64(n) * 1e6
		}
	}
	return nil
}

type handlerTime struct {
	sum   float64
	count uint64
}

// handlerTimes sums the trackers' shoal_tracker_request_duration_seconds by path.
func (e *env) handlerTimes(ctx context.Context) (map[string]handlerTime, error) {
	out := map[string]handlerTime{}
	for _, t := range e.trackers {
		m, err := t.Metrics(ctx)
		if err != nil {
			return nil, err
		}
		for _, path := range []string{tracker.PathAnnounce, tracker.PathLease} {
			h := out[path]
			h.sum += m.Sum("shoal_tracker_request_duration_seconds", harness.Labels{"path": path})
			h.count += m.Count("shoal_tracker_request_duration_seconds", harness.Labels{"path": path})
			out[path] = h
		}
	}
	return out, nil
}

// checkState compares each tracker's /swarms for the blobs of im with what the step's
// identities told it. It is skipped when requests failed: the trackers then rightly hold
// less.
func (e *env) checkState(ctx context.Context, res *stepResult, im image, want expected) error {
	c := check{Scenario: res.name(), Name: "tracker state", Target: "each tracker holds every member announced, and those complete"}
	if res.Errors > 0 {
		c.Result, c.OK = fmt.Sprintf("not checked: %d errors", res.Errors), true
		res.Checks = append(res.Checks, c)
		return nil
	}
	var bad []string
	for ti, t := range e.trackers {
		sw, err := t.Swarms(ctx)
		if err != nil {
			return err
		}
		got := map[string]tracker.SwarmView{}
		for _, v := range sw.Swarms {
			got[string(v.Digest)] = v
		}
		for i, d := range im {
			v := got[string(d)]
			if v.Members < want.MembersMin[i] || v.Members > want.MembersMax[i] || v.Complete != want.Complete[i] {
				bad = append(bad, fmt.Sprintf("tracker %d layer %d: %d members (%d complete), want %d-%d (%d complete)",
					ti+1, i, v.Members, v.Complete, want.MembersMin[i], want.MembersMax[i], want.Complete[i]))
			}
		}
	}
	c.OK = len(bad) == 0
	c.Result = fmt.Sprintf("%d members, %d complete, on each of %d trackers", want.MembersMin[0], want.Complete[0], len(e.trackers))
	if !c.OK {
		c.Result = fmt.Sprint(bad)
	}
	res.Checks = append(res.Checks, c)
	return nil
}

// rolloutStep runs one step of a rollout of a fresh image: open loop at rate, or closed
// loop with workers when rate is 0.
func (e *env) rolloutStep(ctx context.Context, rate float64, workers int, d time.Duration) (stepResult, error) {
	e.steps++
	im := newImage(fmt.Sprintf("%s step %d", e.name, e.steps))
	r := newRollout(e.urls, e.checks, e.ids, im, uint64(e.steps))
	res := stepResult{Trackers: len(e.trackers), OfferedOps: rate}
	if rate > 0 {
		res.Mode, res.Step = "open", fmt.Sprintf("%.0f/s", rate)
	} else {
		res.Mode, res.Step, res.Workers = "closed", fmt.Sprintf("max, %d workers", workers), workers
	}
	err := e.run(ctx, &res, func() (driven, opCounts) {
		var dr driven
		if rate > 0 {
			dr = r.open(ctx, rate, d)
		} else {
			dr = r.closed(ctx, workers, d)
		}
		return dr, r.counts(time.Now())
	})
	if err != nil {
		return res, err
	}
	if res.Errors == 0 {
		// The tracker's promise: one node at a time fetches a chunk from the origin, and
		// none once a member has it.
		res.Checks = append(res.Checks, check{
			Scenario: res.name(), Name: "origin leases",
			Result: fmt.Sprintf("%d granted for %d chunks", res.Ops.Granted, imageChunks),
			Target: "at most one a chunk", OK: res.Ops.Granted <= imageChunks,
		})
	}
	want := r.expect(time.Now())
	if err := e.checkState(ctx, &res, im, want); err != nil {
		return res, err
	}
	r.close()
	e.closeIdle()
	return res, ctx.Err()
}

// holdersStep runs the announces of the previous image by every identity.
func (e *env) holdersStep(ctx context.Context, workers int) (stepResult, error) {
	im := newImage(e.name + " held")
	res := stepResult{Trackers: len(e.trackers), Mode: "holders", Step: fmt.Sprintf("%d holders", len(e.ids)), Workers: workers}
	err := e.run(ctx, &res, func() (driven, opCounts) { return e.holders(ctx, im, workers) })
	if err != nil {
		return res, err
	}
	var want expected
	for i := range layers {
		want.MembersMin[i], want.MembersMax[i], want.Complete[i] = len(e.ids), len(e.ids), len(e.ids)
	}
	if err := e.checkState(ctx, &res, im, want); err != nil {
		return res, err
	}
	e.closeIdle()
	return res, ctx.Err()
}

// closeIdle closes the identities' idle connections, so a step starts with none (and
// thousands of identities times several trackers stay within the open-file limit).
func (e *env) closeIdle() {
	for _, id := range e.ids {
		id.transport.closeIdle()
	}
}

func (r stepResult) name() string { return fmt.Sprintf("%d tracker(s), %s", r.Trackers, r.Step) }
