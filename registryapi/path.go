package registryapi

import (
	"errors"
	"strings"

	"github.com/opencontainers/go-digest"
)

// kind is what a request asks for; it labels metrics and picks the "unknown" error code.
type kind int

const (
	kindOther    kind = iota // outside /v2, or a /v2 endpoint this mirror does not serve
	kindBase                 // GET /v2/
	kindBlob                 // /v2/<name>/blobs/<digest>
	kindManifest             // /v2/<name>/manifests/<reference>
)

func (k kind) String() string {
	switch k {
	case kindBlob:
		return "blob"
	case kindManifest:
		return "manifest"
	}
	return "other"
}

var (
	// errOutside: the path is not under /v2; answered with a bare 404.
	errOutside = errors.New("not a registry path")
	// errUnsupported: a /v2 endpoint that a pull-only mirror does not serve (tags list,
	// referrers, uploads, catalog). 404 UNSUPPORTED lets containerd try the next host.
	errUnsupported = errors.New("unsupported endpoint")
)

// route is a parsed, validated request path.
type route struct {
	kind      kind
	name      string        // repository name, valid per ValidateName
	reference string        // tag or digest string (blobs: always a digest)
	digest    digest.Digest // set when reference is a digest
}

// parsePath parses the escaped path of a request. <name> may itself contain segments
// called "blobs" or "manifests", so the path is read from the right. Any percent-escape is
// refused: no valid name, tag or digest needs one, and decoding would let "%2F" or "%2E%2E"
// smuggle in separators. On error the returned route still carries the kind, when known.
func parsePath(p string) (route, error) {
	if p == "/v2" || p == "/v2/" {
		return route{kind: kindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, errOutside
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	var rt route
	if n >= 3 {
		switch segs[n-2] {
		case "blobs":
			rt.kind = kindBlob
		case "manifests":
			rt.kind = kindManifest
		}
	}
	if strings.ContainsAny(rest, "%\x00") {
		return rt, ErrNameInvalid
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return rt, ErrNameInvalid
		}
	}
	if rt.kind == kindOther {
		return rt, errUnsupported
	}
	// Checked before joining so that an endless path costs no allocation.
	if len(rest)-len(segs[n-1])-len(segs[n-2])-2 > MaxNameLength {
		return rt, ErrNameInvalid
	}
	rt.name = strings.Join(segs[:n-2], "/")
	if err := ValidateName(rt.name); err != nil {
		return rt, err
	}
	ref := segs[n-1]
	if rt.kind == kindBlob || strings.Contains(ref, ":") {
		d, err := ParseDigest(ref)
		if err != nil {
			return rt, err
		}
		rt.digest = d
	} else if err := ValidateTag(ref); err != nil {
		return rt, err
	}
	rt.reference = ref
	return rt, nil
}
