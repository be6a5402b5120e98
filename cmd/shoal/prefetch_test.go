package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/prefetch"
)

// fakeNode answers POST /prefetch with the given lines, flushed one by one with a pause
// between them; status other than 200 sends the lines as the error body instead. It keeps
// the requests it got.
type fakeNode struct {
	*httptest.Server
	mu       sync.Mutex
	requests []prefetch.Request
	types    []string
}

func newFakeNode(t *testing.T, status int, pause time.Duration, lines ...prefetch.Progress) *fakeNode {
	t.Helper()
	f := &fakeNode{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/prefetch" {
			http.Error(w, "not here", http.StatusNotFound)
			return
		}
		var req prefetch.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.types = append(f.types, r.Header.Get("Content-Type"))
		f.mu.Unlock()
		if status != http.StatusOK {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
		} else {
			w.Header().Set("Content-Type", "application/x-ndjson")
		}
		for i, l := range lines {
			if i > 0 {
				select {
				case <-time.After(pause):
				case <-r.Context().Done():
					return
				}
			}
			b, _ := json.Marshal(l)
			w.Write(append(b, '\n'))
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// progressLines is a prefetch of 4 blobs, 40 MiB, of which 8 MiB were cached, in steps.
func progressLines(final prefetch.Progress) []prefetch.Progress {
	base := prefetch.Progress{Status: prefetch.StatusRunning, Image: "registry.example.com/team/app:v1", Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Manifests: 1, BlobsTotal: 4, BytesTotal: 40 << 20, BytesCached: 8 << 20}
	var out []prefetch.Progress
	for i, done := range []int64{8 << 20, 16 << 20, 32 << 20} {
		l := base
		l.BytesDone, l.BlobsDone, l.Seconds = done, i+1, float64(i)
		out = append(out, l)
	}
	last := base
	last.Status, last.Error = final.Status, final.Error
	if final.Status == prefetch.StatusOK {
		last.BytesDone, last.BlobsDone = last.BytesTotal, last.BlobsTotal
	} else {
		last.BytesDone, last.BlobsDone = 32<<20, 3
	}
	last.Seconds = 4
	return append(out, last)
}

func TestPrefetchProgressPlain(t *testing.T) {
	t.Parallel()
	a := newFakeNode(t, http.StatusOK, 100*time.Millisecond, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	b := newFakeNode(t, http.StatusOK, 100*time.Millisecond, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	var out bytes.Buffer
	err := prefetchNodes(t.Context(), time.Minute, "registry.example.com/team/app:v1", []string{"linux/amd64"}, []string{a.URL, b.URL},
		prefetchOutput{w: &out, interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("prefetch = %v, want success", err)
	}
	got := out.String()
	if strings.Contains(got, "\x1b[") {
		t.Errorf("plain output has terminal escapes: %q", got)
	}
	// The third line says 24 MiB fetched 2 s after none: 12 MiB/s, with 8 MiB to go.
	for _, want := range []string{"32.0 MiB / 40.0 MiB   80%  3/4 blobs  12.0 MiB/s  ETA 1s", "ETA ?"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress output lacks %q:\n%s", want, got)
		}
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	summary := lines[len(lines)-2:]
	for i, f := range []*fakeNode{a, b} {
		if !strings.HasPrefix(summary[i], f.URL) || !strings.Contains(summary[i], " ok ") || !strings.Contains(summary[i], "40.0 MiB in 4 blobs") || !strings.Contains(summary[i], "8.0 MiB already cached") {
			t.Errorf("summary line %d = %q, want the node's URL, ok, sizes and cached bytes", i+1, summary[i])
		}
		f.mu.Lock()
		if len(f.requests) != 1 || f.requests[0].Image != "registry.example.com/team/app:v1" || len(f.requests[0].Platforms) != 1 || f.types[0] != "application/json" {
			t.Errorf("node %d got %+v with Content-Type %q, want one JSON request for the image and linux/amd64", i+1, f.requests, f.types)
		}
		f.mu.Unlock()
	}
}

func TestPrefetchProgressTerminal(t *testing.T) {
	t.Parallel()
	a := newFakeNode(t, http.StatusOK, 250*time.Millisecond, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	var out bytes.Buffer
	if err := prefetchNodes(t.Context(), time.Minute, "registry.example.com/team/app:v1", nil, []string{a.URL}, prefetchOutput{w: &out, tty: true}); err != nil {
		t.Fatalf("prefetch = %v, want success", err)
	}
	got := out.String()
	// The line is drawn over in place: up one line and clear it, each time.
	if !strings.Contains(got, "\x1b[1A") || !strings.Contains(got, "\r\x1b[2K") || !strings.Contains(got, "ETA") {
		t.Errorf("terminal output does not redraw a progress line: %q", got)
	}
	if !strings.HasSuffix(got, "already cached\n") || strings.HasSuffix(got, "\x1b[1A") {
		t.Errorf("terminal output does not end with the summary line: %q", got)
	}
}

func TestPrefetchNodeFails(t *testing.T) {
	t.Parallel()
	ok := newFakeNode(t, http.StatusOK, 0, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	bad := newFakeNode(t, http.StatusOK, 0, progressLines(prefetch.Progress{Status: prefetch.StatusError, Error: "blob sha256:abc: upstream unavailable"})...)
	refused := newFakeNode(t, http.StatusForbidden, 0, prefetch.Progress{Status: prefetch.StatusError, Error: "registry registry.example.com is not mirrored by this node"})
	cut := newFakeNode(t, http.StatusOK, 0, progressLines(prefetch.Progress{Status: prefetch.StatusOK})[:2]...)
	var out bytes.Buffer
	err := prefetchNodes(t.Context(), time.Minute, "registry.example.com/team/app:v1", nil, []string{ok.URL, bad.URL, refused.URL, cut.URL}, prefetchOutput{w: &out, interval: time.Hour})
	if err == nil {
		t.Fatal("prefetch = nil, want an error when nodes failed")
	}
	msg := err.Error()
	for _, want := range []string{"3 of 4 nodes", "upstream unavailable", "not mirrored by this node (status 403)", "ended the stream"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if !strings.Contains(out.String(), ok.URL) || !strings.Contains(out.String(), "failed: ") {
		t.Errorf("summary = %q, want a line per node with the failures", out.String())
	}
}

func TestPrefetchTimeout(t *testing.T) {
	t.Parallel()
	slow := newFakeNode(t, http.StatusOK, time.Minute, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	var out bytes.Buffer
	err := run(t.Context(), []string{"prefetch", "registry.example.com/team/app:v1", "--nodes", slow.URL, "--timeout", "300ms"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Errorf("run(prefetch with a node that stalls) = %v, want a timeout", err)
	}
}

func TestPrefetchFlagsAfterImage(t *testing.T) {
	t.Parallel()
	a := newFakeNode(t, http.StatusOK, 0, progressLines(prefetch.Progress{Status: prefetch.StatusOK})...)
	var out bytes.Buffer
	err := run(context.Background(), []string{"prefetch", "--timeout", "1m", "nginx:1.27", "--nodes", a.URL + "/", "--platform", "linux/amd64,linux/arm64"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("run = %v, want success", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.requests) != 1 || a.requests[0].Image != "nginx:1.27" || strings.Join(a.requests[0].Platforms, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("the node got %+v, want nginx:1.27 for two platforms", a.requests)
	}
}

func TestPrefetchBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no image", []string{"prefetch"}, "no image given"},
		{"two images", []string{"prefetch", "a:1", "b:2"}, "one image at a time"},
		{"bad image", []string{"prefetch", "ghcr.io/Team/App"}, "invalid image reference"},
		{"unknown flag", []string{"prefetch", "nginx", "--fast"}, "flag provided but not defined: -fast"},
		{"no scheme", []string{"prefetch", "nginx", "--nodes", "127.0.0.1:5081"}, "want http://HOST:PORT"},
		{"bad scheme", []string{"prefetch", "nginx", "--nodes", "ftp://127.0.0.1:5081"}, "want http://HOST:PORT"},
		{"query", []string{"prefetch", "nginx", "--nodes", "http://127.0.0.1:5081/?x=1"}, "want http://HOST:PORT"},
		{"empty node", []string{"prefetch", "nginx", "--nodes", "http://a:1,,http://b:2"}, "empty value"},
		{"bad timeout", []string{"prefetch", "nginx", "--timeout", "soon"}, "invalid value"},
		{"zero timeout", []string{"prefetch", "nginx", "--timeout", "0s"}, "must be positive"},
		{"bad platform", []string{"prefetch", "nginx", "--platform", "linux"}, "invalid platform"},
		{"bad dns port", []string{"prefetch", "nginx", "--nodes-dns", "shoal:http"}, "want NAME or NAME:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("run(%q) error spans lines: %q", tt.args, err)
			}
		})
	}
}

func TestPrefetchUnreachableNode(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := run(context.Background(), []string{"prefetch", "nginx", "--nodes", url}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("run(prefetch on a closed port) = %v, want an error naming the node", err)
	}
}

func TestPrefetchHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(context.Background(), []string{"prefetch", "--help"}, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "Usage: shoal prefetch IMAGE") || !strings.Contains(out.String(), "--nodes") {
		t.Errorf("run(prefetch --help) = %v, printed %q; want usage", err, out.String())
	}
}

func TestNodeURLsDefault(t *testing.T) {
	t.Parallel()
	urls, err := nodeURLs(context.Background(), nil, "")
	if err != nil || len(urls) != 1 || urls[0] != defaultAdminURL {
		t.Errorf("nodeURLs() = %v, %v; want [%s]", urls, err, defaultAdminURL)
	}
	urls, err = nodeURLs(context.Background(), []string{"http://b:1/", "http://a:1", "http://b:1"}, "localhost:5099")
	if err != nil || !strings.Contains(strings.Join(urls, " "), "http://a:1 http://b:1") || !strings.Contains(strings.Join(urls, " "), ":5099") {
		t.Errorf("nodeURLs(...) = %v, %v; want the nodes sorted, once each, and localhost's addresses on 5099", urls, err)
	}
}
