package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Errors raised by the edge itself, beside the validators' and the sources' sentinels.
var (
	// errUnknownRegistry: ns names a registry this node does not mirror, or there is no ns
	// and no default. Answered without asking any source.
	errUnknownRegistry = errors.New("registry not mirrored by this node")
	errMethod          = errors.New("method not allowed")
	errMalformedQuery  = errors.New("malformed query")
	// errContentMismatch: a source handed over a manifest whose bytes do not match its
	// digest (or not the digest asked for). It is never served.
	errContentMismatch = errors.New("source content does not match its digest")
)

// statusClientClosed is recorded when the client went away; nobody reads the answer.
const statusClientClosed = 499

// Values of the result label of shoal_registry_requests_total.
const (
	resultOK          = "ok"
	resultNotFound    = "not_found"
	resultBadRequest  = "bad_request"
	resultDenied      = "denied"
	resultRateLimited = "rate_limited"
	resultUnavailable = "unavailable"
	resultError       = "error"
	resultAborted     = "aborted"
	resultCanceled    = "canceled"
)

// apiError is how a failed request is answered.
type apiError struct {
	status  int
	code    string // OCI error code; "" means no body
	message string
	result  string
}

// errorFor maps any error met while serving a request of kind k onto its answer. It is the
// only place that does so.
//
// ErrTooLarge becomes a 404 like ErrNotFound: this mirror will not serve that content, and
// a 404 is what every client treats as "try the next host" without retrying here
// (containerd falls through on it, Docker's legacy puller only falls through from a mirror
// on an OCI error code). It is not a server fault, so it is not a 5xx; and 413 speaks of
// the request body.
func errorFor(k kind, err error) apiError {
	unknown := "NAME_UNKNOWN"
	switch k {
	case kindBlob:
		unknown = "BLOB_UNKNOWN"
	case kindManifest:
		unknown = "MANIFEST_UNKNOWN"
	}
	switch {
	case errors.Is(err, errOutside):
		return apiError{http.StatusNotFound, "UNSUPPORTED", "not a registry endpoint", resultNotFound}
	case errors.Is(err, errUnsupported):
		return apiError{http.StatusNotFound, "UNSUPPORTED", "the operation is unsupported", resultNotFound}
	case errors.Is(err, errMethod):
		return apiError{http.StatusMethodNotAllowed, "UNSUPPORTED", "this mirror is read-only", resultBadRequest}
	case errors.Is(err, ErrNameInvalid):
		return apiError{http.StatusBadRequest, "NAME_INVALID", "invalid repository name", resultBadRequest}
	case errors.Is(err, ErrTagInvalid):
		return apiError{http.StatusBadRequest, "NAME_INVALID", "invalid tag", resultBadRequest}
	case errors.Is(err, ErrNamespaceInvalid):
		return apiError{http.StatusBadRequest, "NAME_INVALID", "invalid ns parameter", resultBadRequest}
	case errors.Is(err, errMalformedQuery):
		return apiError{http.StatusBadRequest, "NAME_INVALID", "malformed query", resultBadRequest}
	case errors.Is(err, ErrDigestInvalid):
		return apiError{http.StatusBadRequest, "DIGEST_INVALID", "invalid digest", resultBadRequest}
	case errors.Is(err, ErrRangeInvalid):
		return apiError{http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "invalid range", resultBadRequest}
	case errors.Is(err, ErrRangeNotSatisfiable):
		return apiError{http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "range not satisfiable", resultBadRequest}
	case errors.Is(err, errUnknownRegistry):
		return apiError{http.StatusNotFound, "NAME_UNKNOWN", "registry not mirrored here", resultNotFound}
	case errors.Is(err, ErrNotFound):
		return apiError{http.StatusNotFound, unknown, "unknown to this mirror", resultNotFound}
	case errors.Is(err, ErrTooLarge):
		return apiError{http.StatusNotFound, unknown, "too large for this mirror", resultNotFound}
	case errors.Is(err, ErrDenied):
		return apiError{http.StatusForbidden, "DENIED", "upstream denied access", resultDenied}
	case errors.Is(err, ErrTooManyRequests):
		return apiError{http.StatusTooManyRequests, "TOOMANYREQUESTS", "upstream rate limit", resultRateLimited}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		// A deadline here is the source's own (the server's context is only ever
		// cancelled): the upstream did not answer in time.
		return apiError{http.StatusServiceUnavailable, "UNAVAILABLE", "upstream unavailable", resultUnavailable}
	case errors.Is(err, context.Canceled):
		return apiError{statusClientClosed, "", "", resultCanceled}
	}
	return apiError{http.StatusInternalServerError, "UNKNOWN", "internal error", resultError}
}

// errorBody is the OCI error envelope.
type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// write sends the error. detail must be safe to echo (validated input only). HEAD answers
// carry no body.
func (e apiError) write(w http.ResponseWriter, r *http.Request, detail any) {
	h := w.Header()
	switch e.status {
	case http.StatusTooManyRequests:
		h.Set("Retry-After", "1")
	case http.StatusMethodNotAllowed:
		h.Set("Allow", "GET, HEAD")
	}
	if e.code == "" {
		w.WriteHeader(e.status)
		return
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.code, Message: e.message, Detail: detail}}})
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
