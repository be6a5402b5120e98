package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// The directory layout:
//
//	blobs/<alg>/<hex>              committed blob
//	blobs/<alg>/<hex>.mediatype    its media type, only when non-empty
//	blobs/<alg>/<hex>.chunks-<cs>  its chunk list for chunk size cs (see chunklist.go)
//	partial/<alg>-<hex>            partial download, full size, written at any offset
//	partial/<alg>-<hex>.chunks     its chunk bitmap (see bitmap.go)
//	tmp/                           Put temp files and dropped files awaiting unlink
//
// Everything under tmp/ is garbage once the store that wrote it is gone, so Open clears it.
// Every path is built from a digest that passed validate.
const (
	blobsDir     = "blobs"
	partialDir   = "partial"
	tmpDir       = "tmp"
	typeSuffix   = ".mediatype"
	chunksSuffix = ".chunks"
	listSuffix   = ".chunks-" // followed by the chunk size in decimal
)

func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, blobsDir, string(d.Algorithm()), d.Encoded())
}

func (s *Store) typePath(d digest.Digest) string { return s.blobPath(d) + typeSuffix }

func (s *Store) listPath(d digest.Digest, chunkSize int64) string {
	return s.blobPath(d) + listSuffix + strconv.FormatInt(chunkSize, 10)
}

// parseListName recognises the name of a chunk list sidecar in the directory of alg.
func parseListName(alg digest.Algorithm, name string) (hex string, chunkSize int64, ok bool) {
	hex, num, ok := strings.Cut(name, listSuffix)
	if !ok || digest.NewDigestFromEncoded(alg, hex).Validate() != nil {
		return "", 0, false
	}
	cs, err := strconv.ParseInt(num, 10, 64)
	if err != nil || strconv.FormatInt(cs, 10) != num || checkChunkSize(cs) != nil {
		return "", 0, false
	}
	return hex, cs, true
}

func (s *Store) partialPath(d digest.Digest) string {
	return filepath.Join(s.dir, partialDir, string(d.Algorithm())+"-"+d.Encoded())
}

func (s *Store) chunksPath(d digest.Digest) string { return s.partialPath(d) + chunksSuffix }

// writeTemp writes data to a new file under tmp/ and syncs it, so that once renamed into place
// a power loss cannot leave a committed name over incomplete content. Its mtime is set from
// the store's clock because it becomes the blob's recency after a restart.
func (s *Store) writeTemp(data []byte) (string, error) {
	path := filepath.Join(s.dir, tmpDir, fmt.Sprintf("put-%d", fileSeq.Add(1)))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		now := s.now()
		err = os.Chtimes(path, now, now)
	}
	if err != nil {
		_ = os.Remove(path) // the write error is the one worth reporting
		return "", err
	}
	return path, nil
}

// Writable checks that the store can still take new content: it creates, writes and removes
// a small file where new blobs are written first. A full disk, a read-only remount or a
// removed data directory make it fail.
func (s *Store) Writable() error {
	path := filepath.Join(s.dir, tmpDir, fmt.Sprintf("probe-%d", fileSeq.Add(1)))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("ok"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(path); err == nil {
		err = rerr
	}
	return err
}

// clearTmp removes what a previous run left in tmp/.
func (s *Store) clearTmp() error {
	dir := filepath.Join(s.dir, tmpDir)
	names, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n.Name())); err != nil {
			return err
		}
	}
	return nil
}

// found is an entry discovered on disk, with the mtime that places it in the recency order.
type found struct {
	*entry
	mtime time.Time
}

