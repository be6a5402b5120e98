package harness

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat on Linux.
const userHZ = 100

// ProcessCPU is the user plus system CPU time process pid has used so far, all threads, in
// seconds.
func ProcessCPU(pid int) (float64, error) {
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

// ProcessesCPU sums ProcessCPU over pids; a process that is gone counts nothing.
func ProcessesCPU(pids []int) float64 {
	var sum float64
	for _, pid := range pids {
		if s, err := ProcessCPU(pid); err == nil {
			sum += s
		}
	}
	return sum
}

// MachineCPU measures the whole machine's CPU use from /proc/stat.
type MachineCPU struct{ busy0, total0, nice0 uint64 }

// StartMachineCPU starts measuring.
func StartMachineCPU() MachineCPU {
	b, t, n, _ := readMachineCPU()
	return MachineCPU{b, t, n}
}

// Used returns the fraction of all cores' time spent not idle since the start, and that
// time in CPU seconds.
func (m MachineCPU) Used() (busy, seconds float64) {
	b, t, _, err := readMachineCPU()
	if err != nil || t <= m.total0 {
		return 0, 0
	}
	return float64(b-m.busy0) / float64(t-m.total0), float64(b-m.busy0) / userHZ
}

// Niced returns the CPU seconds processes at a positive nice value took since the start
// (part of Used's seconds).
func (m MachineCPU) Niced() float64 {
	_, _, n, err := readMachineCPU()
	if err != nil || n < m.nice0 {
		return 0
	}
	return float64(n-m.nice0) / userHZ
}

// readMachineCPU reads the machine's busy, total and niced CPU time in ticks: every field
// of the "cpu" line of /proc/stat but idle and iowait counts as busy (guest time is already
// in user).
func readMachineCPU() (busy, total, nice uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, 0, errors.New("/proc/stat: no cpu line")
	}
	for i, s := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
		if i == 1 {
			nice = v
		}
	}
	return busy, total, nice, nil
}

// Memory is a process's resident set, from /proc/<pid>/status.
type Memory struct {
	RSS  int64 // VmRSS: resident now, bytes
	Peak int64 // VmHWM: the most it has been resident, bytes
}

// ProcessMemory reads process pid's resident set.
func ProcessMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || key != "VmRSS" && key != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
	}
	return m, nil
}
