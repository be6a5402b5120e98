package main

import "github.com/shoal-dev/shoal/test/internal/harness"

// cpuOf is process pid's CPU seconds so far, 0 when they cannot be read.
func cpuOf(pid int) float64 {
	s, _ := harness.ProcessCPU(pid)
	return s
}
