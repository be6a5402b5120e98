package registryapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// maxAcceptTypes bounds how many media types of a client's Accept header are passed on.
const maxAcceptTypes = 64

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, q *request) outcome {
	accept := acceptList(r.Header.Values("Accept"))
	if r.Method == http.MethodHead {
		desc, err := s.manifests.StatManifest(r.Context(), q.repo, q.route.reference, accept)
		if err != nil {
			return s.fail(w, r, q, err)
		}
		d, err := describedDigest(q.route.digest, desc.Digest)
		if err == nil && desc.Size < 0 {
			err = fmt.Errorf("stat manifest: negative size %d", desc.Size)
		}
		if err != nil {
			return s.fail(w, r, q, err)
		}
		// Without a media type nothing better can be said: a client that needs one
		// asks again with GET.
		setManifestHeaders(w, desc.MediaType, d, desc.Size)
		w.WriteHeader(http.StatusOK)
		return outcome{status: http.StatusOK, result: resultOK}
	}

	m, err := s.manifests.Manifest(r.Context(), q.repo, q.route.reference, accept)
	if err != nil {
		return s.fail(w, r, q, err)
	}
	d, err := verifyManifest(q.route.digest, m)
	if err != nil {
		return s.fail(w, r, q, err)
	}
	mediaType := m.MediaType
	if mediaType == "" {
		mediaType = EmbeddedMediaType(m.Body)
	}
	if mediaType == "" {
		// Left empty, net/http would sniff "text/plain", which containerd takes for a
		// schema 1 manifest.
		mediaType = "application/octet-stream"
	}
	setManifestHeaders(w, mediaType, d, int64(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	out := outcome{status: http.StatusOK, result: resultOK}
	n, err := w.Write(m.Body)
	out.bytes = int64(n)
	if err != nil {
		out.result, out.err = resultCanceled, err
	}
	return out
}

func setManifestHeaders(w http.ResponseWriter, mediaType string, d digest.Digest, size int64) {
	h := w.Header()
	if mediaType != "" {
		h.Set("Content-Type", mediaType)
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	if d != "" {
		h.Set("Docker-Content-Digest", d.String())
		h.Set("Etag", `"`+d.String()+`"`)
	}
}

// verifyManifest returns the digest to announce for m, having checked that m's bytes
// hash to it and, for a request by digest, that it is the one asked for. Manifests are
// small, and a Docker-Content-Digest that does not match the body would be trusted by
// containerd on a later HEAD.
func verifyManifest(want digest.Digest, m Manifest) (digest.Digest, error) {
	d, err := describedDigest(want, m.Digest)
	if err != nil {
		return "", err
	}
	if d == "" {
		return digest.FromBytes(m.Body), nil
	}
	if d.Algorithm().FromBytes(m.Body) != d {
		return "", fmt.Errorf("manifest %s: %w", d, errContentMismatch)
	}
	return d, nil
}

// describedDigest reconciles the digest a request asked for (want, "" for a tag) with the
// one a source reported (got, possibly "").
func describedDigest(want, got digest.Digest) (digest.Digest, error) {
	if got == "" {
		return want, nil
	}
	if _, err := ParseDigest(got.String()); err != nil {
		// Not ErrDigestInvalid: that would tell the client its request was wrong.
		return "", fmt.Errorf("source described digest %q: %w", got, errContentMismatch)
	}
	if want != "" && got != want {
		return "", fmt.Errorf("asked for %s, source described %s: %w", want, got, errContentMismatch)
	}
	return got, nil
}

// EmbeddedMediaType reads the mediaType field that OCI and Docker manifests carry; "" when
// the body has none or is not JSON.
func EmbeddedMediaType(body []byte) string {
	var v struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.MediaType
}

// acceptList splits Accept header lines into their media ranges, parameters kept, so a
// source sees the same list whether a client sent one line or several.
func acceptList(values []string) []string {
	var out []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.Trim(t, " \t")
			if t == "" {
				continue
			}
			if len(out) == maxAcceptTypes {
				return out
			}
			out = append(out, t)
		}
	}
	return out
}
