package harness

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
)

// Machine says what the figures were measured on: hashing (SHA-NI) and encryption (AES-NI)
// are most of the work of a transfer between nodes on one machine.
type Machine struct {
	Cores       int    `json:"cores"`
	CPU         string `json:"cpu"`
	SHANI       bool   `json:"sha_ni"`
	AESNI       bool   `json:"aes_ni"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	OS          string `json:"os"`
	Go          string `json:"go"`
}

func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown CPU", OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
	lines:
		for _, line := range strings.Split(string(b), "\n") {
			key, val, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(key) {
			case "model name":
				m.CPU = strings.TrimSpace(val)
			case "flags":
				flags := strings.Fields(val)
				m.SHANI = slices.Contains(flags, "sha_ni")
				m.AESNI = slices.Contains(flags, "aes")
			default:
				continue
			}
			if m.CPU != "unknown CPU" && (m.SHANI || m.AESNI) {
				break lines // the first processor says it for all
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryBytes = kb << 10
		}
	}
	return m
}

func (m Machine) String() string {
	var accel []string
	if m.SHANI {
		accel = append(accel, "SHA-NI")
	}
	if m.AESNI {
		accel = append(accel, "AES-NI")
	}
	s := fmt.Sprintf("%d cores (%s", m.Cores, m.CPU)
	if len(accel) > 0 {
		s += ", " + strings.Join(accel, ", ")
	}
	s += ")"
	if m.MemoryBytes > 0 {
		s += fmt.Sprintf(", %.0f GiB", float64(m.MemoryBytes)/(1<<30))
	}
	return s + ", " + m.OS + ", " + m.Go
}
