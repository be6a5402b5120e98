package registryapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestParsePath(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x").String()
	tests := []struct {
		path string
		want route
		err  error
	}{
		{"/v2", route{kind: kindBase}, nil},
		{"/v2/", route{kind: kindBase}, nil},
		{"/v2/a/blobs/" + d, route{kindBlob, "a", d, digest.Digest(d)}, nil},
		{"/v2/a/b/manifests/latest", route{kindManifest, "a/b", "latest", ""}, nil},
		{"/v2/a/manifests/" + d, route{kindManifest, "a", d, digest.Digest(d)}, nil},
		{"/v2/blobs/blobs/" + d, route{kindBlob, "blobs", d, digest.Digest(d)}, nil},
		{"/v2/manifests/blobs/manifests/x", route{kindManifest, "manifests/blobs", "x", ""}, nil},

		{"", route{}, errOutside},
		{"/", route{}, errOutside},
		{"/v2x", route{}, errOutside},
		{"/V2/", route{}, errOutside},
		{"v2/a/blobs/" + d, route{}, errOutside},
		{"/v2/a", route{}, errUnsupported},
		{"/v2/a/tags/list", route{}, errUnsupported},
		{"/v2/blobs/" + d, route{}, errUnsupported},
		{"/v2/a/blobs/%2E", route{kind: kindBlob}, ErrNameInvalid},
		{"/v2/a/blobs/", route{kind: kindBlob}, ErrNameInvalid},
		{"/v2/a/manifests/..", route{kind: kindManifest}, ErrNameInvalid},
		{"/v2/a/blobs/x", route{kind: kindBlob}, ErrDigestInvalid},
		{"/v2/a/manifests/x:y", route{kind: kindManifest}, ErrDigestInvalid},
		{"/v2/a/manifests/.x", route{kind: kindManifest}, ErrTagInvalid},
	}
	for _, tt := range tests {
		got, err := parsePath(tt.path)
		if !errors.Is(err, tt.err) || err != nil && tt.err == nil {
			t.Errorf("parsePath(%q) error = %v, want %v", tt.path, err, tt.err)
			continue
		}
		if err == nil && got != tt.want || err != nil && got.kind != tt.want.kind {
			t.Errorf("parsePath(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	d := digest.FromString("x").String()
	for _, s := range []string{
		"/v2/", "/v2", "/v2/library/alpine/blobs/" + d, "/v2/a/manifests/latest",
		"/v2/a/blobs/b/blobs/" + d, "/v2/foo%2Fbar/blobs/" + d, "/v2/a/../b/manifests/x",
		"/v2//a/manifests/x", "/v2/a/tags/list", "/v2/a/manifests/sha256:abc", "/x",
		"/v2/a/manifests/" + digest.SHA512.FromString("x").String(),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, err := parsePath(path)
		if err != nil {
			known := []error{errOutside, errUnsupported, ErrNameInvalid, ErrTagInvalid, ErrDigestInvalid}
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("parsePath(%q) = %v: not one of the known errors", path, err)
		}
		switch rt.kind {
		case kindBase:
			if path != "/v2" && path != "/v2/" {
				t.Fatalf("parsePath(%q) = base", path)
			}
			return
		case kindBlob, kindManifest:
		default:
			t.Fatalf("parsePath(%q) = kind %v without error", path, rt.kind)
		}
		// What was accepted re-validates and is exactly what the path said.
		if err := ValidateName(rt.name); err != nil {
			t.Fatalf("parsePath(%q) accepted name %q: %v", path, rt.name, err)
		}
		if err := ValidateReference(rt.reference); err != nil {
			t.Fatalf("parsePath(%q) accepted reference %q: %v", path, rt.reference, err)
		}
		if rt.kind == kindBlob && rt.digest == "" || rt.digest != "" && rt.digest.String() != rt.reference {
			t.Fatalf("parsePath(%q) = digest %q for reference %q", path, rt.digest, rt.reference)
		}
		if strings.ContainsAny(rt.name+rt.reference, "%\x00") || strings.Contains(rt.name, "..") {
			t.Fatalf("parsePath(%q) accepted %q %q", path, rt.name, rt.reference)
		}
		seg := map[kind]string{kindBlob: "blobs", kindManifest: "manifests"}[rt.kind]
		if rebuilt := "/v2/" + rt.name + "/" + seg + "/" + rt.reference; rebuilt != path {
			t.Fatalf("parsePath(%q) = %+v, which rebuilds to %q", path, rt, rebuilt)
		}
	})
}
