package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Registry is a running CNCF distribution registry (`registry serve`) with filesystem
// storage, used as the origin.
type Registry struct {
	*Process
	Addr string // host:port on 127.0.0.1
	URL  string // http://Addr
	Dir  string // storage root, config and log
}

// registryConfig is a minimal config: filesystem storage, deletes on, plain HTTP.
const registryConfig = `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
`

// RunRegistry starts `registry serve` with its storage, config and log under dir and waits
// until GET /v2/ answers. The caller stops it with Close.
func RunRegistry(ctx context.Context, dir string) (*Registry, error) {
	return RunRegistryWith(ctx, dir, RegistryOptions{})
}

// RegistryOptions places a registry somewhere other than a free loopback port.
type RegistryOptions struct {
	// Netns runs the registry inside this network namespace (see NewLink).
	Netns string
	// Addr is the listen address; empty means a free loopback port.
	Addr string
	// ProxyRemote, an http URL, makes the registry a pull-through cache of that registry
	// (distribution's proxy.remoteurl): the usual "registry mirror".
	ProxyRemote string
}

// RunRegistryWith is RunRegistry with options.
func RunRegistryWith(ctx context.Context, dir string, o RegistryOptions) (*Registry, error) {
	bin, err := ToolPath("registry")
	if err != nil {
		return nil, err
	}
	var addr string
	attempt := 0
	p, err := startServer(ctx, o.Addr == "", func() (launch, error) {
		if addr = o.Addr; addr == "" {
			var err error
			if addr, err = FreeAddr(); err != nil {
				return launch{}, err
			}
		}
		cfg := filepath.Join(dir, "config.yml")
		storage := filepath.Join(dir, "storage")
		conf := fmt.Appendf(nil, registryConfig, storage, addr)
		if o.ProxyRemote != "" {
			conf = fmt.Appendf(conf, "proxy:\n  remoteurl: %q\n", o.ProxyRemote)
		}
		if err := os.WriteFile(cfg, conf, 0o644); err != nil {
			return launch{}, fmt.Errorf("write registry config: %w", err)
		}
		attempt++
		return launch{
			name: "registry", logPath: filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt-1)),
			// Without OTEL_TRACES_EXPORTER=none, v3 tries to export traces to localhost:4318.
			env:   []string{"OTEL_TRACES_EXPORTER=none"},
			netns: o.Netns, bin: bin, args: []string{"serve", cfg},
			ready: "http://" + addr + "/v2/", timeout: 30 * time.Second,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Registry{Process: p, Addr: addr, URL: "http://" + addr, Dir: dir}, nil
}

// StartRegistry is RunRegistry for tests: storage in a temp dir, stopped on cleanup, its
// log shown if the test fails.
func StartRegistry(tb testing.TB) *Registry {
	tb.Helper()
	RequireTools(tb, "registry")
	dir := tb.TempDir()
	r, err := RunRegistry(context.Background(), dir)
	if err != nil {
		tb.Fatal(err)
	}
	logOnFailure(tb, r.Process)
	tb.Cleanup(func() { r.Close() })
	return r
}

// Close stops the registry: SIGTERM, then SIGKILL after 5 s.
func (r *Registry) Close() error {
	err := r.Stop(5 * time.Second)
	if errors.Is(err, ErrKilled) {
		return err
	}
	// registry exits non-zero on SIGTERM in some versions; that is not a failure here.
	return nil
}

// waitHTTP polls url until it answers with status, p exits, or timeout passes.
func waitHTTP(ctx context.Context, p *Process, url string, status int, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	return Poll(ctx, fmt.Sprintf("%s to answer GET %s with %d", p.Name, url, status), timeout, func() error {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited during start-up (%v): %w", p.Name, err, errGiveUp)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", err, errGiveUp)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != status {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}
