package swarm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
)

// This file carries requests out: one chunk from a peer or from the origin, written into
// the partial file as it arrives.

// start launches one request.
func (e *engine) start(ctx context.Context, r Request, dup bool) {
	e.nextID++
	rctx, cancel := context.WithCancel(ctx)
	req := &chunkReq{id: e.nextID, chunk: r.Chunk, peer: r.Peer, start: e.clock.Now(), buffered: dup, cancel: cancel}
	// Leases are given up on only while nothing arrives from peers either: with bytes coming,
	// the chunks a late tracker leaves unleased are on their way from the peers.
	req.leaseGiveUp = !e.leaseFailSince.IsZero() && req.start.Sub(later(e.leaseFailSince, e.progress)) >= leaseGiveUp
	e.reqs[req] = struct{}{}
	if req.peer == "" {
		e.job.claim(req.chunk, req.id)
		first := !e.originAnswered
		e.spawn(func() event {
			n, err := e.fetchOrigin(rctx, req, first)
			return requestDone{req: req, n: n, err: err}
		})
		return
	}
	p := e.peers[req.peer]
	p.active++
	var list digest.Digest
	if req.chunk < len(p.have.ChunkList) {
		list = p.have.ChunkList[req.chunk]
	}
	var keep int64
	if !dup {
		keep = e.job.claim(req.chunk, req.id)
	}
	e.spawn(func() event {
		n, err := e.fetchPeer(rctx, req, list, keep)
		return requestDone{req: req, n: n, err: err}
	})
}

// errChunkVerify means a peer's chunk did not match the hash in that peer's own chunk list.
var errChunkVerify = errors.New("chunk does not match the peer's chunk list")

// fetchPeer gets one chunk from a peer and writes it, checking it against want (the peer's
// chunk list entry) when there is one.
func (e *engine) fetchPeer(ctx context.Context, req *chunkReq, want digest.Digest, keep int64) (int64, error) {
	off := int64(req.chunk) * e.cs
	n := chunk.Len(e.job.size, e.cs, req.chunk)
	w := &chunkWriter{job: e.job, req: req, off: off, end: off + n, keepTo: off + keep}
	if want != "" {
		w.hash = sha256.New()
	}
	if req.buffered {
		w.buf = bytes.NewBuffer(make([]byte, 0, n))
	}
	got, err := e.fleet.GetChunk(ctx, req.peer, e.job.digest, req.chunk, w)
	if err != nil {
		return got, err
	}
	if got != n {
		return got, fmt.Errorf("%w: chunk %d is %d bytes, want %d", chunk.ErrProtocol, req.chunk, got, n)
	}
	var sum digest.Digest
	if w.hash != nil {
		if sum = digest.NewDigest(digest.SHA256, w.hash); sum != want {
			return got, fmt.Errorf("%w: chunk %d", errChunkVerify, req.chunk)
		}
	}
	if w.buf != nil {
		return got, e.job.takeOver(req.chunk, req.id, w.buf.Bytes(), sum)
	}
	if keep > 0 {
		// The prefix in the file is not the bytes just checked.
		sum = ""
	}
	return got, e.job.complete(req.chunk, req.id, sum)
}

// chunkWriter receives a chunk from a peer: into the partial file, at the chunk's place, as
// it arrives, or into memory for an endgame duplicate.
type chunkWriter struct {
	job    *Download
	req    *chunkReq
	off    int64
	end    int64
	keepTo int64 // bytes before this are in the file already and not written again
	hash   hash.Hash
	buf    *bytes.Buffer
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.end-w.off {
		return 0, fmt.Errorf("%w: chunk %d longer than expected", chunk.ErrProtocol, w.req.chunk)
	}
	if w.hash != nil {
		w.hash.Write(p)
	}
	switch {
	case w.buf != nil:
		w.buf.Write(p)
	case w.off+int64(len(p)) <= w.keepTo:
	default:
		skip := max(0, w.keepTo-w.off)
		if err := w.job.writeOwned(w.req.chunk, w.req.id, p[skip:], w.off+skip); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}

// errOriginStalled is an origin response that sent nothing for originIdle.
var errOriginStalled = errors.New("origin response stalled")

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// fetchOrigin streams the missing part of one chunk from the origin into the partial file;
// first, when no origin request of the download has been answered yet, says to tell the
// engine once this one is.
func (e *engine) fetchOrigin(ctx context.Context, req *chunkReq, first bool) (_ int64, err error) {
	start := int64(req.chunk) * e.cs
	off := start + e.job.chunkFill(req.chunk)
	end := start + chunk.Len(e.job.size, e.cs, req.chunk)
	if off >= end {
		return 0, nil
	}
	if e.leaser != nil {
		lctx, cancel := e.clock.WithTimeout(ctx, leaseTimeout)
		release, holder, ok, lerr := e.leaser.LeaseOrigin(lctx, e.job.digest, e.job.size, e.cs, req.chunk)
		cancel()
		switch {
		case lerr != nil && (errors.Is(lerr, ErrNoTracker) || req.leaseGiveUp):
			// No tracker is up, or none answered for long: fetch without a lease, as a
			// fleet without one does.
			e.log.Debug("no origin lease, fetching without", "chunk", req.chunk, "err", lerr)
		case lerr != nil:
			// A tracker too slow to answer, or one that refused, granted nothing.
			return 0, fmt.Errorf("%w: %w", errLeaseUnknown, lerr)
		case !ok:
			if holder != "" {
				// The node fetching it is the one to get it from.
				e.job.hint(holder)
			}
			return 0, errLeasedElsewhere
		default:
			// Given back when the request ends; done when the chunk arrived whole.
			defer func() { release(err == nil) }()
		}
	}
	// Only now is the chunk on its way from the origin, for peers asking: while a lease
	// request was out it was no promise, and they could take it (the tracker arbitrates).
	// endRequest clears it.
	e.job.setFetching(req.chunk, true)
	// A response that stops sending (a half-open stream, a stalled proxy) is cut after
	// originIdle: while it runs, the chunk is promised to the fleet as fetching, and its
	// lease renewed, so every other node waits for it.
	ictx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	idle := e.clock.AfterFunc(originIdle, func() { stop(errOriginStalled) })
	defer idle.Stop()
	defer func() {
		if err != nil && errors.Is(context.Cause(ictx), errOriginStalled) {
			err = fmt.Errorf("chunk %d: %w after %v", req.chunk, errOriginStalled, originIdle)
		}
	}()
	body, _, err := e.dl.opts.Origin.GetBlob(ictx, e.job.registry, e.job.repo, e.job.digest, off, end-off)
	if err != nil {
		return 0, err
	}
	defer func() { _ = body.Close() }() // what was read is written; nothing to lose
	if first {
		// The other origin requests may start now.
		e.notify(originAnswered{})
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		// Whatever has arrived is written at once, so clients and peers see it without
		// waiting for a full buffer from a slow origin.
		n, rerr := body.Read(buf)
		if n > 0 {
			idle.Reset(originIdle)
			if int64(n) > end-off {
				return total, fmt.Errorf("origin sent more than the %d bytes asked for", end-start)
			}
			done, err := e.job.writeStream(req.chunk, req.id, buf[:n], off)
			if err != nil {
				return total, err
			}
			e.dl.Fetched("origin", n)
			e.job.fromOrigin.Add(int64(n))
			off += int64(n)
			total += int64(n)
			if done {
				return total, nil
			}
		}
		switch {
		case rerr == io.EOF && off == end:
			return total, nil
		case rerr == io.EOF:
			return total, io.ErrUnexpectedEOF
		case rerr != nil:
			return total, rerr
		}
	}
}
