package prefetcher

import (
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/prefetch"
)

func TestPlatformMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		want, have string
		match      bool
	}{
		{"linux/amd64", "linux/amd64", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm/v7", "linux/arm/v6", false},
		{"linux/amd64", "windows/amd64", false},
		{"linux/amd64", "linux/arm64", false},
		// containerd's names: arm64 is arm64/v8 whichever way it is spelt, and aarch64 and
		// x86_64 are arm64 and amd64.
		{"linux/aarch64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/aarch64", true},
		{"linux/x86_64", "linux/amd64", true},
		{"linux/arm64/v8", "linux/arm64/v9", false},
		// No variant asked for: every variant of the architecture.
		{"linux/arm", "linux/arm/v6", true},
		{"linux/amd64", "linux/amd64/v3", true},
	}
	for _, tt := range tests {
		want, err := prefetch.ParsePlatform(tt.want)
		if err != nil {
			t.Fatal(err)
		}
		p, err := prefetch.ParsePlatform(tt.have)
		if err != nil {
			t.Fatal(err)
		}
		have := specs.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
		if got := matches(want, have); got != tt.match {
			t.Errorf("%s matches %s = %v, want %v", tt.want, tt.have, got, tt.match)
		}
	}
	// What an index entry says beyond OS, architecture and variant does not keep it out.
	have := specs.Platform{OS: "linux", Architecture: "amd64", OSFeatures: []string{"sse4"}}
	if !matches(prefetch.Platform{OS: "linux", Architecture: "amd64"}, have) {
		t.Errorf("linux/amd64 matches %+v = false, want true", have)
	}
}
