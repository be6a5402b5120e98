package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// ManifestAccept is the Accept header containerd sends when it resolves a reference.
const ManifestAccept = "application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"

// Descriptor names one piece of content: a manifest, a config or a layer.
type Descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// Image is an image pushed to a registry.
type Image struct {
	Registry string // host:port it was pushed to
	Repo     string // e.g. "e2e/app"
	Tag      string
	Manifest Descriptor
	Config   Descriptor
	Layers   []Descriptor
	// ManifestBytes is the manifest exactly as the registry serves it.
	ManifestBytes []byte
}

// Ref is "registry/repo:tag".
func (im Image) Ref() string { return im.Registry + "/" + im.Repo + ":" + im.Tag }

// RefAt is the same reference with another registry host, e.g. a mirror's address.
func (im Image) RefAt(host string) string { return host + "/" + im.Repo + ":" + im.Tag }

// Blobs returns the config followed by the layers.
func (im Image) Blobs() []Descriptor {
	return append([]Descriptor{im.Config}, im.Layers...)
}

// Contents returns the manifest, the config and the layers.
func (im Image) Contents() []Descriptor {
	return append([]Descriptor{im.Manifest}, im.Blobs()...)
}

// BlobBytes is the size of the config plus the layers.
func (im Image) BlobBytes() int64 {
	var n int64
	for _, d := range im.Blobs() {
		n += d.Size
	}
	return n
}

// TotalSize is the size of the manifest, the config and the layers.
func (im Image) TotalSize() int64 { return im.Manifest.Size + im.BlobBytes() }

// PushRandomImage pushes repo:tag to the registry at registryAddr (host:port, plain HTTP)
// with the real crane: an OCI image on an empty base whose layers each hold one file of
// layerSize random, incompressible bytes (the gzip layer blob is slightly larger). It
// checks what the registry then serves against what it built and returns the digests and
// sizes.
func PushRandomImage(ctx context.Context, registryAddr, repo, tag string, layers int, layerSize int64) (Image, error) {
	crane, err := ToolPath("crane")
	if err != nil {
		return Image{}, err
	}
	dir, err := os.MkdirTemp("", "shoal-image-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(dir)

	im := Image{Registry: registryAddr, Repo: repo, Tag: tag}
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", im.Ref()}
	for i := range layers {
		path := filepath.Join(dir, fmt.Sprintf("layer-%d.tar.gz", i))
		d, err := writeRandomLayer(path, fmt.Sprintf("data-%d.bin", i), layerSize)
		if err != nil {
			return Image{}, err
		}
		im.Layers = append(im.Layers, d)
		args = append(args, "-f", path)
	}
	if out, err := runTool(ctx, crane, args...); err != nil {
		return Image{}, fmt.Errorf("push %s: %w\n%s", im.Ref(), err, out)
	}

	manifest, err := runTool(ctx, crane, "manifest", "--insecure", im.Ref())
	if err != nil {
		return Image{}, fmt.Errorf("crane manifest %s: %w\n%s", im.Ref(), err, manifest)
	}
	dgst, err := runTool(ctx, crane, "digest", "--insecure", im.Ref())
	if err != nil {
		return Image{}, fmt.Errorf("crane digest %s: %w\n%s", im.Ref(), err, dgst)
	}
	im.ManifestBytes = manifest
	var m struct {
		MediaType string       `json:"mediaType"`
		Config    Descriptor   `json:"config"`
		Layers    []Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return Image{}, fmt.Errorf("decode manifest of %s: %w", im.Ref(), err)
	}
	im.Manifest = Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	im.Config = m.Config
	if got := digest.Digest(strings.TrimSpace(string(dgst))); got != im.Manifest.Digest {
		return Image{}, fmt.Errorf("crane digest %s = %s, but the manifest hashes to %s", im.Ref(), got, im.Manifest.Digest)
	}
	if len(m.Layers) != len(im.Layers) {
		return Image{}, fmt.Errorf("manifest of %s has %d layers, pushed %d", im.Ref(), len(m.Layers), len(im.Layers))
	}
	for i, l := range m.Layers {
		if l.Digest != im.Layers[i].Digest || l.Size != im.Layers[i].Size {
			return Image{}, fmt.Errorf("manifest of %s: layer %d is %s (%d bytes), pushed %s (%d bytes)",
				im.Ref(), i, l.Digest, l.Size, im.Layers[i].Digest, im.Layers[i].Size)
		}
		im.Layers[i].MediaType = l.MediaType
	}
	config, err := runTool(ctx, crane, "blob", "--insecure", im.Registry+"/"+im.Repo+"@"+im.Config.Digest.String())
	if err != nil {
		return Image{}, fmt.Errorf("crane blob %s: %w\n%s", im.Config.Digest, err, config)
	}
	if got := digest.FromBytes(config); got != im.Config.Digest || int64(len(config)) != im.Config.Size {
		return Image{}, fmt.Errorf("config of %s: served %s (%d bytes), manifest says %s (%d bytes)",
			im.Ref(), got, len(config), im.Config.Digest, im.Config.Size)
	}
	return im, nil
}

// writeRandomLayer writes a gzip layer holding one file of size random bytes. The gzip
// stream is stored, not deflated: random data does not shrink, and crane keeps a layer
// that is already gzipped as it is, so its digest is known here.
func writeRandomLayer(path, name string, size int64) (Descriptor, error) {
	f, err := os.Create(path)
	if err != nil {
		return Descriptor{}, err
	}
	defer f.Close()
	h := digest.SHA256.Digester()
	cw := &countWriter{w: io.MultiWriter(f, h.Hash())}
	zw, err := gzip.NewWriterLevel(cw, gzip.NoCompression)
	if err != nil {
		return Descriptor{}, err
	}
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return Descriptor{}, err
	}
	if _, err := io.CopyN(tw, RandomReader(), size); err != nil {
		return Descriptor{}, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tw.Close(); err != nil {
		return Descriptor{}, err
	}
	if err := zw.Close(); err != nil {
		return Descriptor{}, err
	}
	if err := f.Close(); err != nil {
		return Descriptor{}, err
	}
	return Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: h.Digest(), Size: cw.n}, nil
}

// RandomReader returns a fast source of random bytes, seeded from crypto/rand.
func RandomReader() io.Reader {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.NewChaCha8(seed)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// runTool runs a program to completion and returns its stdout, or its combined output
// when it fails.
func runTool(ctx context.Context, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), fmt.Errorf("%s %s: %w", filepath.Base(path), strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}
