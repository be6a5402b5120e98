package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Containerd is a running containerd daemon with its root, state and sockets under Dir.
type Containerd struct {
	*Process
	Dir     string
	Address string // the gRPC socket ctr talks to
}

const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`

// RunContainerd starts `containerd --config DIR/config.toml` with everything under dir and
// waits until ctr can talk to it. dir must be short: unix socket paths are limited to 108
// bytes. The caller stops it with Close.
func RunContainerd(ctx context.Context, dir string) (*Containerd, error) {
	bin, err := ToolPath("containerd")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	if len(c.Address) > 100 {
		return nil, fmt.Errorf("containerd socket path %s is too long for a unix socket", c.Address)
	}
	cfg := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		c.Address, filepath.Join(dir, "containerd-ttrpc.sock"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	p, err := startProcess("containerd", filepath.Join(dir, "containerd.log"), nil, bin, "--config", cfg)
	if err != nil {
		return nil, err
	}
	c.Process = p
	ctr := c.Ctr()
	err = Poll(ctx, "containerd to answer on "+c.Address, 30*time.Second, func() error {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("containerd exited during start-up (%v): %w", err, errGiveUp)
		}
		if _, err := os.Stat(c.Address); err != nil {
			return err
		}
		_, err := ctr.Run(ctx, "version")
		return err
	})
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("start containerd: %w\n%s", err, p.LogTail(20))
	}
	return c, nil
}

// StartContainerd is RunContainerd for tests, in a fresh temp dir. It skips the test unless
// it runs as root with containerd installed (in CI it fails instead). containerd is stopped
// on cleanup and its log shown if the test fails.
func StartContainerd(tb testing.TB) *Containerd {
	tb.Helper()
	RequireContainerd(tb)
	dir := tempDir(tb, "ctd-", true)
	c, err := RunContainerd(context.Background(), dir)
	if err != nil {
		tb.Fatal(err)
	}
	logOnFailure(tb, c.Process)
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("stop containerd: %v", err)
		}
	})
	return c
}

// Close stops containerd: SIGTERM, then SIGKILL after 10 s.
func (c *Containerd) Close() error {
	err := c.Stop(10 * time.Second)
	if errors.Is(err, ErrKilled) {
		return err
	}
	return nil
}

// Ctr returns a ctr client of this daemon in the namespace "default".
func (c *Containerd) Ctr() Ctr {
	path, _ := ToolPath("ctr")
	return Ctr{Path: path, Address: c.Address, Namespace: "default"}
}

// Ctr runs the real ctr against one containerd.
type Ctr struct {
	Path      string // the ctr binary
	Address   string // containerd's gRPC socket
	Namespace string // containerd namespace; empty means ctr's default
}

// Run runs `ctr --address A [--namespace N] ARGS` and returns its stdout.
func (c Ctr) Run(ctx context.Context, args ...string) ([]byte, error) {
	if c.Path == "" {
		return nil, errors.New("ctr is not installed (run scripts/install-tools.sh)")
	}
	full := []string{"--address", c.Address}
	if c.Namespace != "" {
		full = append(full, "--namespace", c.Namespace)
	}
	out, err := runTool(ctx, c.Path, append(full, args...)...)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	return out, nil
}

// Fetch pulls every piece of ref into containerd's content store with
// `ctr content fetch --hosts-dir DIR --plain-http REF`. With a hosts.toml for the ref's
// registry under hostsDir (see WriteHostsTOML), containerd tries the mirror first.
func (c Ctr) Fetch(ctx context.Context, ref, hostsDir string) error {
	args := []string{"content", "fetch", "--plain-http"}
	if hostsDir != "" {
		args = append(args, "--hosts-dir", hostsDir)
	}
	_, err := c.Run(ctx, append(args, ref)...)
	return err
}

// ContentInfo is one entry of `ctr content ls`.
type ContentInfo struct {
	Digest digest.Digest
	Size   int64
}

// ContentList lists the content store with `ctr content ls`. Its sizes are rounded; use
// ContentDigest for exact ones.
func (c Ctr) ContentList(ctx context.Context) ([]ContentInfo, error) {
	out, err := c.Run(ctx, "content", "ls")
	if err != nil {
		return nil, err
	}
	var infos []ContentInfo
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] == "DIGEST" {
			continue
		}
		d, err := digest.Parse(f[0])
		if err != nil {
			return nil, fmt.Errorf("ctr content ls: line %q: %w", sc.Text(), err)
		}
		size, err := parseHumanSize(f[1])
		if err != nil {
			return nil, fmt.Errorf("ctr content ls: line %q: %w", sc.Text(), err)
		}
		infos = append(infos, ContentInfo{Digest: d, Size: size})
	}
	return infos, nil
}

// parseHumanSize reads the sizes ctr prints (go-units HumanSize: "426B", "3.146MB"); they
// are rounded, so only good for a rough check.
func parseHumanSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, err
			}
			return int64(f * u.mult), nil
		}
	}
	return 0, fmt.Errorf("size %q has no unit", s)
}

// ContentDigest streams `ctr content get D` and returns the digest and size of what
// containerd holds under d.
func (c Ctr) ContentDigest(ctx context.Context, d digest.Digest) (digest.Digest, int64, error) {
	args := []string{"--address", c.Address}
	if c.Namespace != "" {
		args = append(args, "--namespace", c.Namespace)
	}
	cmd := exec.CommandContext(ctx, c.Path, append(args, "content", "get", d.String())...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	h := d.Algorithm().Digester()
	n, copyErr := io.Copy(h.Hash(), out)
	if err := cmd.Wait(); err != nil {
		return "", 0, fmt.Errorf("ctr content get %s: %w\n%s", d, err, stderr.String())
	}
	if copyErr != nil {
		return "", 0, fmt.Errorf("ctr content get %s: %w", d, copyErr)
	}
	return h.Digest(), n, nil
}

// VerifyContent checks that containerd holds every descriptor in want with the right size,
// and that everything in its content store hashes to its digest.
func (c Ctr) VerifyContent(ctx context.Context, want []Descriptor) error {
	infos, err := c.ContentList(ctx)
	if err != nil {
		return err
	}
	have := map[digest.Digest]bool{}
	var errs []error
	for _, info := range infos {
		have[info.Digest] = true
		got, n, err := c.ContentDigest(ctx, info.Digest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if got != info.Digest {
			errs = append(errs, fmt.Errorf("containerd holds %s with content hashing to %s", info.Digest, got))
		}
		for _, w := range want {
			if w.Digest == info.Digest && w.Size != n {
				errs = append(errs, fmt.Errorf("containerd holds %s with %d bytes, want %d", info.Digest, n, w.Size))
			}
		}
	}
	for _, w := range want {
		if !have[w.Digest] {
			errs = append(errs, fmt.Errorf("containerd does not hold %s (%s)", w.Digest, w.MediaType))
		}
	}
	return errors.Join(errs...)
}

// WriteHostsTOML writes hostsDir/<registryHost>/hosts.toml so that containerd resolves and
// pulls images of registryHost from the mirrors first, in order, then from serverURL.
func WriteHostsTOML(hostsDir, registryHost, serverURL string, mirrorURLs ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "server = %q\n", serverURL)
	for _, m := range mirrorURLs {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	dir := filepath.Join(hostsDir, registryHost)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(b.String()), 0o644)
}
