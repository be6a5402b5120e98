package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// cpuMeter measures the CPU time of named processes over a span.
type cpuMeter struct {
	pids  map[string]int
	start map[string]float64
}

func startCPU(pids map[string]int) cpuMeter {
	m := cpuMeter{pids: pids, start: map[string]float64{}}
	for name, pid := range pids {
		if s, err := harness.ProcessCPU(pid); err == nil {
			m.start[name] = s
		}
	}
	return m
}

// perGB returns each process's CPU seconds since start per 1e9 bytes moved.
func (m cpuMeter) perGB(bytes int64) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range m.pids {
		start, ok := m.start[name]
		end, err := harness.ProcessCPU(pid)
		if !ok || err != nil {
			continue
		}
		out[name] = (end - start) / (float64(bytes) / 1e9)
	}
	return out
}

// medianCPU takes the median of each process's figure over runs.
func medianCPU(runs []map[string]float64) map[string]float64 {
	all := map[string][]float64{}
	for _, r := range runs {
		for k, v := range r {
			all[k] = append(all[k], v)
		}
	}
	out := map[string]float64{}
	for k, v := range all {
		out[k] = median(v)
	}
	return out
}

// cpuString renders CPU seconds per GB by process, in the order given.
func cpuString(m map[string]float64, order ...string) string {
	var parts []string
	total := 0.0
	for _, k := range order {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
			total += v
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains(order, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]))
		total += m[k]
	}
	return fmt.Sprintf("%s; total %.2f CPU-s/GB", strings.Join(parts, ", "), total)
}
