package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const shoalModule = "github.com/shoal-dev/shoal"

var shoalBuild struct {
	once sync.Once
	path string
	dir  string
	err  error
}

// ShoalBinary builds cmd/shoal once per process and returns the binary's path. SHOAL_BIN,
// when set, names a binary to use instead.
func ShoalBinary() (string, error) {
	b := &shoalBuild
	b.once.Do(func() {
		if p := os.Getenv("SHOAL_BIN"); p != "" {
			b.path, b.err = filepath.Abs(p)
			return
		}
		root, err := ModuleRoot()
		if err != nil {
			b.err = err
			return
		}
		b.dir, err = os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			b.err = err
			return
		}
		out := filepath.Join(b.dir, "shoal")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/shoal")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/shoal in %s: %w\n%s", root, err, msg)
			return
		}
		b.path = out
	})
	return b.path, b.err
}

// BuildShoal is ShoalBinary for tests: it fails tb when the build failed.
func BuildShoal(tb testing.TB) string {
	tb.Helper()
	p, err := ShoalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// RemoveBuilds deletes what ShoalBinary built. TestMain calls it after the tests.
func RemoveBuilds() {
	if shoalBuild.dir != "" {
		os.RemoveAll(shoalBuild.dir)
	}
}

// ModuleRoot finds the shoal repository: the nearest parent of the working directory whose
// go.mod declares module github.com/shoal-dev/shoal.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					if strings.Trim(strings.TrimSpace(mod), `"`) == shoalModule {
						f.Close()
						return dir, nil
					}
					break
				}
			}
			f.Close()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", shoalModule)
		}
		dir = parent
	}
}

// NodeOptions configures `shoal node`.
type NodeOptions struct {
	Binary       string   // default: ShoalBinary
	DataDir      string   // --data-dir; StartNode defaults to a temp dir
	Origin       string   // --origin URL, used for requests without ns
	Upstreams    []string // --upstream HOST=URL, repeatable
	CacheSize    string   // --cache-size, e.g. "64MiB"; empty leaves the default
	Args         []string // more flags
	RegistryAddr string   // --registry-addr; default a free loopback address
	AdminAddr    string   // --admin-addr; default a free loopback address
	LogPath      string   // where stdout and stderr go; StartNode defaults to a temp dir
	ReadyTimeout time.Duration
	// Netns runs the node inside this network namespace (see NewLink). Its loopback is not
	// this one's, so RegistryAddr and AdminAddr are then required: addresses in the
	// namespace that this process can reach, such as the Link's PeerAddr.
	Netns string
}

// Node is a running `shoal node`.
type Node struct {
	*Process
	RegistryAddr string
	AdminAddr    string
	URL          string // http://RegistryAddr, the /v2 mirror
	AdminURL     string // http://AdminAddr
	DataDir      string

	client  *http.Client
	stopped stopOnce
}

// NodeStopTimeout is how long a node may take to exit after SIGTERM.
const NodeStopTimeout = 10 * time.Second

