package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// GetBlob returns the blob's bytes from offset, length of them (length < 0: to the end),
// and the blob's total size (-1 if the upstream did not tell). A range reaching past the
// end is cut at the end; an offset past the end is ErrRangeNotSatisfiable. The body
// yields io.ErrUnexpectedEOF if it ends short. It is not checked against d here: the
// caller hashes what it reads.
//
// Range is used when offset > 0 or length > 0. An upstream that ignores it and sends the
// whole blob is handled by skipping to offset; one that refuses a range it could serve
// (416 without the blob's size) is asked for the whole blob instead.
func (c *Client) GetBlob(ctx context.Context, registry, repo string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error) {
	rc, size, err := c.getBlob(ctx, registry, repo, d, offset, length)
	if err != nil {
		return nil, 0, fmt.Errorf("get blob %s from %s/%s: %w", d, registry, repo, err)
	}
	return rc, size, nil
}

// HeadBlob returns the blob's size. An upstream whose HEAD answer lacks Content-Length is
// asked for the blob's first byte instead, which tells the size through Content-Range.
func (c *Client) HeadBlob(ctx context.Context, registry, repo string, d digest.Digest) (int64, error) {
	size, err := c.headBlob(ctx, registry, repo, d)
	if err != nil {
		return 0, fmt.Errorf("head blob %s from %s/%s: %w", d, registry, repo, err)
	}
	return size, nil
}

func (c *Client) getBlob(ctx context.Context, registry, repo string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error) {
	up, err := c.lookup(registry)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, fmt.Errorf("negative offset %d", offset)
	}
	path, err := blobPath(repo, d)
	if err != nil {
		return nil, 0, err
	}
	if length == 0 {
		size, err := c.headBlob(ctx, registry, repo, d)
		if err != nil {
			return nil, 0, err
		}
		if offset > size {
			return nil, 0, fmt.Errorf("%w: offset %d, size %d", ErrRangeNotSatisfiable, offset, size)
		}
		return http.NoBody, size, nil
	}

	rq := call{method: http.MethodGet, path: path, ok: []int{http.StatusOK}}
	if offset > 0 || length > 0 {
		rq.header = http.Header{"Range": {rangeHeader(offset, length)}}
		rq.ok = []int{http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable}
	}
	resp, err := c.do(ctx, up, repo, rq)
	if err != nil {
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		return partialBody(resp, offset, length)
	case http.StatusRequestedRangeNotSatisfiable:
		_, _, total, perr := parseContentRange(resp.Header.Get("Content-Range"))
		drain(resp.Body)
		if perr == nil && total >= 0 && offset >= total {
			if offset == total {
				return http.NoBody, total, nil
			}
			return nil, 0, fmt.Errorf("%w: offset %d, size %d", ErrRangeNotSatisfiable, offset, total)
		}
		// Refused a range it should serve (go-containerregistry's registry does this for
		// "bytes=N-"): take the whole blob and skip.
		resp, err = c.do(ctx, up, repo, call{method: http.MethodGet, path: path, ok: []int{http.StatusOK}})
		if err != nil {
			return nil, 0, err
		}
	}
	return wholeBody(resp, offset, length)
}

func (c *Client) headBlob(ctx context.Context, registry, repo string, d digest.Digest) (int64, error) {
	up, err := c.lookup(registry)
	if err != nil {
		return 0, err
	}
	path, err := blobPath(repo, d)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(ctx, up, repo, call{method: http.MethodHead, path: path, ok: []int{http.StatusOK}})
	if err != nil {
		return 0, err
	}
	drain(resp.Body)
	if announced, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil &&
		announced.Algorithm() == d.Algorithm() && announced != d {
		return 0, fmt.Errorf("%w: asked for %s, upstream announced %s", ErrDigestMismatch, d, announced)
	}
	if resp.ContentLength >= 0 {
		return resp.ContentLength, nil
	}
	rc, size, err := c.getBlob(ctx, registry, repo, d, 0, 1)
	if err != nil {
		return 0, err
	}
	drain(rc)
	if size < 0 {
		return 0, fmt.Errorf("%w: upstream does not tell the blob's size", ErrUnavailable)
	}
	return size, nil
}

