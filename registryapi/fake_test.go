package registryapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

var (
	_ BlobSource     = (*fakeSource)(nil)
	_ ManifestSource = (*fakeSource)(nil)
	_ Blob           = (*memBlob)(nil)
	_ FileBlob       = (*fileBlob)(nil)
	_ Sourced        = (*sourcedBlob)(nil)
)

// fakeSource serves blobs and manifests from memory and records what it was asked.
type fakeSource struct {
	t *testing.T
	// forbidden makes any call fail the test: for requests that must never reach a source.
	forbidden bool
	// err, when set, is what every call returns.
	err error
	// blob, when set, wraps the content of a blob being opened.
	blob func(content []byte) Blob

	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string]Manifest // by tag or digest
	calls     []call
}

type call struct {
	method    string
	repo      Repo
	reference string
	accept    []string
}

func newFakeSource(t *testing.T) *fakeSource {
	return &fakeSource{t: t, blobs: map[digest.Digest][]byte{}, manifests: map[string]Manifest{}}
}

func (f *fakeSource) addBlob(content []byte) digest.Digest {
	d := digest.FromBytes(content)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[d] = content
	return d
}

func (f *fakeSource) addManifest(tag, mediaType string, body []byte) Manifest {
	m := Manifest{Digest: digest.FromBytes(body), MediaType: mediaType, Body: body}
	f.mu.Lock()
	defer f.mu.Unlock()
	if tag != "" {
		f.manifests[tag] = m
	}
	f.manifests[m.Digest.String()] = m
	return m
}

func (f *fakeSource) record(method string, repo Repo, ref string, accept []string) error {
	if f.forbidden {
		f.t.Errorf("%s(%s, %s) called; this request must not reach a source", method, repo, ref)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{method, repo, ref, slices.Clone(accept)})
	return f.err
}

func (f *fakeSource) called() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeSource) OpenBlob(ctx context.Context, repo Repo, d digest.Digest) (Blob, error) {
	if err := f.record("OpenBlob", repo, d.String(), nil); err != nil {
		return nil, err
	}
	f.mu.Lock()
	content, ok := f.blobs[d]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if f.blob != nil {
		return f.blob(content), nil
	}
	return newMemBlob(content), nil
}

func (f *fakeSource) StatBlob(ctx context.Context, repo Repo, d digest.Digest) (int64, error) {
	if err := f.record("StatBlob", repo, d.String(), nil); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	content, ok := f.blobs[d]
	if !ok {
		return 0, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	return int64(len(content)), nil
}

func (f *fakeSource) Manifest(ctx context.Context, repo Repo, ref string, accept []string) (Manifest, error) {
	if err := f.record("Manifest", repo, ref, accept); err != nil {
		return Manifest{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.manifests[ref]
	if !ok {
		return Manifest{}, fmt.Errorf("manifest %s: %w", ref, ErrNotFound)
	}
	return m, nil
}

func (f *fakeSource) StatManifest(ctx context.Context, repo Repo, ref string, accept []string) (Descriptor, error) {
	if err := f.record("StatManifest", repo, ref, accept); err != nil {
		return Descriptor{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.manifests[ref]
	if !ok {
		return Descriptor{}, fmt.Errorf("manifest %s: %w", ref, ErrNotFound)
	}
	return Descriptor{Digest: m.Digest, MediaType: m.MediaType, Size: int64(len(m.Body))}, nil
}

// memBlob is a blob held in memory. It can be made to fail once a read reaches failAt,
// as a download does when a peer or the final digest check lets it down.
type memBlob struct {
	data   []byte
	failAt int64 // -1: never
	// gate, when set, blocks reads past gateAt until it is closed.
	gate   chan struct{}
	gateAt int64
	closed atomic.Int32
}

var errBrokenDownload = errors.New("download failed: digest mismatch")

func newMemBlob(data []byte) *memBlob { return &memBlob{data: data, failAt: -1} }

func (b *memBlob) Size() int64 { return int64(len(b.data)) }

func (b *memBlob) ReadAt(p []byte, off int64) (int, error) {
	if b.gate != nil && off+int64(len(p)) > b.gateAt {
		<-b.gate
	}
	if off >= int64(len(b.data)) {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), int64(len(b.data)))
	if b.failAt >= 0 && end > b.failAt {
		n := 0
		if b.failAt > off {
			n = copy(p, b.data[off:b.failAt])
		}
		return n, errBrokenDownload
	}
	n := copy(p, b.data[off:end])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b *memBlob) Close() error {
	b.closed.Add(1)
	return nil
}

// fileBlob is a blob on disk. Its ReadAt fails the test: the edge must serve it from the
// file.
type fileBlob struct {
	t      *testing.T
	f      *os.File
	size   int64
	closed atomic.Int32
}

// newFileBlob writes content to a file; size, when not -1, overrides what Size reports.
func newFileBlob(t *testing.T, content []byte, size int64) *fileBlob {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if size < 0 {
		size = int64(len(content))
	}
	return &fileBlob{t: t, f: f, size: size}
}

func (b *fileBlob) Size() int64 { return b.size }

func (b *fileBlob) ReadAt(p []byte, off int64) (int, error) {
	b.t.Error("fileBlob.ReadAt called; the edge should serve a FileBlob from its file")
	return b.f.ReadAt(p, off)
}

func (b *fileBlob) File() FileHandle { return b.f }

func (b *fileBlob) Close() error {
	b.closed.Add(1)
	return nil
}

// sourcedBlob names where its bytes come from.
type sourcedBlob struct {
	*memBlob
	source string
}

func (b *sourcedBlob) Source() string { return b.source }
