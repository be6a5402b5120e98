package registryapi

import "testing"

// The fake source, for the conformance test in package registryapi_test (which may import
// sourcetest; this package may not).

type FakeSource = fakeSource

func NewFakeSource(t *testing.T) *FakeSource { return newFakeSource(t) }

func (f *fakeSource) AddBlob(content []byte) { f.addBlob(content) }
func (f *fakeSource) AddManifest(tag, mediaType string, body []byte) Manifest {
	return f.addManifest(tag, mediaType, body)
}