// partialBody reads a 206 answer to a request for [offset, offset+length).
func partialBody(resp *http.Response, offset, length int64) (io.ReadCloser, int64, error) {
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err == nil && start != offset {
		err = fmt.Errorf("range starts at %d, asked for %d", start, offset)
	}
	if err == nil && start < 0 {
		err = errors.New("partial content without a range")
	}
	if err != nil {
		drain(resp.Body)
		return nil, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	want := end - start + 1
	if total >= 0 {
		want = total - offset
	}
	if length >= 0 {
		want = min(want, length)
	}
	return &body{rc: resp.Body, left: want}, total, nil
}

// wholeBody reads a 200 answer carrying the whole blob, skipping to offset.
func wholeBody(resp *http.Response, offset, length int64) (io.ReadCloser, int64, error) {
	total := resp.ContentLength
	if total >= 0 && offset > total {
		drain(resp.Body)
		return nil, 0, fmt.Errorf("%w: offset %d, size %d", ErrRangeNotSatisfiable, offset, total)
	}
	if offset > 0 {
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			resp.Body.Close()
			if errors.Is(err, io.EOF) && total < 0 {
				return nil, 0, fmt.Errorf("%w: blob ends before offset %d", ErrRangeNotSatisfiable, offset)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, fmt.Errorf("%w: skip to offset %d: %w", ErrUnavailable, offset, err)
		}
	}
	want := length
	if total >= 0 {
		want = total - offset
		if length >= 0 {
			want = min(want, length)
		}
	}
	return &body{rc: resp.Body, left: want}, total, nil
}

// body hands out exactly the bytes owed and reports a body that ends early as
// io.ErrUnexpectedEOF.
type body struct {
	rc   io.ReadCloser
	left int64 // bytes still owed; negative when unknown
}

func (b *body) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
		if errors.Is(err, io.EOF) && b.left > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	return n, err
}

func (b *body) Close() error { return b.rc.Close() }

func blobPath(repo string, d digest.Digest) (string, error) {
	rp, err := repoPath(repo)
	if err != nil {
		return "", err
	}
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return "/v2/" + rp + "/blobs/" + url.PathEscape(d.String()), nil
}

// rangeHeader asks for [offset, offset+length), or from offset to the end when length
// is negative.
func rangeHeader(offset, length int64) string {
	if length < 0 || length-1 > math.MaxInt64-offset {
		return "bytes=" + strconv.FormatInt(offset, 10) + "-"
	}
	return "bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+length-1, 10)
}

// parseContentRange parses "bytes first-last/size", "bytes first-last/*" and
// "bytes */size". Unknown parts are -1.
func parseContentRange(v string) (first, last, size int64, err error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("content range %q: not in bytes", v)
	}
	rng, sz, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("content range %q: no size", v)
	}
	size = -1
	if sz != "*" {
		if size, err = parseUint(sz); err != nil {
			return 0, 0, 0, fmt.Errorf("content range %q: size: %w", v, err)
		}
	}
	if rng == "*" {
		if size < 0 {
			return 0, 0, 0, fmt.Errorf("content range %q: neither range nor size", v)
		}
		return -1, -1, size, nil
	}
	f, l, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("content range %q: malformed range", v)
	}
	if first, err = parseUint(f); err != nil {
		return 0, 0, 0, fmt.Errorf("content range %q: first byte: %w", v, err)
	}
	if last, err = parseUint(l); err != nil {
		return 0, 0, 0, fmt.Errorf("content range %q: last byte: %w", v, err)
	}
	if last < first || (size >= 0 && last >= size) {
		return 0, 0, 0, fmt.Errorf("content range %q: out of order", v)
	}
	return first, last, size, nil
}

// parseUint accepts plain decimal digits only (no sign, no spaces).
func parseUint(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return strconv.ParseInt(s, 10, 64)
}
