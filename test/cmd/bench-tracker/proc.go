package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// cpuOf is process pid's CPU seconds so far, 0 when they cannot be read.
func cpuOf(pid int) float64 {
	s, _ := harness.ProcessCPU(pid)
	return s
}

// machineCPU is the whole machine's CPU time so far, in seconds: busy (neither idle nor
// waiting for I/O), and of it what processes at a positive nice value took.
func machineCPU() (busy, niced float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var t [8]float64 // user nice system idle iowait irq softirq steal
	for i := range t {
		v, err := strconv.ParseFloat(f[i+1], 64)
		if err != nil {
			return 0, 0
		}
		t[i] = v / userHZ
	}
	return t[0] + t[1] + t[2] + t[5] + t[6] + t[7], t[1]
}

// userHZ is the unit of the CPU times in /proc/stat.
const userHZ = 100
