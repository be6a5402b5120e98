package registryapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"alpine", true},
		{"library/alpine", true},
		{"a/b/c/d", true},
		{"a.b_c__d-e--f/g", true},
		{"0", true},
		{strings.Repeat("a", MaxNameLength), true},
		{strings.Repeat("a", MaxNameLength+1), false},
		{"", false},
		{"Alpine", false},
		{"a/", false},
		{"/a", false},
		{"a//b", false},
		{"a/../b", false},
		{"a..b", false},
		{"a___b", false},
		{"a_-b", false},
		{"-a", false},
		{"a-", false},
		{"a b", false},
		{"a%2Fb", false},
		{"a\x00", false},
		{"é", false},
	} {
		if err := ValidateName(tt.name); (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestValidateReference(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	for _, tt := range []struct {
		ref string
		err error
	}{
		{"latest", nil},
		{"_x", nil},
		{"v1.2.3-rc_1", nil},
		{"sha256", nil},
		{strings.Repeat("t", 128), nil},
		{d.String(), nil},
		{digest.SHA384.FromString("x").String(), nil},
		{digest.SHA512.FromString("x").String(), nil},
		{strings.Repeat("t", 129), ErrTagInvalid},
		{"", ErrTagInvalid},
		{".x", ErrTagInvalid},
		{"-x", ErrTagInvalid},
		{"a/b", ErrTagInvalid},
		{"a:b", ErrDigestInvalid},
		{"sha256:", ErrDigestInvalid},
		{"sha256:" + strings.ToUpper(d.Encoded()), ErrDigestInvalid},
		{"sha256:" + d.Encoded()[1:], ErrDigestInvalid},
		{"sha256:" + d.Encoded() + "0", ErrDigestInvalid},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", ErrDigestInvalid},
		{"sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", ErrDigestInvalid},
		{"SHA256:" + d.Encoded(), ErrDigestInvalid},
	} {
		if err := ValidateReference(tt.ref); !errors.Is(err, tt.err) || err != nil && tt.err == nil {
			t.Errorf("ValidateReference(%q) = %v, want %v", tt.ref, err, tt.err)
		}
	}
}

func TestNormalizeNamespace(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ ns, want string }{
		{"docker.io", "docker.io"},
		{"index.docker.io", "docker.io"},
		{"registry-1.docker.io", "docker.io"},
		{"Registry-1.Docker.IO", "docker.io"},
		{"ghcr.io", "ghcr.io"},
		{"localhost", "localhost"},
		{"localhost:5000", "localhost:5000"},
		{"127.0.0.1:05000", "127.0.0.1:5000"},
		{"registry.example.com:443", "registry.example.com:443"},
		{"[::1]", "[::1]"},
		{"[0:0:0:0:0:0:0:1]:5000", "[::1]:5000"},
		{"[FE80::1]:80", "[fe80::1]:80"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},

		{"", ""},
		{"http://ghcr.io", ""},
		{"ghcr.io/foo", ""},
		{"user@ghcr.io", ""},
		{"user:pass@ghcr.io", ""},
		{"ghcr.io:", ""},
		{":5000", ""},
		{"ghcr.io:0", ""},
		{"ghcr.io:65536", ""},
		{"ghcr.io:-1", ""},
		{"ghcr.io:5000:1", ""},
		{"ghcr.io?x", ""},
		{"ghcr.io#x", ""},
		{"ghcr io", ""},
		{"ghcr_io", ""},
		{".ghcr.io", ""},
		{"ghcr.io.", ""},
		{"-a.io", ""},
		{"a-.io", ""},
		{strings.Repeat("a", 64) + ".io", ""},
		{strings.Repeat("a.", 127) + "io", ""},
		{"::1", ""},
		{"[::1", ""},
		{"[::1]5000", ""},
		{"[::1]:", ""},
		{"[fe80::1%eth0]", ""},
		{"[127.0.0.1]", ""},
		{"[]", ""},
		{"bücher.example", ""},
	} {
		got, err := NormalizeNamespace(tt.ns)
		if got != tt.want || (err == nil) != (tt.want != "") || err != nil && !errors.Is(err, ErrNamespaceInvalid) {
			t.Errorf("NormalizeNamespace(%q) = %q, %v, want %q", tt.ns, got, err, tt.want)
		}
	}
}

func FuzzNormalizeNamespace(f *testing.F) {
	for _, s := range []string{"docker.io", "127.0.0.1:5000", "[::1]:5000", "http://x", "a b", "@evil", "[fe80::1%eth0]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		got, err := NormalizeNamespace(ns)
		if err != nil {
			return
		}
		if len(got) > maxNamespaceLength || strings.ContainsAny(got, "/@?#% \t\r\n") {
			t.Fatalf("NormalizeNamespace(%q) = %q: not a plain host[:port]", ns, got)
		}
		again, err := NormalizeNamespace(got)
		if err != nil || again != got {
			t.Fatalf("NormalizeNamespace(%q) = %q, which normalises to %q, %v", ns, got, again, err)
		}
	})
}