// scanBlobs indexes the committed blobs. Files it does not recognise are left alone with a
// warning; orphaned sidecars (a crash between the two renames of a Put, or while a dropped
// blob's sidecars were removed) go. Chunk lists are attributed to their blob by name only:
// ChunkList checks their content when it reads them, which keeps a restart cheap.
func (s *Store) scanBlobs() ([]found, error) {
	root := filepath.Join(s.dir, blobsDir)
	algs, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var blobs []found
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		dir := filepath.Join(root, a.Name())
		if !a.IsDir() || !alg.Available() {
			s.log.Warn("ignoring unexpected entry in store", "err", fmt.Errorf("%s: not a digest algorithm directory", dir))
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		byHex := make(map[string]*entry)
		var sidecars []string
		type list struct {
			hex       string
			chunkSize int64
		}
		var lists []list
		for _, f := range files {
			name := f.Name()
			if hex, ok := strings.CutSuffix(name, typeSuffix); ok {
				sidecars = append(sidecars, hex)
				continue
			}
			if hex, cs, ok := parseListName(alg, name); ok && f.Type().IsRegular() {
				lists = append(lists, list{hex, cs})
				continue
			}
			d := digest.NewDigestFromEncoded(alg, name)
			if d.Validate() != nil || !f.Type().IsRegular() {
				s.log.Warn("ignoring unexpected entry in store", "err", fmt.Errorf("%s: not a blob", filepath.Join(dir, name)))
				continue
			}
			fi, err := f.Info()
			if err != nil {
				return nil, err
			}
			e := &entry{digest: d, size: fi.Size()}
			byHex[name] = e
			blobs = append(blobs, found{entry: e, mtime: fi.ModTime()})
		}
		for _, hex := range sidecars {
			path := filepath.Join(dir, hex+typeSuffix)
			e := byHex[hex]
			if e == nil {
				if err := os.Remove(path); err != nil {
					return nil, err
				}
				continue
			}
			mt, err := readLimited(path, maxMediaType)
			if err != nil {
				// The blob itself is fine; only its Content-Type degrades.
				s.log.Warn("unreadable media type", "digest", e.digest, "err", err)
				continue
			}
			e.mediaType = string(mt)
		}
		for _, l := range lists {
			e := byHex[l.hex]
			if e == nil {
				if err := os.Remove(filepath.Join(dir, l.hex+listSuffix+strconv.FormatInt(l.chunkSize, 10))); err != nil {
					return nil, err
				}
				continue
			}
			e.chunkLists = append(e.chunkLists, l.chunkSize)
		}
	}
	return blobs, nil
}

// scanPartials keeps every partial download whose bitmap and data file agree. Malformed ones
// are dropped with a warning, as are halves of a pair (a crash while creating one) and
// partials of content already committed.
func (s *Store) scanPartials(blobs []found) ([]found, error) {
	committed := make(map[digest.Digest]bool, len(blobs))
	for _, b := range blobs {
		committed[b.digest] = true
	}
	dir := filepath.Join(s.dir, partialDir)
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	seen := make(map[digest.Digest]bool)
	var partials []found
	for _, f := range files {
		base, _ := strings.CutSuffix(f.Name(), chunksSuffix)
		alg, hex, _ := strings.Cut(base, "-")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if d.Validate() != nil {
			s.log.Warn("ignoring unexpected entry in store", "err", fmt.Errorf("%s: not a partial download", filepath.Join(dir, f.Name())))
			continue
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		size, _, _, mtime, err := s.loadChunks(d)
		switch {
		case err == nil && !committed[d]:
			partials = append(partials, found{entry: &entry{digest: d, size: size, partial: true}, mtime: mtime})
			continue
		case err == nil || errors.Is(err, fs.ErrNotExist):
			s.log.Debug("removing leftover partial download", "digest", d)
		default:
			s.log.Warn("dropping malformed partial download", "digest", d, "err", err)
		}
		for _, path := range []string{s.chunksPath(d), s.partialPath(d)} {
			// A partial that cannot be removed is only disk space; it must not stop the node.
			if err := os.RemoveAll(path); err != nil {
				s.log.Warn("remove partial download", "digest", d, "err", err)
			}
		}
	}
	return partials, nil
}

// loadChunks reads and checks d's bitmap against its data file. mtime is the later of the
// two, the last time the download made progress.
func (s *Store) loadChunks(d digest.Digest) (size, chunkSize int64, bitmap []byte, mtime time.Time, err error) {
	b, err := readLimited(s.chunksPath(d), chunksHeaderLen+bitmapLen(maxChunks))
	if err != nil {
		return 0, 0, nil, time.Time{}, err
	}
	size, chunkSize, bitmap, err = parseChunks(b)
	if err != nil {
		return 0, 0, nil, time.Time{}, fmt.Errorf("%s: %w", s.chunksPath(d), err)
	}
	bi, err := os.Stat(s.chunksPath(d))
	if err != nil {
		return 0, 0, nil, time.Time{}, err
	}
	di, err := os.Stat(s.partialPath(d))
	if err != nil {
		return 0, 0, nil, time.Time{}, err
	}
	if !di.Mode().IsRegular() || di.Size() != size {
		return 0, 0, nil, time.Time{}, fmt.Errorf("%s: %d bytes, bitmap says %d: %w", s.partialPath(d), di.Size(), size, errMalformedChunks)
	}
	mtime = bi.ModTime()
	if di.ModTime().After(mtime) {
		mtime = di.ModTime()
	}
	return size, chunkSize, bitmap, mtime, nil
}

// readLimited reads a small metadata file, refusing one larger than limit so a damaged file
// cannot make Open allocate without bound.
func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
