// Package units reads and writes byte counts with units (512MiB, 10GiB, 1.5GB, 4096), for
// the CLI's flags and the project's tools.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a byte count written with an optional unit: 512MiB, 10GiB, 1.5GB, 4096. It is a
// flag.Value.
type Size int64

func (s *Size) String() string { return Format(int64(*s)) }

// Set parses v with Parse.
func (s *Size) Set(v string) error {
	n, err := Parse(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// Parse reads a non-negative byte count with an optional unit suffix (case-insensitive).
func Parse(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := 1.0
	for _, u := range sizeUnits {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f {
		return 0, fmt.Errorf("%q is not a size (examples: 4096, 512MiB, 10GiB)", v)
	}
	bytes := f * mult
	if bytes >= 1<<62 {
		return 0, fmt.Errorf("%q is too large", v)
	}
	return int64(bytes), nil
}

// Format writes n with the largest binary unit that divides it exactly.
func Format(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// Human writes n for people: one decimal in the largest binary unit it reaches, e.g.
// "1.5 GiB", "512.0 KiB", "17 B".
func Human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