// RunNode starts `shoal node` and waits until GET /readyz on its admin address answers
// 200. The caller stops it with Close.
func RunNode(ctx context.Context, o NodeOptions) (*Node, error) {
	if o.Binary == "" {
		p, err := ShoalBinary()
		if err != nil {
			return nil, err
		}
		o.Binary = p
	}
	if o.DataDir == "" || o.LogPath == "" {
		return nil, errors.New("start shoal node: DataDir and LogPath are required")
	}
	if o.Netns != "" && (o.RegistryAddr == "" || o.AdminAddr == "") {
		return nil, fmt.Errorf("start shoal node in namespace %s: RegistryAddr and AdminAddr are required", o.Netns)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	pickRegistry, pickAdmin := o.RegistryAddr == "", o.AdminAddr == ""
	p, err := startServer(ctx, pickRegistry || pickAdmin, func() (launch, error) {
		var err error
		if pickRegistry {
			if o.RegistryAddr, err = FreeAddr(); err != nil {
				return launch{}, err
			}
		}
		if pickAdmin {
			if o.AdminAddr, err = FreeAddr(); err != nil {
				return launch{}, err
			}
		}
		args := []string{"node",
			"--registry-addr", o.RegistryAddr,
			"--admin-addr", o.AdminAddr,
			"--data-dir", o.DataDir,
			"--log-format", "json",
			"--log-level", "debug",
		}
		if o.Origin != "" {
			args = append(args, "--origin", o.Origin)
		}
		for _, u := range o.Upstreams {
			args = append(args, "--upstream", u)
		}
		if o.CacheSize != "" {
			args = append(args, "--cache-size", o.CacheSize)
		}
		return launch{
			name: "shoal node", logPath: o.LogPath, netns: o.Netns, bin: o.Binary,
			args: append(args, o.Args...), ready: "http://" + o.AdminAddr + "/readyz", timeout: o.ReadyTimeout,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Node{
		Process:      p,
		RegistryAddr: o.RegistryAddr,
		AdminAddr:    o.AdminAddr,
		URL:          "http://" + o.RegistryAddr,
		AdminURL:     "http://" + o.AdminAddr,
		DataDir:      o.DataDir,
		client:       &http.Client{Timeout: 10 * time.Second},
	}, nil
}

// StartNode is RunNode for tests. The data dir defaults to a temp dir and the log goes to
// another. On cleanup the node gets SIGTERM and the test fails unless it exits cleanly
// within NodeStopTimeout; its log is shown if the test failed.
func StartNode(tb testing.TB, o NodeOptions) *Node {
	tb.Helper()
	if o.Binary == "" {
		o.Binary = BuildShoal(tb)
	}
	if o.LogPath == "" {
		o.LogPath = filepath.Join(tb.TempDir(), "shoal-node.log")
	}
	if o.DataDir == "" {
		o.DataDir = tb.TempDir()
	}
	n, err := RunNode(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	logOnFailure(tb, n.Process)
	n.stopped.stopOnCleanup(tb, "shoal node", n.stop)
	return n
}

// CloseNodes closes every node of nodes at once (nil entries are skipped) and joins their
// errors.
func CloseNodes(nodes []*Node) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n != nil {
			wg.Go(func() { errs[i] = n.Close() })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close sends SIGTERM and waits up to NodeStopTimeout. It returns an error if the node had
// to be killed or exited with a non-zero status. Calling it again returns the same result.
func (n *Node) Close() error { return n.stopped.close(n.stop) }

// Kill stops the node at once with SIGKILL, as a crash would. The node then counts as
// closed: Close and the test cleanup report nothing.
func (n *Node) Kill() {
	n.stopped.kill(func() {
		n.Process.Kill()
		n.client.CloseIdleConnections()
	})
}

func (n *Node) stop() error {
	defer n.client.CloseIdleConnections()
	return n.Stop(NodeStopTimeout)
}

// Metrics are the node's Prometheus metric families by name.
type Metrics map[string]*dto.MetricFamily

// Metrics reads and parses GET /metrics on the admin address.
func (n *Node) Metrics(ctx context.Context) (Metrics, error) {
	return readMetrics(ctx, n.client, n.AdminURL+"/metrics")
}

// readMetrics reads and parses the Prometheus text at url.
func readMetrics(ctx context.Context, c *http.Client, url string) (Metrics, error) {
	body, err := getOK(ctx, c, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return Metrics(fams), nil
}

// Labels selects samples: each given label must have the given value.
type Labels map[string]string

// Sum adds up the samples of family name whose labels match (counters, gauges and untyped
// samples; the sample sum for summaries and histograms). A missing family sums to 0.
func (m Metrics) Sum(name string, match Labels) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
	var sum float64
	for _, s := range fam.GetMetric() {
		if !labelsMatch(s.GetLabel(), match) {
			continue
		}
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		case s.Summary != nil:
			sum += s.GetSummary().GetSampleSum()
		case s.Histogram != nil:
			sum += s.GetHistogram().GetSampleSum()
		}
	}
	return sum
}

// Count adds up the sample counts of the histograms and summaries of family name whose
// labels match: how many observations were made. A missing family counts 0.
func (m Metrics) Count(name string, match Labels) uint64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
	var n uint64
	for _, s := range fam.GetMetric() {
		if !labelsMatch(s.GetLabel(), match) {
			continue
		}
		switch {
		case s.Summary != nil:
			n += s.GetSummary().GetSampleCount()
		case s.Histogram != nil:
			n += s.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// Has reports whether family name exists.
func (m Metrics) Has(name string) bool { return m[name] != nil }

func labelsMatch(have []*dto.LabelPair, want Labels) bool {
	for k, v := range want {
		found := false
		for _, l := range have {
			if l.GetName() == k && l.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// NodeStatus is the JSON of GET /status. Raw keeps every field, named here or not.
type NodeStatus struct {
	Version      string   `json:"version"`
	PeerID       string   `json:"peerID"`
	Addrs        []string `json:"addrs"`
	Peers        int      `json:"peers"`
	RegistryAddr string   `json:"registryAddr"`
	Upstreams    []string `json:"upstreams"`
	Cache        struct {
		Bytes         int64 `json:"bytes"`
		Blobs         int   `json:"blobs"`
		CapacityBytes int64 `json:"capacityBytes"`
		Evictions     int64 `json:"evictions"`
	} `json:"cache"`
	Downloads int            `json:"downloads"`
	Raw       map[string]any `json:"-"`
}

// Status reads GET /status on the admin address.
func (n *Node) Status(ctx context.Context) (NodeStatus, error) {
	body, err := n.adminGet(ctx, "/status")
	if err != nil {
		return NodeStatus{}, err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return NodeStatus{}, fmt.Errorf("read %s/status: %w", n.AdminURL, err)
	}
	var st NodeStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return NodeStatus{}, fmt.Errorf("decode %s/status: %w", n.AdminURL, err)
	}
	if err := json.Unmarshal(b, &st.Raw); err != nil {
		return NodeStatus{}, fmt.Errorf("decode %s/status: %w", n.AdminURL, err)
	}
	return st, nil
}

func (n *Node) adminGet(ctx context.Context, path string) (io.ReadCloser, error) {
	return getOK(ctx, n.client, n.AdminURL+path)
}

// getOK GETs url and returns the body of a 200 answer; any other status is an error that
// quotes the start of the body.
func getOK(ctx context.Context, c *http.Client, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: status %d %q", url, resp.StatusCode, b)
	}
	return resp.Body, nil
}

// BlobPath is where the node keeps committed blob d: DATA-DIR/blobs/<alg>/<hex>.
func (n *Node) BlobPath(d digest.Digest) string {
	return filepath.Join(n.DataDir, "blobs", string(d.Algorithm()), d.Encoded())
}

// CheckStored checks that the node holds each of ds committed on disk with the right size
// and content.
func (n *Node) CheckStored(ds ...Descriptor) error {
	var errs []error
	for _, d := range ds {
		got, size, err := FileDigest(n.BlobPath(d.Digest), d.Digest.Algorithm())
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("node %s does not hold %s: %w", n.URL, d.Digest, err))
		case got != d.Digest || size != d.Size:
			errs = append(errs, fmt.Errorf("node %s holds %s with %d bytes hashing to %s, want %d bytes",
				n.URL, d.Digest, size, got, d.Size))
		}
	}
	return errors.Join(errs...)
}

// WaitStored polls CheckStored until it passes or timeout passes: a node may commit a blob
// a moment after its client has read the last byte.
func (n *Node) WaitStored(ctx context.Context, timeout time.Duration, ds ...Descriptor) error {
	return Poll(ctx, fmt.Sprintf("node %s to commit %d blobs", n.URL, len(ds)), timeout, func() error {
		return n.CheckStored(ds...)
	})
}

// FileDigest hashes the file at path with alg and returns the digest and the size.
func FileDigest(path string, alg digest.Algorithm) (digest.Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := alg.Digester()
	size, err := io.Copy(h.Hash(), f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Digest(), size, nil
}

// FlipByte inverts the byte at off in the file at path, in place, as bit rot on a disk
// would: the size and the name stay, the content no longer matches its digest.
func FlipByte(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		f.Close()
		return fmt.Errorf("flip byte %d of %s: %w", off, path, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return fmt.Errorf("flip byte %d of %s: %w", off, path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flip byte %d of %s: %w", off, path, err)
	}
	return f.Close()
}
