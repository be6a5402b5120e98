package prefetcher

import (
	"slices"
	"strings"

	"github.com/containerd/platforms"
	specs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/node/prefetch"
)

// matches reports whether an index entry for have serves the platform want: containerd's
// matcher, which normalises both (arm64 is arm64/v8, aarch64 is arm64, arm is arm/v7), on
// OS, architecture and variant. A platform asked for without a variant takes every variant
// of its architecture, and what an entry says beyond these three (OS version, features)
// does not keep it out.
func matches(want prefetch.Platform, have specs.Platform) bool {
	h := specs.Platform{OS: have.OS, Architecture: have.Architecture, Variant: have.Variant}
	if want.Variant == "" {
		h.Variant = ""
	}
	return platforms.NewMatcher(specs.Platform{OS: want.OS, Architecture: want.Architecture, Variant: want.Variant}).Match(h)
}

func matchAny(ps []prefetch.Platform, have specs.Platform) bool {
	return slices.ContainsFunc(ps, func(p prefetch.Platform) bool { return matches(p, have) })
}

func platformList(ps []prefetch.Platform) string {
	if len(ps) == 0 {
		return "any platform"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}
