package registryapi

import (
	"errors"
	"strconv"
	"strings"
)

// Errors ParseRange returns; the edge answers both with 416 and an OCI error body.
var (
	// ErrRangeInvalid: the Range header is not a well-formed bytes range.
	ErrRangeInvalid = errors.New("invalid range")
	// ErrRangeNotSatisfiable: the range starts at or beyond the end of the content, or
	// asks for an empty suffix.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
)

// ParseRange interprets a Range header (RFC 9110 section 14.2) for content of size bytes
// (size >= 0) and returns the part to send. partial is false when the whole content is to
// be sent with 200: no header, a well-formed request for several ranges (which this server
// does not split into multipart bodies), or a suffix range on empty content. When partial
// is true, 0 <= start, 0 < length and start+length <= size, and the answer is 206.
//
// A malformed header, including an unknown range unit, is ErrRangeInvalid; the caller
// answers it with 416 rather than ignoring it as RFC 9110 allows, so a broken client is
// noticed instead of silently receiving the whole blob.
func ParseRange(header string, size int64) (start, length int64, partial bool, err error) {
	spec, err := parseRangeSpec(header)
	if err != nil {
		return 0, 0, false, err
	}
	return spec.resolve(size)
}

// rangeSpec is a syntactically valid Range header before it meets a size, so a request can
// be rejected before anything is opened.
type rangeSpec struct {
	single bool  // exactly one range was asked for; otherwise serve everything
	first  int64 // first-pos, or -1 for a suffix range
	last   int64 // last-pos, or -1 when open-ended
	suffix int64 // suffix-length when first is -1
}

func parseRangeSpec(header string) (rangeSpec, error) {
	if header == "" {
		return rangeSpec{}, nil
	}
	unit, set, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return rangeSpec{}, ErrRangeInvalid
	}
	var spec rangeSpec
	n := 0
	// range-set is a list: OWS around commas, and empty elements are to be ignored.
	for elem := range strings.SplitSeq(set, ",") {
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue
		}
		s, err := parseOneRange(elem)
		if err != nil {
			return rangeSpec{}, err
		}
		spec = s
		n++
	}
	switch {
	case n == 0:
		return rangeSpec{}, ErrRangeInvalid
	case n > 1:
		return rangeSpec{}, nil
	}
	spec.single = true
	return spec, nil
}

func parseOneRange(s string) (rangeSpec, error) {
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		return rangeSpec{}, ErrRangeInvalid
	}
	if first == "" {
		n, ok := parsePos(last)
		if !ok {
			return rangeSpec{}, ErrRangeInvalid
		}
		return rangeSpec{first: -1, last: -1, suffix: n}, nil
	}
	f, ok := parsePos(first)
	if !ok {
		return rangeSpec{}, ErrRangeInvalid
	}
	if last == "" {
		return rangeSpec{first: f, last: -1}, nil
	}
	l, ok := parsePos(last)
	if !ok || l < f {
		return rangeSpec{}, ErrRangeInvalid
	}
	return rangeSpec{first: f, last: l}, nil
}

// parsePos parses 1*DIGIT that fits an int64 (no sign, no spaces).
func parsePos(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (r rangeSpec) resolve(size int64) (start, length int64, partial bool, err error) {
	if size < 0 {
		return 0, 0, false, ErrRangeNotSatisfiable
	}
	if !r.single {
		return 0, size, false, nil
	}
	if r.first < 0 {
		switch {
		case r.suffix == 0:
			return 0, 0, false, ErrRangeNotSatisfiable
		case size == 0:
			// "The entire representation is used", and it is empty: a 206 could not
			// even name its range.
			return 0, 0, false, nil
		}
		n := min(r.suffix, size)
		return size - n, n, true, nil
	}
	if r.first >= size {
		return 0, 0, false, ErrRangeNotSatisfiable
	}
	end := size - 1
	if r.last >= 0 && r.last < end {
		end = r.last
	}
	return r.first, end - r.first + 1, true, nil
}
