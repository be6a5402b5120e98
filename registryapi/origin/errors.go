package origin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors the client returns, wrapped with context; check them with errors.Is.
var (
	// ErrNotFound: the upstream answered 404 (blob, manifest or repository unknown).
	ErrNotFound = errors.New("not found upstream")
	// ErrDenied: the upstream answered 401 or 403 after the auth dance, or the node
	// could not obtain credentials for it.
	ErrDenied = errors.New("denied by upstream")
	// ErrTooManyRequests: the upstream kept answering 429.
	ErrTooManyRequests = errors.New("rate limited by upstream")
	// ErrUnavailable: the upstream could not be reached, timed out, answered 5xx, or
	// answered something unusable, after retries.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrUnknownRegistry: the registry key is not configured; no request was made.
	ErrUnknownRegistry = errors.New("unknown registry")
	// ErrTooLarge: the manifest is larger than MaxManifestSize.
	ErrTooLarge = errors.New("manifest too large")
	// ErrDigestMismatch: the manifest bytes do not match the digest asked for or the
	// digest the upstream announced.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrRangeNotSatisfiable: GetBlob was asked for an offset past the end of the blob.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
)

// StatusError is an upstream answer with an unexpected status. errors.Is maps it onto
// the sentinels: 404 is ErrNotFound, 401 and 403 ErrDenied, 429 ErrTooManyRequests and
// anything else ErrUnavailable.
type StatusError struct {
	StatusCode int
	// Code and Message come from the first entry of the OCI error body, when there is one.
	Code    string
	Message string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("upstream answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	switch {
	case e.Code != "" && e.Message != "":
		s += fmt.Sprintf(" (%s: %s)", e.Code, e.Message)
	case e.Code != "" || e.Message != "":
		s += fmt.Sprintf(" (%s%s)", e.Code, e.Message)
	}
	return s
}

// Is reports whether the status falls in the class the sentinel target stands for.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrDenied:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
	case ErrTooManyRequests:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrUnavailable:
		switch e.StatusCode {
		case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			return false
		}
		return true
	}
	return false
}

// retryable reports whether a later attempt may succeed.
func (e *StatusError) retryable() bool {
	switch e.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

// retryable reports whether err, as classified by this package, is worth another attempt.
func retryable(err error) bool {
	var p *permanentError
	if errors.As(err, &p) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.retryable()
	}
	return errors.Is(err, ErrUnavailable)
}

// maxErrorBody bounds how much of an error response is read for its OCI error code.
const maxErrorBody = 64 << 10

// responseError turns an unwanted response into a *StatusError and closes its body.
func responseError(resp *http.Response) error {
	defer drain(resp.Body)
	se := &StatusError{StatusCode: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var oci struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &oci) == nil && len(oci.Errors) > 0 {
		se.Code, se.Message = oci.Errors[0].Code, oci.Errors[0].Message
	}
	return se
}

// transportError classifies an error from sending a request (including the auth
// transport's own token refreshes) and marks what retrying cannot fix.
func transportError(err error) error {
	if se := authStatusError(err); se != nil {
		return se
	}
	var (
		certErr     *tls.CertificateVerificationError
		authorityEr x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
	)
	if errors.As(err, &certErr) || errors.As(err, &authorityEr) || errors.As(err, &hostnameErr) {
		return permanent(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// authError classifies an error from building an authenticated transport: pinging /v2/,
// reading credentials, or fetching the first token.
func authError(err error) error {
	if se := authStatusError(err); se != nil {
		return se
	}
	var (
		te *transport.Error
		ue *url.Error
		ne net.Error
	)
	switch {
	case errors.As(err, &te):
		// A ping or token endpoint answering 404, 400 and the like is a registry that
		// is not what the configuration says; trying again will not change that.
		return permanent(fmt.Errorf("%w: %w", ErrUnavailable, err))
	case errors.As(err, &ue), errors.As(err, &ne), errors.Is(err, io.ErrUnexpectedEOF):
		return transportError(err)
	}
	// A malformed challenge or token answer, or a token realm refused as unsafe (a
	// private address on another host).
	return permanent(fmt.Errorf("%w: %w", ErrUnavailable, err))
}

// authStatusError maps a go-containerregistry status error onto a *StatusError when its
// status has a meaning of its own (denied, rate limited, server trouble).
func authStatusError(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return nil
	}
	se := &StatusError{StatusCode: te.StatusCode}
	if len(te.Errors) > 0 {
		se.Code, se.Message = string(te.Errors[0].Code), te.Errors[0].Message
	}
	if se.Is(ErrDenied) || se.Is(ErrTooManyRequests) || se.retryable() {
		return fmt.Errorf("authenticate: %w", se)
	}
	return nil
}

// isContextErr reports whether err is a context's cancellation or deadline.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
