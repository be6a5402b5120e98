package prefetcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/node/prefetch"
)

// refusal is a prefetch that ends before its stream begins, with an HTTP status.
type refusal struct {
	status int
	err    error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, err: fmt.Errorf(format, args...)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	ref, platforms, err := h.parse(w, r)
	if err != nil {
		h.fail(w, r, err, resultInvalid)
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "5")
		h.fail(w, r, refuse(http.StatusTooManyRequests, "%d prefetches are running on this node, try again later", cap(h.slots)), resultBusy)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	log := h.log.With("repo", ref.String())

	pl, err := h.plan(ctx, ref, platforms)
	if err != nil {
		// An image beyond the limits is refused like a bad request; anything else failed.
		result := resultFailed
		if re := (*refusal)(nil); errors.As(err, &re) && re.status == http.StatusUnprocessableEntity {
			result = resultInvalid
		}
		h.fail(w, r, err, result)
		return
	}
	log.Info("prefetch started", "digest", pl.digest, "blobs", len(pl.blobs), "bytes", pl.total, "platforms", platformList(platforms))

	hdr := w.Header()
	hdr.Set("Content-Type", prefetch.ProgressType)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out := &progressWriter{w: w, rc: http.NewResponseController(w)}

	done := make(chan error, 1)
	go func() { done <- h.run(ctx, pl) }()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for running := true; running; {
		if out.err == nil {
			out.write(pl.progress(h.opts.Downloads, prefetch.StatusRunning, begin))
			if out.err != nil {
				// The client is gone: start no more downloads.
				cancel()
			}
		}
		select {
		case <-tick.C:
		case err = <-done:
			running = false
		}
	}
	last := pl.progress(h.opts.Downloads, prefetch.StatusOK, begin)
	result := resultOK
	switch {
	case out.err != nil || r.Context().Err() != nil:
		result = resultCanceled
		log.Info("prefetch stopped: the client went away", "duration", time.Since(begin))
	case err != nil:
		result = resultFailed
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		last.Status, last.Error = prefetch.StatusError, err.Error()
		log.Error("prefetch failed", "digest", pl.digest, "err", err, "duration", time.Since(begin))
	default:
		log.Info("prefetch done", "digest", pl.digest, "bytes", pl.total, "cached", last.BytesCached, "duration", time.Since(begin))
	}
	if out.err == nil {
		out.write(last)
	}
	h.results.WithLabelValues(result).Inc()
}

// fail answers a prefetch refused before its stream began: the status from a refusal (502
// for anything else) and one Progress line saying why.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error, result string) {
	if r.Context().Err() != nil {
		h.results.WithLabelValues(resultCanceled).Inc()
		return
	}
	status := http.StatusBadGateway
	if re := (*refusal)(nil); errors.As(err, &re) {
		status = re.status
	}
	h.results.WithLabelValues(result).Inc()
	if status >= 500 {
		h.log.Error("prefetch failed", "err", err)
	} else {
		h.log.Debug("prefetch refused", "err", err)
	}
	body, _ := json.Marshal(prefetch.Progress{Status: prefetch.StatusError, Error: err.Error()})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n')) // fails only once the client has gone
}

// parse reads and checks the body: JSON (by Content-Type, so a browser cannot send it
// without a preflight), small, strict, an image reference of a mirrored registry, known
// platforms.
func (h *Handler) parse(w http.ResponseWriter, r *http.Request) (imageRef, []prefetch.Platform, error) {
	var req prefetch.Request
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != prefetch.RequestType {
		return imageRef{}, nil, refuse(http.StatusUnsupportedMediaType, "the body must be JSON sent with Content-Type: application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil {
		// Exactly one JSON value: trailing data is as wrong as a missing brace.
		switch err = dec.Decode(&struct{}{}); {
		case err == io.EOF:
			err = nil
		case err == nil, !errors.As(err, new(*http.MaxBytesError)):
			err = errors.New("data after the JSON object")
		}
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return imageRef{}, nil, refuse(http.StatusRequestEntityTooLarge, "the body exceeds %d bytes", maxBody)
	}
	if err != nil {
		return imageRef{}, nil, refuse(http.StatusBadRequest, "bad body: %v (want {\"image\": \"REGISTRY/REPO:TAG\", \"platforms\": [\"linux/amd64\"]})", err)
	}
	if req.Image == "" {
		return imageRef{}, nil, refuse(http.StatusBadRequest, "no image given")
	}
	ref, err := parseImageRef(req.Image)
	if err != nil {
		return imageRef{}, nil, refuse(http.StatusBadRequest, "%w", err)
	}
	if !slices.Contains(h.opts.Registries, ref.registry) {
		return imageRef{}, nil, refuse(http.StatusForbidden, "registry %s is not mirrored by this node", ref.registry)
	}
	if len(req.Platforms) > maxPlatforms {
		return imageRef{}, nil, refuse(http.StatusBadRequest, "%d platforms given, at most %d", len(req.Platforms), maxPlatforms)
	}
	var platforms []prefetch.Platform
	for _, s := range req.Platforms {
		p, err := prefetch.ParsePlatform(s)
		if err != nil {
			return imageRef{}, nil, refuse(http.StatusBadRequest, "%w", err)
		}
		platforms = append(platforms, p)
	}
	return ref, platforms, nil
}

// progressWriter writes progress lines, each flushed at once and each bounded in time, so
// a client that stops reading cannot hold the prefetch. After the first failure it writes
// nothing more.
type progressWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (pw *progressWriter) write(p prefetch.Progress) {
	if pw.err != nil {
		return
	}
	line, err := json.Marshal(p)
	if err != nil {
		pw.err = err
		return
	}
	_ = pw.rc.SetWriteDeadline(time.Now().Add(lineWriteTimeout))
	if _, err := pw.w.Write(append(line, '\n')); err != nil {
		pw.err = err
		return
	}
	pw.err = pw.rc.Flush()
}
