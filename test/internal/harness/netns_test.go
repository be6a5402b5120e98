package harness

import "testing"

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
