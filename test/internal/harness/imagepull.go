package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// PullOptions configures PullImage.
type PullOptions struct {
	// HostsDir is containerd's registry config_path: DIR/<host>/hosts.toml names the mirrors
	// tried first and the server to fall through to (see WriteHostsTOML).
	HostsDir string
	// Dial opens the client's connections; default a plain net.Dialer. DialerIn places the
	// client in a network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Concurrency is how many blobs are fetched at once; default 3, as kubelet and
	// containerd's CRI plugin do (max_concurrent_downloads).
	Concurrency int
}

// ImagePull is what PullImage fetched and verified.
type ImagePull struct {
	Manifest ocispec.Descriptor
	Blobs    int   // config and layers
	Bytes    int64 // manifest, config and layers
}

// PullImage pulls ref as containerd does, with containerd's own resolver and fetcher
// configured from hosts.toml: resolve the tag (through the mirrors with the resolve
// capability, then the server), fetch the manifest (for an index, this platform's), then the
// config and every layer. Each body is hashed and must match its descriptor's digest and
// size; the bytes are then dropped, so no content store competes for the disk.
func PullImage(ctx context.Context, ref string, o PullOptions) (ImagePull, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 3
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if o.Dial != nil {
		transport.DialContext = o.Dial
	}
	transport.DisableCompression = true
	defer transport.CloseIdleConnections()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{
			HostDir: config.HostDirFromRoot(o.HostsDir),
			UpdateClient: func(c *http.Client) error {
				c.Transport = transport
				return nil
			},
		}),
	})
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		return ImagePull{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return ImagePull{}, fmt.Errorf("fetcher for %s: %w", name, err)
	}
	var pull ImagePull
	for range 2 { // an index, then the manifest it names
		body, err := fetchDescriptor(ctx, fetcher, desc, 4<<20)
		if err != nil {
			return ImagePull{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		pull.Bytes += desc.Size
		if !images.IsIndexType(desc.MediaType) {
			var m ocispec.Manifest
			if err := json.Unmarshal(body, &m); err != nil {
				return ImagePull{}, fmt.Errorf("pull %s: decode manifest %s: %w", ref, desc.Digest, err)
			}
			pull.Manifest = desc
			blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(o.Concurrency)
			for _, b := range blobs {
				g.Go(func() error {
					if _, err := fetchDescriptor(gctx, fetcher, b, 0); err != nil {
						return fmt.Errorf("pull %s: %w", ref, err)
					}
					return nil
				})
				pull.Bytes += b.Size
			}
			pull.Blobs = len(blobs)
			return pull, g.Wait()
		}
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return ImagePull{}, fmt.Errorf("pull %s: decode index %s: %w", ref, desc.Digest, err)
		}
		match := platforms.Default()
		found := false
		for _, m := range idx.Manifests {
			if m.Platform != nil && match.Match(*m.Platform) {
				desc, found = m, true
				break
			}
		}
		if !found {
			return ImagePull{}, fmt.Errorf("pull %s: index %s has no manifest for %s", ref, desc.Digest, platforms.DefaultString())
		}
	}
	return ImagePull{}, fmt.Errorf("pull %s: an index inside an index", ref)
}

// fetchDescriptor fetches d and checks its size and digest. It keeps and returns the body
// when keep > 0 (at most keep bytes), as for a manifest; otherwise it only hashes it.
func fetchDescriptor(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor, keep int64) ([]byte, error) {
	if keep > 0 && d.Size > keep {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", d.Digest, d.Size, keep)
	}
	if err := d.Digest.Validate(); err != nil {
		return nil, err
	}
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	defer rc.Close()
	h := d.Digest.Algorithm().Digester()
	var w io.Writer = h.Hash()
	var buf bytes.Buffer
	if keep > 0 {
		buf.Grow(int(d.Size))
		w = io.MultiWriter(h.Hash(), &buf)
	}
	n, err := io.Copy(w, io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: cut after %d of %d bytes: %w", d.Digest, n, d.Size, err)
	}
	if n != d.Size {
		return nil, fmt.Errorf("fetch %s: %w: %d bytes, want %d", d.Digest, ErrBadContent, n, d.Size)
	}
	if got := h.Digest(); got != d.Digest {
		return nil, fmt.Errorf("fetch %s: %w: bytes hash to %s", d.Digest, ErrBadContent, got)
	}
	return buf.Bytes(), nil
}
