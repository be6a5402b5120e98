package registryapi_test

import (
	"bytes"
	"testing"

	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/sourcetest"
)

func TestFakeSourceConformance(t *testing.T) {
	t.Parallel()
	repo := registryapi.Repo{Registry: "docker.io", Name: "library/alpine"}
	src := registryapi.NewFakeSource(t)
	content := bytes.Repeat([]byte("layer "), 1000)
	src.AddBlob(content)
	m := src.AddManifest("3.20", "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2}`))
	t.Run("blobs", func(t *testing.T) { sourcetest.BlobSource(t, src, repo, content) })
	t.Run("manifests", func(t *testing.T) { sourcetest.ManifestSource(t, src, repo, "3.20", m) })
}
