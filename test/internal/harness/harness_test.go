package harness

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests check the harness against the bare registry, so that the end-to-end tests can
// trust it.

func pushTestImage(t *testing.T, reg *Registry, layers int, size int64) Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	im, err := PushRandomImage(ctx, reg.Addr, "harness/app", "v1", layers, size)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func TestPushRandomImage(t *testing.T) {
	RequireTools(t, "registry", "crane")
	reg := StartRegistry(t)
	im := pushTestImage(t, reg, 2, 300<<10)
	if len(im.Layers) != 2 {
		t.Fatalf("PushRandomImage: %d layers, want 2", len(im.Layers))
	}
	seen := map[digest.Digest]bool{}
	for _, d := range im.Contents() {
		if seen[d.Digest] {
			t.Errorf("digest %s appears twice", d.Digest)
		}
		seen[d.Digest] = true
		kind := "blobs"
		if d == im.Manifest {
			kind = "manifests"
		}
		body, status := get(t, reg.URL+"/v2/"+im.Repo+"/"+kind+"/"+d.Digest.String(), http.Header{"Accept": {ManifestAccept}})
		if status != http.StatusOK || digest.FromBytes(body) != d.Digest || int64(len(body)) != d.Size {
			t.Errorf("GET %s = %d, %d bytes hashing to %s; want 200, %d bytes", d.Digest, status, len(body), digest.FromBytes(body), d.Size)
		}
	}
	for _, l := range im.Layers {
		if l.Size < 300<<10 || l.Size > 300<<10+4096 {
			t.Errorf("layer %s is %d bytes, want about %d", l.Digest, l.Size, 300<<10)
		}
	}
	if im.TotalSize() != im.Manifest.Size+im.Config.Size+im.Layers[0].Size+im.Layers[1].Size {
		t.Errorf("TotalSize = %d, does not add up", im.TotalSize())
	}
}

func TestCountingProxy(t *testing.T) {
	RequireTools(t, "registry", "crane")
	reg := StartRegistry(t)
	im := pushTestImage(t, reg, 1, 1<<20)
	p := StartCountingProxy(t, reg.URL)
	layer := im.Layers[0]
	blobURL := p.URL + "/v2/" + im.Repo + "/blobs/" + layer.Digest.String()

	body, status := get(t, blobURL, nil)
	if status != http.StatusOK || digest.FromBytes(body) != layer.Digest {
		t.Fatalf("GET blob through proxy = %d, %s; want 200, %s", status, digest.FromBytes(body), layer.Digest)
	}
	get(t, p.URL+"/v2/"+im.Repo+"/manifests/"+im.Tag, http.Header{"Accept": {ManifestAccept}})
	if err := p.WaitIdle(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.Blob(layer.Digest); got != (Count{Requests: 1, GETs: 1, Bytes: layer.Size}) {
		t.Errorf("Blob(layer) = %+v, want 1 GET of %d bytes", got, layer.Size)
	}
	if got := p.Manifest(im.Tag); got.GETs != 1 || got.Bytes != im.Manifest.Size {
		t.Errorf("Manifest(tag) = %+v, want 1 GET of %d bytes", got, im.Manifest.Size)
	}
	if got := p.Total(KindBlob).Bytes; got != layer.Size {
		t.Errorf("Total(blob).Bytes = %d, want %d", got, layer.Size)
	}

	t.Run("range", func(t *testing.T) {
		body, status := get(t, blobURL, http.Header{"Range": {"bytes=100-"}})
		if status != http.StatusPartialContent || int64(len(body)) != layer.Size-100 {
			t.Errorf("GET Range bytes=100- = %d with %d bytes, want 206 with %d", status, len(body), layer.Size-100)
		}
	})

	t.Run("tamper", func(t *testing.T) {
		p.SetTamper(layer.Digest)
		defer p.SetTamper()
		body, status := get(t, blobURL, nil)
		if status != http.StatusOK || int64(len(body)) != layer.Size || digest.FromBytes(body) == layer.Digest {
			t.Errorf("tampered GET = %d, %d bytes hashing to %s; want 200, %d bytes of other content", status, len(body), digest.FromBytes(body), layer.Size)
		}
		cfg, _ := get(t, p.URL+"/v2/"+im.Repo+"/blobs/"+im.Config.Digest.String(), nil)
		if digest.FromBytes(cfg) != im.Config.Digest {
			t.Errorf("config blob was tampered with too")
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		p.SetRateLimit(4 << 20)
		defer p.SetRateLimit(0)
		start := time.Now()
		get(t, blobURL, nil)
		// 1 MiB at 4 MiB/s with a 256 KiB burst takes at least ~190 ms.
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("1 MiB at 4 MiB/s took %v, want >= 150ms", d)
		}
	})

	t.Run("down", func(t *testing.T) {
		if err := p.SetDown(true); err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Timeout: 5 * time.Second}
		if resp, err := c.Get(blobURL); err == nil {
			resp.Body.Close()
			t.Fatalf("GET while down = %d, want a connection error", resp.StatusCode)
		}
		if err := p.SetDown(false); err != nil {
			t.Fatal(err)
		}
		if _, status := get(t, blobURL, nil); status != http.StatusOK {
			t.Errorf("GET after SetDown(false) = %d, want 200", status)
		}
	})
}

