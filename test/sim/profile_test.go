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
// and gives the peak live heap in bytes and the most goroutines seen.
func watchHeap(t *testing.T, file string) func() (uint64, int) {
	t.Helper()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var (
		mu         sync.Mutex
		peak       uint64
		goroutines int
	)
	sample := func() {
		metrics.Read(samples)
		live := samples[0].Value.Uint64()
		g := runtime.NumGoroutine()
		mu.Lock()
		defer mu.Unlock()
		if g > goroutines*11/10 {
			writeProfile(t, file+".goroutine", "goroutine")
		}
		goroutines = max(goroutines, g)
		if live > peak*11/10 {
			writeProfile(t, file, "heap")
		}
		peak = max(peak, live)
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
	return func() (uint64, int) {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak, goroutines
	}
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
