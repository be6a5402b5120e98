// Package prefetch is the wire protocol of a node's POST /prefetch: the request a client
// sends and the progress lines the node streams back. It is what clients (shoal prefetch)
// import, so it depends on nothing of the daemon; the node's side is package
// prefetch/prefetcher.
package prefetch

import "github.com/opencontainers/go-digest"

// Path is where a node's admin address serves prefetches, for POST.
const Path = "/prefetch"

// Content types of the exchange: the request is JSON, a prefetch that started answers
// newline-delimited JSON (one Progress a line), and one refused before it started answers a
// single Progress as JSON.
const (
	RequestType  = "application/json"
	ProgressType = "application/x-ndjson"
)

// Request is the body of POST /prefetch.
type Request struct {
	// Image is a full reference, registry-host[:port]/repo[:tag][@digest]; Docker's short
	// forms (nginx, library/nginx:1.27) mean docker.io.
	Image string `json:"image"`
	// Platforms, "os/arch[/variant]" (see ParsePlatform), select an index's manifests; empty
	// means all of them. They do not apply to an image that is a single manifest.
	Platforms []string `json:"platforms,omitempty"`
}

// Values of Progress.Status.
const (
	StatusRunning = "running"
	StatusOK      = "ok"
	StatusError   = "error"
)

// Progress is one line of the response to POST /prefetch, and the whole body of a request
// refused before the prefetch started.
type Progress struct {
	// Status is "running" on every line but the last, which says "ok" or "error".
	Status string `json:"status"`
	// Image is the normalised reference and Digest the manifest or index it resolved to.
	Image  string        `json:"image,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	// Manifests is the number of image manifests whose blobs are fetched.
	Manifests  int   `json:"manifests"`
	BlobsDone  int   `json:"blobsDone"`
	BlobsTotal int   `json:"blobsTotal"`
	BytesDone  int64 `json:"bytesDone"`
	BytesTotal int64 `json:"bytesTotal"`
	// BytesCached is the part of BytesDone the node held before the prefetch began.
	BytesCached int64 `json:"bytesCached"`
	// Seconds since the node received the request.
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}
