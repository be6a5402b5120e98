package fleet

import (
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want float64
	}{
		{"250mbit", 250e6},
		{"1gbit", 1e9},
		{"1Gbit", 1e9},
		{"1.5gbit", 1.5e9},
		{"100kbit", 100e3},
		{"1mibit", 1 << 20},
		{"10mbps", 80e6},
		{"800bit", 800},
	} {
		if got, err := ParseRate(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "fast", "0mbit", "-1gbit", "1 gbit", "1gb", "mbit", "1e3mbit", "1gbit; rm -rf /"} {
		if got, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", bad, got)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct{ p, want float64 }{{0.5, 5}, {0.9, 9}, {1, 10}, {0, 1}} {
		if got := percentile(v, tt.p); got != tt.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile([]float64{3}, 0.9); got != 3 {
		t.Errorf("percentile of one value = %v", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of none = %v", got)
	}
}

func TestCPUMeter(t *testing.T) {
	busy, total, err := readCPU()
	if err != nil || total == 0 || busy > total {
		t.Fatalf("readCPU() = %d busy of %d, %v", busy, total, err)
	}
	m := startCPU()
	x := 0
	for i := range 20_000_000 {
		x += i
	}
	_ = x
	frac, secs := m.used()
	if frac < 0 || frac > 1 || secs < 0 {
		t.Errorf("used() = %v of the machine, %v CPU-s", frac, secs)
	}
}
