package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
)

var (
	_ p2p.ChunkStore     = chunkServer{}
	_ p2p.ChangeNotifier = chunkServer{}
)

// NewChunkServer returns what a member answers peers' HAVE and GET requests with: the
// committed blobs of st (with their chunk lists of chunkSize) and dl's running downloads,
// counting the chunk bytes sent in uploaded. Serve uses it; a fleet simulator serves its
// simulated peers with the same code.
func NewChunkServer(st *store.Store, dl *swarm.Downloader, chunkSize int64, uploaded prometheus.Counter, log *slog.Logger) p2p.ChunkStore {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return chunkServer{store: st, downloader: dl, chunkSize: chunkSize, uploaded: uploaded, log: log}
}

// chunkServer answers peers from the node's cache and its running downloads.
type chunkServer struct {
	store      *store.Store
	downloader *swarm.Downloader
	chunkSize  int64
	uploaded   prometheus.Counter
	log        *slog.Logger
}

// chunkListTimeout bounds computing a blob's chunk list, which reads the whole blob.
const chunkListTimeout = time.Minute

// Have describes what the node holds of d. Committed blobs have every chunk and their chunk
// list, and name the peers that asked about d lately (a rolling update's nodes find each
// other through the holders they all ask; in a cold rollout, with no holder yet, the lookups
// and the peers' own asks suffice, and naming more would only add watches); running
// downloads the chunks written so far and those being fetched from the origin.
func (c chunkServer) Have(d digest.Digest, withList bool) (chunk.Have, bool) {
	if info, err := c.store.Stat(d); err == nil {
		var list []digest.Digest
		if withList {
			if list, err = c.chunkList(d); err != nil {
				// Corrupt on disk (and dropped now), or unreadable: offer nothing.
				c.log.Warn("cannot serve blob to peers", "digest", d, "err", err)
				return chunk.Have{}, false
			}
		}
		chunks := make([]bool, chunk.Count(info.Size, c.chunkSize))
		for i := range chunks {
			chunks[i] = true
		}
		return chunk.Have{Size: info.Size, ChunkSize: c.chunkSize, Chunks: chunks, ChunkList: list, Peers: c.downloader.Askers(d)}, true
	}
	return c.downloader.Progress(d)
}

// Changes is the running download's (swarm.Downloader.Changes): a committed blob does not
// change.
func (c chunkServer) Changes(d digest.Digest) <-chan struct{} { return c.downloader.Changes(d) }

// chunkList returns the stored chunk list of a committed blob, computing it (and checking the
// blob's digest on the way) the first time.
func (c chunkServer) chunkList(d digest.Digest) ([]digest.Digest, error) {
	list, err := c.store.ChunkList(d, c.chunkSize)
	if !errors.Is(err, store.ErrNoChunkList) {
		return list, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), chunkListTimeout)
	defer cancel()
	return c.store.ComputeChunkList(ctx, d, c.chunkSize)
}

// ReadChunk writes chunk index of d to w, counting the bytes sent to peers.
func (c chunkServer) ReadChunk(ctx context.Context, d digest.Digest, index int, w io.Writer) (int64, error) {
	n, err := c.readChunk(d, index, w)
	c.uploaded.Add(float64(n))
	return n, err
}

func (c chunkServer) readChunk(d digest.Digest, index int, w io.Writer) (int64, error) {
	b, err := c.store.Open(d)
	if errors.Is(err, store.ErrNotFound) {
		n, err := c.downloader.ReadChunk(d, index, w)
		if errors.Is(err, swarm.ErrChunkMissing) {
			return n, fmt.Errorf("%w: %w", chunk.ErrNotHeld, err)
		}
		return n, err
	}
	if err != nil {
		return 0, err
	}
	defer b.Close()
	if index < 0 || int64(index) >= chunk.Count(b.Size(), c.chunkSize) {
		return 0, fmt.Errorf("chunk %d of %s: %w", index, d, chunk.ErrNotHeld)
	}
	off := int64(index) * c.chunkSize
	return io.Copy(w, io.NewSectionReader(b, off, min(c.chunkSize, b.Size()-off)))
}
