package registryapi

import (
	// go-digest hashes through crypto.Hash and links no implementation itself.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Errors the validators return; the edge answers them with 400 and an OCI error body.
var (
	// ErrNameInvalid: a repository name or request path outside the OCI grammar.
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrTagInvalid: a tag outside the OCI grammar.
	ErrTagInvalid = errors.New("invalid tag")
	// ErrDigestInvalid: a malformed digest, or one whose algorithm is not accepted.
	ErrDigestInvalid = errors.New("invalid digest")
)

// MaxNameLength bounds a repository name, as distribution does.
const MaxNameLength = 255

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name ("library/alpine") against the OCI grammar.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLength || !nameRE.MatchString(name) {
		return ErrNameInvalid
	}
	return nil
}

// ValidateTag checks a tag against the OCI grammar.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return ErrTagInvalid
	}
	return nil
}

// ParseDigest parses and validates a digest. Only sha256, sha384 and sha512 are accepted:
// they are what registries use, and each is a hash the node can verify content with.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrDigestInvalid, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA384, digest.SHA512:
		return d, nil
	}
	return "", fmt.Errorf("%w: algorithm %q not accepted", ErrDigestInvalid, d.Algorithm())
}

// ValidateReference checks a manifest reference: a tag, or (when it contains ':') a digest.
func ValidateReference(ref string) error {
	if strings.Contains(ref, ":") {
		_, err := ParseDigest(ref)
		return err
	}
	return ValidateTag(ref)
}