// TestCtrFetch pulls an image with containerd straight from the registry and through the
// counting proxy configured as a mirror in hosts.toml.
func TestCtrFetch(t *testing.T) {
	RequireTools(t, "registry", "crane")
	RequireContainerd(t)
	reg := StartRegistry(t)
	im := pushTestImage(t, reg, 2, 512<<10)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	t.Run("direct", func(t *testing.T) {
		ctr := StartContainerd(t).Ctr()
		if err := ctr.Fetch(ctx, im.Ref(), ""); err != nil {
			t.Fatal(err)
		}
		if err := ctr.VerifyContent(ctx, im.Contents()); err != nil {
			t.Error(err)
		}
	})

	t.Run("mirror", func(t *testing.T) {
		p := StartCountingProxy(t, reg.URL)
		hosts := t.TempDir()
		if err := WriteHostsTOML(hosts, reg.Addr, reg.URL, p.URL); err != nil {
			t.Fatal(err)
		}
		ctr := StartContainerd(t).Ctr()
		ctr.Namespace = "e2e"
		if err := ctr.Fetch(ctx, im.Ref(), hosts); err != nil {
			t.Fatal(err)
		}
		if err := ctr.VerifyContent(ctx, im.Contents()); err != nil {
			t.Error(err)
		}
		for _, d := range im.Blobs() {
			if got := p.Blob(d.Digest); got.GETs != 1 || got.Bytes != d.Size {
				t.Errorf("mirror served blob %s: %+v, want 1 GET of %d bytes", d.Digest, got, d.Size)
			}
		}
		for _, r := range p.Requests() {
			q, _ := url.ParseQuery(r.Query)
			if r.Kind != KindOther && q.Get("ns") != reg.Addr {
				t.Errorf("mirror request %s: ns = %q, want %q", r, q.Get("ns"), reg.Addr)
			}
		}
	})
}

// TestPullThrough pulls from the bare registry, then through a proxy that tampers with a
// layer (a clean 200 of wrong bytes: ErrBadContent) and one that is down (an error, not
// ErrBadContent).
func TestPullThrough(t *testing.T) {
	RequireTools(t, "registry", "crane")
	reg := StartRegistry(t)
	im := pushTestImage(t, reg, 2, 256<<10)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := PullThrough(ctx, reg.URL, im); err != nil {
		t.Fatalf("PullThrough(registry) = %v, want nil", err)
	}
	if err := ResolveTag(ctx, reg.URL, im); err != nil {
		t.Errorf("ResolveTag(registry) = %v, want nil", err)
	}
	p := StartCountingProxy(t, reg.URL)
	p.SetTamper(im.Layers[1].Digest)
	if err := PullThrough(ctx, p.URL, im); !errors.Is(err, ErrBadContent) {
		t.Errorf("PullThrough(tampering proxy) = %v, want ErrBadContent", err)
	}
	if err := p.WaitIdle(ctx, 5*time.Second); err != nil {
		t.Error(err)
	}
	if got := p.Total(KindBlob).GETs; got != len(im.Blobs()) {
		t.Errorf("PullThrough made %d blob GETs, want %d", got, len(im.Blobs()))
	}
	if err := p.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if err := PullThrough(ctx, p.URL, im); err == nil || errors.Is(err, ErrBadContent) {
		t.Errorf("PullThrough(proxy down) = %v, want an error other than ErrBadContent", err)
	}
}

func TestFlipByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blob")
	data := []byte("0123456789")
	if err := os.WriteFile(path, data, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := FlipByte(path, 5); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), data...)
	want[5] ^= 0xff
	got, size, err := FileDigest(path, digest.SHA256)
	if err != nil || got != digest.FromBytes(want) || size != int64(len(data)) {
		t.Errorf("FileDigest after FlipByte = %s, %d, %v; want %s, %d", got, size, err, digest.FromBytes(want), len(data))
	}
}

func TestConformanceReport(t *testing.T) {
	RequireTools(t, "registry", "crane", "conformance")
	reg := StartRegistry(t)
	im := pushTestImage(t, reg, 1, 64<<10)
	rep, err := RunConformance(t.Context(), ConformanceOptions{Registry: reg.Addr, Image: im, ResultsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("conformance against the bare registry: %v\n%s", err, rep.Output)
	}
	if rep.Counts["Pass"] < 10 {
		t.Errorf("conformance: %d passed, want at least 10\n%s", rep.Counts["Pass"], rep.Output)
	}
}

func TestParseConformanceReport(t *testing.T) {
	const failing = `Test results
OCI Conformance Test: FAIL
  OCI Conformance Test/ping: Pass
  OCI Conformance Test/read-only/pull/blob-get: FAIL
    failed to get blob: unexpected status 503

OCI Conformance Result: FAIL
  Disabled......................:         13
  Skip..........................:          0
  Pass..........................:         11
  FAIL..........................:          1
  Error.........................:          0
  Total.........................:         25
`
	rep := parseConformance(failing)
	if rep.Result != "FAIL" || rep.Counts["FAIL"] != 1 || rep.Counts["Pass"] != 11 {
		t.Errorf("parseConformance = %q %v, want FAIL with 1 failure and 11 passes", rep.Result, rep.Counts)
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "read-only/pull/blob-get") {
		t.Errorf("Err() = %v, want it to name the failed test", err)
	}
	if rep := parseConformance("panic: before any report\n"); rep.Err() == nil {
		t.Errorf("Err() of an output without a report = nil, want an error")
	}
}

func get(t *testing.T, url string, h http.Header) ([]byte, int) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return b.Bytes(), resp.StatusCode
}

func TestCPUMeters(t *testing.T) {
	busy, total, _, err := readMachineCPU()
	if err != nil || total == 0 || busy > total {
		t.Fatalf("readMachineCPU() = %d busy of %d, %v", busy, total, err)
	}
	m := StartMachineCPU()
	self0, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 200_000_000 {
		x += i
	}
	_ = x
	frac, secs := m.Used()
	if frac < 0 || frac > 1 || secs < 0 {
		t.Errorf("Used() = %v of the machine, %v CPU-s", frac, secs)
	}
	self1, err := ProcessCPU(os.Getpid())
	if err != nil || self1 <= self0 {
		t.Errorf("ProcessCPU after a busy loop: %v then %v, %v", self0, self1, err)
	}
	if m, err := ProcessMemory(os.Getpid()); err != nil || m.RSS < 1<<20 || m.Peak < m.RSS {
		t.Errorf("ProcessMemory = %+v, %v: want at least a MiB, peak at least that", m, err)
	}
}
