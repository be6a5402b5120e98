package store

import (
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Blob is an open, committed blob. It stays pinned, and so is never evicted, until Close.
// ReadAt is safe for concurrent use.
type Blob struct {
	s *Store
	e *entry
	f *os.File
	// also is a committed Partial's own handle when f is a different file (another copy won
	// the race to commit); it stays open so readers of that Partial can finish.
	also *os.File

	once sync.Once
}

// Size returns the blob's length in bytes.
func (b *Blob) Size() int64 { return b.e.size }

// MediaType returns the media type recorded with the blob, or "".
func (b *Blob) MediaType() string { return b.e.mediaType }

// Digest returns the blob's digest.
func (b *Blob) Digest() digest.Digest { return b.e.digest }

// ReadAt reads from the blob, following io.ReaderAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// File returns the open file so the blob can be served with sendfile (http.ServeContent). The
// caller must not close it, and it is only valid until the Blob is closed.
func (b *Blob) File() *os.File { return b.f }

// Close closes the file and releases the pin. Calls after the first do nothing.
func (b *Blob) Close() error {
	var err error
	b.once.Do(func() {
		err = b.f.Close()
		if b.also != nil {
			_ = b.also.Close() // read-only use by then; nothing to lose
		}
		b.s.unpin(b.e)
	})
	return err
}
