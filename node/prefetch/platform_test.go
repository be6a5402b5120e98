package prefetch

import "testing"

func TestParsePlatform(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Platform
	}{
		{"linux/amd64", Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/arm64/v8", Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{"windows/amd64", Platform{OS: "windows", Architecture: "amd64"}},
	}
	for _, tt := range tests {
		got, err := ParsePlatform(tt.in)
		if err != nil || got != tt.want || got.String() != tt.in {
			t.Errorf("ParsePlatform(%q) = %+v, %v; want %+v, printed as given", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "linux", "linux/", "linux/amd64/v1/x", "Linux/amd64", "linux/amd 64"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) succeeded, want an error", bad)
		}
	}
}
