package sim

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
)

// profilePath is file with name inserted before its extension.
func profilePath(file, name string) string {
	ext := filepath.Ext(file)
	return strings.TrimSuffix(file, ext) + "-" + name + ext
}

// watchHeap samples the heap every few real seconds, outside the bubble, and writes a heap
// profile to file whenever the live heap passes its highest so far by a tenth, and a
// goroutine profile to file.goroutine likewise. The function it returns stops the sampling
// and gives the peaks seen.
func watchHeap(t *testing.T, file string) func() memPeaks {
	t.Helper()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	var (
		mu   sync.Mutex
		peak memPeaks
	)
	sample := func() {
		metrics.Read(samples)
		live, stacks := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		g := runtime.NumGoroutine()
		mu.Lock()
		defer mu.Unlock()
		if g > peak.goroutines*11/10 {
			writeProfile(t, file+".goroutine", "goroutine")
		}
		peak.goroutines = max(peak.goroutines, g)
		if live > peak.heap*11/10 {
			writeProfile(t, file, "heap")
		}
		peak.heap = max(peak.heap, live)
		peak.stacks = max(peak.stacks, stacks)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				sample()
			}
		}
	})
	return func() memPeaks {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// memPeaks are the most live heap and goroutine stack bytes seen, and the most goroutines.
type memPeaks struct {
	heap, stacks uint64
	goroutines   int
}

// writeProfile writes the named runtime profile to file.
func writeProfile(t *testing.T, file, name string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Errorf("%s profile: %v", name, err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		t.Errorf("%s profile: %v", name, err)
	}
}
