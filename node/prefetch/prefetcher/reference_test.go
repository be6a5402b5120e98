package prefetcher

import (
	"strings"
	"testing"
)

func TestParseImageRef(t *testing.T) {
	t.Parallel()
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in   string
		want string // String() of the result; "" means an error
	}{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.27", "docker.io/library/nginx:1.27"},
		{"library/nginx", "docker.io/library/nginx:latest"},
		{"team/app:v1", "docker.io/team/app:v1"},
		{"docker.io/nginx", "docker.io/library/nginx:latest"},
		{"index.docker.io/library/nginx:1", "docker.io/library/nginx:1"},
		{"registry-1.docker.io/team/app", "docker.io/team/app:latest"},
		{"ghcr.io/org/app:v2", "ghcr.io/org/app:v2"},
		{"GHCR.io/org/app", "ghcr.io/org/app:latest"},
		{"localhost/app", "localhost/app:latest"},
		{"localhost:5000/app:v1", "localhost:5000/app:v1"},
		{"127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1"},
		{"[::1]:5000/app:v1", "[::1]:5000/app:v1"},
		{"Registry/app", "registry/app:latest"},
		{"ghcr.io/org/app@" + d, "ghcr.io/org/app@" + d},
		{"ghcr.io/org/app:v1@" + d, "ghcr.io/org/app:v1@" + d},
		{"nginx@" + d, "docker.io/library/nginx@" + d},
		{"", ""},
		{"ghcr.io/Org/app", ""},
		{"ghcr.io/org/app:", ""},
		{"ghcr.io/org/app:v 1", ""},
		{"ghcr.io/org/app@sha256:short", ""},
		{"ghcr.io/org/app@md5:0123456789abcdef0123456789abcdef", ""},
		{"ghcr.io/", ""},
		{"http://ghcr.io/org/app", ""},
		{"user@ghcr.io/org/app", ""},
		{"ghcr.io:0/org/app", ""},
		{"ghcr.io/org//app", ""},
		{"ghcr.io/org/app:" + strings.Repeat("t", 129), ""},
		{strings.Repeat("a", 2000), ""},
	}
	for _, tt := range tests {
		got, err := parseImageRef(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseImageRef(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("parseImageRef(%q) = %v, want %s", tt.in, err, tt.want)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("parseImageRef(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func FuzzParseImageRef(f *testing.F) {
	for _, s := range []string{"nginx", "ghcr.io/org/app:v1", "[::1]:5000/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "localhost:5000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := parseImageRef(s)
		if err != nil {
			return
		}
		if ref.registry != "docker.io" && ref.registry != "localhost" && !strings.ContainsAny(ref.registry, ".:") {
			// A host named by an upper-case first component ("Reg/app", as Docker reads
			// it) reads as a docker.io repository once lower-cased: no round trip.
			return
		}
		again, err := parseImageRef(ref.String())
		if err != nil || again != ref {
			t.Errorf("parseImageRef(%q) = %+v, whose String %q parses to %+v, %v", s, ref, ref.String(), again, err)
		}
		if ref.reference() == "" || ref.registry == "" || ref.repo == "" {
			t.Errorf("parseImageRef(%q) = %+v, incomplete", s, ref)
		}
	})
}
