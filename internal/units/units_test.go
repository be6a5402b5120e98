package units

import "testing"

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false}, {"4096", 4096, false}, {"512MiB", 512 << 20, false}, {"10GiB", 10 << 30, false},
		{"1.5GB", 1500000000, false}, {"2g", 2 << 30, false}, {"64KiB", 64 << 10, false}, {" 3 MiB ", 3 << 20, false},
		{"", 0, true}, {"-1", 0, true}, {"MiB", 0, true}, {"1e30", 0, true}, {"NaN", 0, true}, {"5 parsecs", 0, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestSizeFlag(t *testing.T) {
	t.Parallel()
	var s Size = 4 << 20
	if got := s.String(); got != "4MiB" {
		t.Errorf("String() = %q, want 4MiB", got)
	}
	if err := s.Set("10GiB"); err != nil || s != 10<<30 || s.String() != "10GiB" {
		t.Errorf("Set(10GiB) = %v, value %d %q", err, s, s.String())
	}
	if err := s.Set("ten"); err == nil || s != 10<<30 {
		t.Errorf("Set(ten) = %v, value %d; want an error and the value unchanged", err, s)
	}
	for n, want := range map[int64]string{0: "0", 1000: "1000", 64 << 10: "64KiB", 3 << 20: "3MiB", 5 << 30: "5GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestHuman(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 24 << 20: "24.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Human(n); got != want {
			t.Errorf("Human(%d) = %q, want %q", n, got, want)
		}
	}
}
