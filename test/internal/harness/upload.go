package harness

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

var uploadClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// UploadRandomBlob writes size random bytes to path (removed afterwards), pushes them to the
// registry at registryURL as one monolithic upload to repo, and returns the digest.
func UploadRandomBlob(ctx context.Context, registryURL, repo string, size int64, path string) (digest.Digest, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer os.Remove(path)
	defer f.Close()
	h := sha256.New()
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size); err != nil {
		return "", err
	}
	d := digest.NewDigest(digest.SHA256, h)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, registryURL+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := uploadClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("start upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = registryURL + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc+sep+"digest="+d.String(), f)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = uploadClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("finish upload: %s", resp.Status)
	}
	return d, nil
}
