// Package sourcetest checks implementations of registryapi.BlobSource and
// registryapi.ManifestSource against the contract the /v2 edge relies on. Every
// implementation, the test fakes included, runs the same checks.
package sourcetest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/registryapi"
)

// BlobSource checks src. content must be available from src in repo under its sha256
// digest; a digest derived from the test name must not be.
func BlobSource(t *testing.T, src registryapi.BlobSource, repo registryapi.Repo, content []byte) {
	t.Helper()
	d := digest.FromBytes(content)
	size := int64(len(content))

	t.Run("stat", func(t *testing.T) {
		got, err := src.StatBlob(t.Context(), repo, d)
		if err != nil || got != size {
			t.Fatalf("StatBlob(%s) = %d, %v, want %d, nil", d, got, err, size)
		}
	})

	t.Run("open", func(t *testing.T) {
		b, err := src.OpenBlob(t.Context(), repo, d)
		if err != nil {
			t.Fatalf("OpenBlob(%s) = %v", d, err)
		}
		defer func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
		}()
		if b.Size() != size {
			t.Fatalf("Size() = %d, want %d", b.Size(), size)
		}
		all := make([]byte, size)
		if n, err := b.ReadAt(all, 0); int64(n) != size || err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("ReadAt(all, 0) = %d, %v, want %d", n, err, size)
		}
		if !bytes.Equal(all, content) {
			t.Fatal("ReadAt(all, 0) returned other bytes than the content")
		}
		if size > 2 {
			mid := make([]byte, size/2)
			if n, err := b.ReadAt(mid, size/3); n != len(mid) || err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("ReadAt(%d bytes, %d) = %d, %v", len(mid), size/3, n, err)
			}
			if !bytes.Equal(mid, content[size/3:size/3+size/2]) {
				t.Fatalf("ReadAt(%d bytes, %d) returned other bytes", len(mid), size/3)
			}
		}
		if n, err := b.ReadAt(make([]byte, 1), size); n != 0 || err == nil {
			t.Fatalf("ReadAt(1 byte, size) = %d, %v, want 0 and an error", n, err)
		}
		if fb, ok := b.(registryapi.FileBlob); ok {
			got, err := io.ReadAll(io.NewSectionReader(fb.File(), 0, size+1))
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("reading File() = %d bytes, %v; want the content", len(got), err)
			}
		}
	})

	absent := digest.FromString("sourcetest absent blob " + t.Name())
	t.Run("absent", func(t *testing.T) {
		if _, err := src.StatBlob(t.Context(), repo, absent); !errors.Is(err, registryapi.ErrNotFound) {
			t.Errorf("StatBlob(%s) = %v, want ErrNotFound", absent, err)
		}
		b, err := src.OpenBlob(t.Context(), repo, absent)
		if err == nil {
			b.Close()
		}
		if !errors.Is(err, registryapi.ErrNotFound) {
			t.Errorf("OpenBlob(%s) = %v, want ErrNotFound", absent, err)
		}
	})
}

// ManifestSource checks src. m must be available from src in repo both under tag and
// under m.Digest; a tag and a digest derived from the test name must not be.
func ManifestSource(t *testing.T, src registryapi.ManifestSource, repo registryapi.Repo, tag string, m registryapi.Manifest) {
	t.Helper()
	want := registryapi.Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}
	for _, ref := range []string{tag, m.Digest.String()} {
		t.Run("get "+ref, func(t *testing.T) {
			got, err := src.Manifest(t.Context(), repo, ref, nil)
			if err != nil {
				t.Fatalf("Manifest(%s) = %v", ref, err)
			}
			if got.Digest != m.Digest || got.MediaType != m.MediaType || !bytes.Equal(got.Body, m.Body) {
				t.Fatalf("Manifest(%s) = %s %s (%d bytes), want %s %s (%d bytes)",
					ref, got.Digest, got.MediaType, len(got.Body), m.Digest, m.MediaType, len(m.Body))
			}
		})
		t.Run("stat "+ref, func(t *testing.T) {
			got, err := src.StatManifest(t.Context(), repo, ref, nil)
			if err != nil || got != want {
				t.Fatalf("StatManifest(%s) = %+v, %v, want %+v", ref, got, err, want)
			}
		})
	}

	absentTag := "sourcetest-absent"
	absentDigest := digest.FromString("sourcetest absent manifest " + t.Name()).String()
	for _, ref := range []string{absentTag, absentDigest} {
		t.Run("absent "+ref, func(t *testing.T) {
			if _, err := src.Manifest(t.Context(), repo, ref, nil); !errors.Is(err, registryapi.ErrNotFound) {
				t.Errorf("Manifest(%s) = %v, want ErrNotFound", ref, err)
			}
			if _, err := src.StatManifest(t.Context(), repo, ref, nil); !errors.Is(err, registryapi.ErrNotFound) {
				t.Errorf("StatManifest(%s) = %v, want ErrNotFound", ref, err)
			}
		})
	}
}
