package prefetcher

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/registryapi"
)

// imageRef is a parsed image reference.
type imageRef struct {
	// registry is the registry key (as registryapi.NormalizeNamespace gives it), e.g.
	// "docker.io" or "127.0.0.1:5000".
	registry string
	// repo is the repository path, e.g. "library/nginx".
	repo string
	// tag is "" when only a digest was given.
	tag    string
	digest digest.Digest
}

// maxImageRefLength bounds a reference: a host, a repository name, a tag and a digest.
const maxImageRefLength = 1024

// parseImageRef parses registry-host[:port]/repo[:tag][@digest] and normalises it as Docker
// does: a first path component that has no '.' or ':' and is not "localhost" (and is lower
// case) is part of the repository on docker.io, and a docker.io repository without '/' is
// in library/. Without tag or digest the tag is "latest".
//
// go-containerregistry splits the reference; each part is then held to the grammar the
// node's /v2 mirror applies to every request, so a prefetch names exactly what a pull can.
func parseImageRef(s string) (imageRef, error) {
	bad := func(why string) (imageRef, error) {
		return imageRef{}, fmt.Errorf("invalid image reference %q: %s", truncate(s), why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxImageRefLength {
		return bad(fmt.Sprintf("longer than %d bytes", maxImageRefLength))
	}
	var ref imageRef
	base, dig, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		d, err := registryapi.ParseDigest(dig)
		if err != nil {
			return bad("bad digest")
		}
		ref.digest = d
	}
	// Docker also reads a first component with upper case as a host (a repository has
	// none); go-containerregistry does not, so such a host is set aside and the rest parsed
	// under one it always reads as a host.
	host := ""
	if first, rest, ok := strings.Cut(base, "/"); ok && strings.ToLower(first) != first && !strings.ContainsAny(first, ".:") {
		host, base = first, "localhost/"+rest
	}
	tag, err := name.NewTag(base, name.WithDefaultTag(""))
	if err != nil {
		return bad(err.Error())
	}
	if host == "" {
		host = tag.RegistryStr()
	}
	if ref.tag = tag.TagStr(); ref.tag != "" && registryapi.ValidateTag(ref.tag) != nil {
		return bad("bad tag")
	}
	if ref.registry, err = registryapi.NormalizeNamespace(host); err != nil {
		return bad("bad registry host")
	}
	ref.repo = tag.RepositoryStr()
	if ref.registry == registryapi.DockerHub && !strings.Contains(ref.repo, "/") {
		ref.repo = "library/" + ref.repo
	}
	if err := registryapi.ValidateName(ref.repo); err != nil {
		return bad("bad repository name (lower-case letters, digits and separators)")
	}
	if ref.tag == "" && ref.digest == "" {
		ref.tag = "latest"
	}
	return ref, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// String is the full reference, registry/repo[:tag][@digest].
func (r imageRef) String() string {
	s := r.registry + "/" + r.repo
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest.String()
	}
	return s
}

// reference is what a manifest request names: the digest if there is one, else the tag.
func (r imageRef) reference() string {
	if r.digest != "" {
		return r.digest.String()
	}
	return r.tag
}
