package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// ErrBadContent marks a response that ended cleanly but whose body is not the content asked
// for (other bytes, or another size): a client would have taken wrong data. A transfer cut
// short is a different, plain error: the client knows it failed.
var ErrBadContent = errors.New("wrong content")

// PullThrough fetches im through the registry API at baseURL (http://host:port, a node's
// /v2 mirror or a registry) the way a client does once it knows the manifest digest: GET the
// manifest by digest, then GET the config and every layer, all at once. Each response must
// be a 200 whose body ends cleanly with exactly the size and digest asked for; the errors of
// all that did not are joined, and those that ended cleanly with wrong bytes wrap
// ErrBadContent. It makes no retry and sends no ns, so a node uses its --origin. It opens
// its own connections and closes them before returning.
func PullThrough(ctx context.Context, baseURL string, im Image) error {
	c := newPullClient()
	defer c.CloseIdleConnections()
	base := baseURL + "/v2/" + im.Repo
	if err := fetchVerified(ctx, c, base+"/manifests/"+im.Manifest.Digest.String(), ManifestAccept, im.Manifest); err != nil {
		return fmt.Errorf("pull %s through %s: manifest: %w", im.Repo, baseURL, err)
	}
	blobs := im.Blobs()
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, d := range blobs {
		wg.Go(func() {
			if err := fetchVerified(ctx, c, base+"/blobs/"+d.Digest.String(), "", d); err != nil {
				errs[i] = fmt.Errorf("pull %s through %s: blob %d of %d: %w", im.Repo, baseURL, i+1, len(blobs), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// FetchBlob GETs blob d of repo through the registry API at baseURL, as PullThrough does
// each blob: the answer must be a 200 of exactly d.
func FetchBlob(ctx context.Context, baseURL, repo string, d Descriptor) error {
	c := newPullClient()
	defer c.CloseIdleConnections()
	return fetchVerified(ctx, c, baseURL+"/v2/"+repo+"/blobs/"+d.Digest.String(), "", d)
}

// ResolveTag asks baseURL for im's tag as containerd does (GET with containerd's Accept
// header) and checks that the answer is im's manifest, byte for byte.
func ResolveTag(ctx context.Context, baseURL string, im Image) error {
	c := newPullClient()
	defer c.CloseIdleConnections()
	if err := fetchVerified(ctx, c, baseURL+"/v2/"+im.Repo+"/manifests/"+im.Tag, ManifestAccept, im.Manifest); err != nil {
		return fmt.Errorf("resolve %s:%s through %s: %w", im.Repo, im.Tag, baseURL, err)
	}
	return nil
}

// newPullClient returns a client with its own connections, no timeout of its own (the
// caller's context bounds it) and no transparent decompression, so bodies arrive as sent.
func newPullClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableCompression = true
	t.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetchVerified GETs url and checks that the body is exactly want.
func fetchVerified(ctx context.Context, c *http.Client, url, accept string, want Descriptor) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: status %d, body %q", url, resp.StatusCode, body)
	}
	h := want.Digest.Algorithm().Digester()
	n, err := io.Copy(h.Hash(), resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: transfer cut after %d of %d bytes: %w", url, n, want.Size, err)
	}
	if got := h.Digest(); n != want.Size || got != want.Digest {
		return fmt.Errorf("GET %s: %w: a clean 200 of %d bytes hashing to %s, want %d bytes hashing to %s",
			url, ErrBadContent, n, got, want.Size, want.Digest)
	}
	if hd := resp.Header.Get("Docker-Content-Digest"); hd != "" && hd != want.Digest.String() {
		return fmt.Errorf("GET %s: Docker-Content-Digest %s, want %s", url, hd, want.Digest)
	}
	return nil
}
