package registryapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/opencontainers/go-digest"
)

// copyBufferSize is the unit a streaming blob is read and flushed in: small enough that a
// client sees bytes soon after they land, large enough to keep syscalls few.
const copyBufferSize = 256 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, q *request) outcome {
	d := q.route.digest
	etag := `"` + d.String() + `"`
	if r.Method == http.MethodHead {
		// Range is only defined for GET (RFC 9110 section 14.2), so HEAD ignores it.
		size, err := s.blobs.StatBlob(r.Context(), q.repo, d)
		if err == nil && size < 0 {
			err = fmt.Errorf("stat blob: negative size %d", size)
		}
		if err != nil {
			return s.fail(w, r, q, err)
		}
		setBlobHeaders(w, d, etag, size)
		w.WriteHeader(http.StatusOK)
		return outcome{status: http.StatusOK, result: resultOK}
	}

	spec, err := blobRange(r, etag)
	if err != nil {
		return s.fail(w, r, q, err)
	}
	blob, err := s.blobs.OpenBlob(r.Context(), q.repo, d)
	if err != nil {
		return s.fail(w, r, q, err)
	}
	defer blob.Close()
	size := blob.Size()
	if size < 0 {
		return s.fail(w, r, q, fmt.Errorf("open blob: negative size %d", size))
	}
	start, length, partial, err := spec.resolve(size)
	if err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return s.fail(w, r, q, err)
	}

	out := outcome{status: http.StatusOK, result: resultOK, source: sourceLabel(blob)}
	setBlobHeaders(w, d, etag, length)
	if partial {
		out.status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	w.WriteHeader(out.status)

	var readErr, writeErr error
	if fb, ok := blob.(FileBlob); ok {
		out.bytes, readErr, writeErr = copyFile(w, fb.File(), start, length)
	} else {
		out.bytes, readErr, writeErr = copyStream(w, blob, start, length)
	}
	if readErr == nil && writeErr == nil {
		return out
	}
	// The status line has gone out: the only way left to say "failed" is to cut the
	// connection before the promised Content-Length is reached. A client that has gone
	// is not told anything, but cutting costs nothing then.
	out.abort = true
	if readErr != nil && r.Context().Err() == nil {
		out.result, out.err = resultAborted, readErr
	} else {
		out.result, out.err = resultCanceled, errors.Join(readErr, writeErr)
	}
	return out
}

func setBlobHeaders(w http.ResponseWriter, d digest.Digest, etag string, length int64) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", etag)
	// Content-addressed: the bytes behind a digest never change.
	h.Set("Cache-Control", "max-age=31536000")
}

// blobRange reads the Range header of a blob GET, checked before anything is opened.
// If-Range with anything but the blob's own (strong) ETag turns the Range off, as RFC 9110
// section 13.1.5 asks; the blob has no Last-Modified, so a date never matches.
func blobRange(r *http.Request, etag string) (rangeSpec, error) {
	values := r.Header.Values("Range")
	switch len(values) {
	case 0:
		return rangeSpec{}, nil
	case 1:
	default:
		return rangeSpec{}, ErrRangeInvalid
	}
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		return rangeSpec{}, nil
	}
	return parseRangeSpec(values[0])
}

// copyFile sends length bytes of a blob held on disk from start. Handing the file itself
// (within an io.LimitedReader) to the ResponseWriter lets net/http use sendfile. A failure
// inside sendfile cannot be told apart from a client that went away and is counted as
// the latter, by far the likelier; a file that ends early is a read error.
func copyFile(w io.Writer, f FileHandle, start, length int64) (n int64, readErr, writeErr error) {
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return 0, fmt.Errorf("seek blob file: %w", err), nil
	}
	cw := &errWriter{w: w}
	n, err := io.CopyN(cw, f, length)
	if err == nil {
		return n, nil, nil
	}
	if cw.err != nil {
		return n, nil, cw.err
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, fmt.Errorf("read blob file at %d: %w", start+n, err), nil
}

// copyStream sends length bytes of a blob that may still be arriving from start, flushing
// each piece so the client receives bytes as they land.
func copyStream(w http.ResponseWriter, blob Blob, start, length int64) (n int64, readErr, writeErr error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	src := io.NewSectionReader(blob, start, length)
	for n < length {
		m, err := src.Read(buf)
		if m > 0 {
			written, werr := w.Write(buf[:m])
			n += int64(written)
			if werr != nil {
				return n, nil, werr
			}
			if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
				return n, nil, ferr
			}
		}
		if err == nil && m == 0 {
			err = io.ErrNoProgress // io.ReaderAt forbids this; do not spin on it
		}
		if err != nil && n < length {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("read blob at %d: %w", start+n, err), nil
		}
	}
	return n, nil, nil
}

// errWriter remembers a write error so a failed copy can be blamed on the right side. It
// forwards ReadFrom so that wrapping w does not cost sendfile.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (e *errWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := e.w.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{e}, r)
	}
	n, err := rf.ReadFrom(r)
	if err != nil {
		e.err = err
	}
	return n, err
}
