package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat on Linux.
const userHZ = 100

// cpuSeconds is the user plus system CPU time process pid has used so far, all threads.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces; the fields after it do not.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of the line; f starts at field 3.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return float64(utime+stime) / userHZ, nil
}

// cpuMeter measures the CPU time of named processes over a span.
type cpuMeter struct {
	pids  map[string]int
	start map[string]float64
}

func startCPU(pids map[string]int) cpuMeter {
	m := cpuMeter{pids: pids, start: map[string]float64{}}
	for name, pid := range pids {
		if s, err := cpuSeconds(pid); err == nil {
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
		end, err := cpuSeconds(pid)
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
