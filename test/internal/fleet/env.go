package fleet

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// Config describes a fleet and the image rolled out to it.
type Config struct {
	Hosts      int
	HostLink   string // tc rate of every host's link, e.g. "1gbit"
	OriginLink string // tc rate of the origin registry's link, e.g. "250mbit"
	CacheLink  string // the central cache's link; empty means HostLink
	Layers     int    // the image: this many layers of LayerSize random bytes
	LayerSize  int64
	// WorkDir holds the registries' storage, the nodes' data and the logs. The fleet's
	// hosts share this machine's one disk, which no real fleet does, so it is best in
	// memory: /dev/shm is used when empty and it exists.
	WorkDir string
	Keep    bool      // keep WorkDir afterwards
	Log     io.Writer // progress lines; nil discards
}

// Env is a fleet with the origin registry up and the image pushed to it.
type Env struct {
	Config
	Net *Net
	// Origin is the real distribution registry, in the origin's namespace; Counter is the
	// counting proxy in front of it, also there, so every byte the origin sends is counted
	// at the origin's side of its link before it crosses it.
	Origin     *harness.Registry
	Counter    *harness.CountingProxy
	OriginHost string // host:port of the origin in image references
	Image      harness.Image
	ImageBytes int64 // manifest, config and layers
	ShoalBin   string

	work    string
	ownWork bool
	undo    []func()
}

// WorkDir is where the registries' storage, the nodes' data and the logs are.
func (e *Env) WorkDir() string { return e.work }

// Ref is the image reference every host pulls.
func (e *Env) Ref() string { return e.Image.Ref() }

// Setup builds the network, starts the origin, pushes the image to it (before the links are
// shaped, so that takes no time) and shapes the links. Close undoes all of it.
func Setup(ctx context.Context, c Config) (_ *Env, err error) {
	if c.CacheLink == "" {
		c.CacheLink = c.HostLink
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Layers < 1 || c.LayerSize < 1 {
		return nil, fmt.Errorf("image of %d layers of %d bytes: want at least one byte", c.Layers, c.LayerSize)
	}
	e := &Env{Config: c}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.ShoalBin, err = harness.ShoalBinary(); err != nil {
		return nil, err
	}
	if e.work = c.WorkDir; e.work == "" {
		parent := ""
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			parent = "/dev/shm"
		}
		if e.work, err = os.MkdirTemp(parent, "shoal-fleet-"); err != nil {
			return nil, err
		}
		e.ownWork = true
	}
	if e.Net, err = BuildNet(NetOptions{Hosts: c.Hosts, HostLink: c.HostLink, OriginLink: c.OriginLink, CacheLink: c.CacheLink}); err != nil {
		return nil, err
	}
	e.undo = append(e.undo, func() { e.Net.Close() })

	dir := filepath.Join(e.work, "origin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The registry listens on the origin's address, where this process can see it come up;
	// the counting proxy reaches it from inside the namespace, so nothing crosses the link
	// twice.
	if e.Origin, err = harness.RunRegistryWith(ctx, dir, harness.RegistryOptions{Netns: e.Net.Origin.Netns, Addr: e.Net.Origin.IP + ":5001"}); err != nil {
		return nil, err
	}
	e.undo = append(e.undo, func() { e.Origin.Close() })
	e.OriginHost = e.Net.Origin.IP + ":5000"
	if e.Counter, err = harness.NewCountingProxyIn(e.Net.Origin.Netns, e.OriginHost, e.Origin.URL); err != nil {
		return nil, err
	}
	e.undo = append(e.undo, func() { e.Counter.Close() })

	start := time.Now()
	if e.Image, err = harness.PushRandomImage(ctx, e.OriginHost, "fleet/app", "v1", c.Layers, c.LayerSize); err != nil {
		return nil, err
	}
	e.ImageBytes = e.Image.TotalSize()
	fmt.Fprintf(c.Log, "pushed %s: %d layers, %d bytes in all (%.1fs)\n", e.Ref(), c.Layers, e.ImageBytes, time.Since(start).Seconds())
	if err := e.Net.Shape(); err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops everything and removes the fleet's network and, unless Keep, its files.
// Calling it again does nothing.
func (e *Env) Close() error {
	for i := len(e.undo) - 1; i >= 0; i-- {
		e.undo[i]()
	}
	e.undo = nil
	if e.ownWork && !e.Keep {
		return os.RemoveAll(e.work)
	}
	return nil
}

// runDir returns a fresh directory for one run's files.
func (e *Env) runDir(name string) (string, error) {
	dir := filepath.Join(e.work, name)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}
