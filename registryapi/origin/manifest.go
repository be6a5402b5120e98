package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Manifest is a manifest or index body exactly as the upstream sent it.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Descriptor describes content without carrying it.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// defaultAccept is what a manifest request accepts when the caller names nothing.
var defaultAccept = []string{
	string(types.OCIImageIndex),
	string(types.OCIManifestSchema1),
	string(types.DockerManifestList),
	string(types.DockerManifestSchema2),
}

// GetManifest fetches a manifest by tag or digest. accept lists the media types to ask
// for; empty means the four standard image and index types. The body is at most
// MaxManifestSize bytes (ErrTooLarge otherwise) and matches both the digest asked for, if
// reference is one, and the Docker-Content-Digest the upstream announced, if any
// (ErrDigestMismatch otherwise).
func (c *Client) GetManifest(ctx context.Context, registry, repo, reference string, accept []string) (Manifest, error) {
	m, err := c.getManifest(ctx, registry, repo, reference, accept)
	if err != nil {
		return Manifest{}, fmt.Errorf("get manifest %s from %s: %w", refString(repo, reference), registry, err)
	}
	return m, nil
}

// HeadManifest describes a manifest without fetching its body when the upstream's HEAD
// answer carries Docker-Content-Digest, Content-Length and a manifest Content-Type; when
// one of them is missing it falls back to GetManifest.
func (c *Client) HeadManifest(ctx context.Context, registry, repo, reference string, accept []string) (Descriptor, error) {
	desc, err := c.headManifest(ctx, registry, repo, reference, accept)
	if err != nil {
		return Descriptor{}, fmt.Errorf("head manifest %s from %s: %w", refString(repo, reference), registry, err)
	}
	return desc, nil
}

func (c *Client) getManifest(ctx context.Context, registry, repo, reference string, accept []string) (Manifest, error) {
	up, err := c.lookup(registry)
	if err != nil {
		return Manifest{}, err
	}
	path, err := manifestPath(repo, reference)
	if err != nil {
		return Manifest{}, err
	}
	resp, err := c.do(ctx, up, repo, call{
		method: http.MethodGet,
		path:   path,
		header: acceptHeader(accept),
		ok:     []int{http.StatusOK},
	})
	if err != nil {
		return Manifest{}, err
	}
	defer drain(resp.Body)
	if resp.ContentLength > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, resp.ContentLength, MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("read body: %w: %w", ErrUnavailable, err)
	}
	if len(body) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxManifestSize)
	}
	d, err := verifyManifest(body, reference, resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return Manifest{}, err
	}
	return Manifest{Digest: d, MediaType: mediaType(resp.Header.Get("Content-Type"), body), Body: body}, nil
}

func (c *Client) headManifest(ctx context.Context, registry, repo, reference string, accept []string) (Descriptor, error) {
	up, err := c.lookup(registry)
	if err != nil {
		return Descriptor{}, err
	}
	path, err := manifestPath(repo, reference)
	if err != nil {
		return Descriptor{}, err
	}
	resp, err := c.do(ctx, up, repo, call{
		method: http.MethodHead,
		path:   path,
		header: acceptHeader(accept),
		ok:     []int{http.StatusOK},
	})
	if err != nil {
		return Descriptor{}, err
	}
	drain(resp.Body)
	if resp.ContentLength > MaxManifestSize {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, resp.ContentLength, MaxManifestSize)
	}
	announced, derr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	mt := baseMediaType(resp.Header.Get("Content-Type"))
	if derr == nil && resp.ContentLength >= 0 && !genericMediaType(mt) {
		ref, rerr := digest.Parse(reference)
		switch {
		case rerr != nil:
			return Descriptor{Digest: announced, MediaType: mt, Size: resp.ContentLength}, nil
		case ref.Algorithm() == announced.Algorithm():
			if ref != announced {
				return Descriptor{}, fmt.Errorf("%w: asked for %s, upstream announced %s", ErrDigestMismatch, ref, announced)
			}
			return Descriptor{Digest: ref, MediaType: mt, Size: resp.ContentLength}, nil
		}
		// Announced with another algorithm: only the body can prove it is the right one.
	}
	m, err := c.getManifest(ctx, registry, repo, reference, accept)
	if err != nil {
		return Descriptor{}, err
	}
	return Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}, nil
}

// verifyManifest checks body against reference (when it is a digest) and the announced
// Docker-Content-Digest (when present), and returns the manifest's digest.
func verifyManifest(body []byte, reference, announced string) (digest.Digest, error) {
	var d digest.Digest
	if ref, err := digest.Parse(reference); err == nil {
		if got := ref.Algorithm().FromBytes(body); got != ref {
			return "", fmt.Errorf("%w: asked for %s, body is %s", ErrDigestMismatch, ref, got)
		}
		d = ref
	}
	if announced != "" {
		ad, err := digest.Parse(announced)
		if err != nil {
			return "", fmt.Errorf("%w: unusable Docker-Content-Digest %q: %w", ErrDigestMismatch, announced, err)
		}
		if got := ad.Algorithm().FromBytes(body); got != ad {
			return "", fmt.Errorf("%w: upstream announced %s, body is %s", ErrDigestMismatch, ad, got)
		}
		if d == "" {
			d = ad
		}
	}
	if d == "" {
		d = digest.FromBytes(body)
	}
	return d, nil
}

// mediaType is the manifest's media type: the Content-Type without parameters, or, when
// that is missing or generic, what the body says it is.
func mediaType(contentType string, body []byte) string {
	mt := baseMediaType(contentType)
	if !genericMediaType(mt) {
		return mt
	}
	var doc struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return mt
	}
	if doc.MediaType != "" {
		return doc.MediaType
	}
	// The field is optional in OCI documents only (Docker's always carry it), so a
	// schema 2 document without one is an OCI index or manifest.
	if doc.SchemaVersion == 2 {
		switch {
		case doc.Manifests != nil:
			return string(types.OCIImageIndex)
		case doc.Config != nil:
			return string(types.OCIManifestSchema1)
		}
	}
	return mt
}

func baseMediaType(contentType string) string {
	if contentType == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
}

// genericMediaType reports whether a Content-Type says nothing about the manifest's kind.
func genericMediaType(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream":
		return true
	}
	return false
}

func acceptHeader(accept []string) http.Header {
	if len(accept) == 0 {
		accept = defaultAccept
	}
	return http.Header{"Accept": {strings.Join(accept, ", ")}}
}

func manifestPath(repo, reference string) (string, error) {
	rp, err := repoPath(repo)
	if err != nil {
		return "", err
	}
	if reference == "" {
		return "", fmt.Errorf("empty reference")
	}
	return "/v2/" + rp + "/manifests/" + url.PathEscape(reference), nil
}

// refString renders repo and reference the way image references are written.
func refString(repo, reference string) string {
	if _, err := digest.Parse(reference); err == nil {
		return repo + "@" + reference
	}
	return repo + ":" + reference
}
