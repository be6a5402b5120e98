package registryapi

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
)

// Errors a source returns; the HTTP edge maps them to OCI error bodies (see errors.go).
// Sources wrap them (fmt.Errorf("...: %w", ErrNotFound)) and the edge checks with errors.Is.
var (
	// ErrNotFound: the content exists nowhere the node can reach (404 BLOB_UNKNOWN or
	// MANIFEST_UNKNOWN, so containerd falls through to the next host).
	ErrNotFound = errors.New("not found")
	// ErrDenied: the upstream refused the node's credentials (403 DENIED).
	ErrDenied = errors.New("denied by upstream")
	// ErrTooManyRequests: the upstream rate-limited the node (429 TOOMANYREQUESTS).
	ErrTooManyRequests = errors.New("upstream rate limit")
	// ErrUnavailable: the upstream could not be reached and nothing cached could stand in
	// (503 UNAVAILABLE).
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrTooLarge: a manifest exceeds the size the node accepts (for manifests only).
	ErrTooLarge = errors.New("content too large")
)

// Repo names a repository at one upstream registry.
type Repo struct {
	// Registry is the canonical upstream key the node is configured for, e.g. "docker.io"
	// or "127.0.0.1:5000". It is never taken unchecked from a request.
	Registry string
	// Name is the repository path, e.g. "library/alpine"; validated against the OCI grammar.
	Name string
}

func (r Repo) String() string { return r.Registry + "/" + r.Name }

// Blob is content being served: committed on disk, or still arriving. ReadAt blocks until
// the requested bytes are present, and returns an error if the download behind it fails
// (including a digest mismatch found at the end); the edge then aborts the response so the
// client never sees a clean success.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// FileBlob is implemented by blobs that are fully on disk: the edge reads the file directly,
// with no waiting for bytes to arrive and no flushing between pieces.
type FileBlob interface {
	Blob
	// File returns the open file holding the whole verified blob. The caller must not
	// close it; Close on the Blob does.
	File() FileHandle
}

// FileHandle is the part of *os.File the edge reads a committed blob through.
type FileHandle interface {
	io.ReaderAt
}

// Manifest is a manifest or index body, exactly as the upstream sent it.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
}

// Descriptor describes content without carrying it (answers to HEAD).
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// Sourced may be implemented by a Blob to say where its bytes come from: "cache" (the
// node's store) or "download" (streamed while the node fetches it from peers and the
// origin). The edge uses it only to label the served-bytes metric; a FileBlob without it
// counts as "cache", any other Blob as "download".
type Sourced interface {
	Source() string
}

// Fetcher may be implemented by a Blob being downloaded while it is served: how many of its
// bytes the node fetched from peers and from the origin so far. The edge puts them in the
// pull's log line.
type Fetcher interface {
	Fetched() (peers, origin int64)
}

// BlobSource supplies blobs by digest.
type BlobSource interface {
	// OpenBlob returns the blob; the caller closes it. The blob's bytes are verified
	// against d before the blob is committed anywhere.
	OpenBlob(ctx context.Context, repo Repo, d digest.Digest) (Blob, error)
	// StatBlob returns the blob's size without downloading it.
	StatBlob(ctx context.Context, repo Repo, d digest.Digest) (int64, error)
}

// ManifestSource supplies manifests by tag or digest.
type ManifestSource interface {
	// Manifest returns a manifest. reference is a tag or a digest string (already
	// validated). accept is the client's Accept header values (may be empty).
	Manifest(ctx context.Context, repo Repo, reference string, accept []string) (Manifest, error)
	// StatManifest answers HEAD without necessarily fetching the body.
	StatManifest(ctx context.Context, repo Repo, reference string, accept []string) (Descriptor, error)
}
