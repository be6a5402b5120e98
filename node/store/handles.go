package store

import (
	"container/list"
	"fmt"
	"os"
	"sync"
)

// DefaultOpenFiles is how many files of partial downloads a Store keeps open when its Options
// name no Handles: two per download (data and bitmap), so 128 downloads run without reopening.
const DefaultOpenFiles = 256

// Handles bounds how many files of partial downloads stay open at once. Each partial's data
// file and bitmap is opened when first used and kept open while it is used; past the bound,
// the files unused for longest are closed, and opened again by their next read or write. It
// is the table cache of a database: a node with hundreds of downloads in flight (lazy pulls
// of many images, or one process holding many stores) stays within its open-file limit, at
// the cost of an open and a close for a file that comes back into use.
//
// Files in use are never closed, so the bound can be exceeded by the I/O in flight. Several
// Stores may share one Handles, making the bound hold for all of them together.
type Handles struct {
	max int

	mu   sync.Mutex
	open int       // files open, idle or in use
	idle list.List // of *handle open and unused, least recently used at the front
}

// NewHandles returns a pool that keeps at most n files open while none is in use; n < 1 means
// 1.
func NewHandles(n int) *Handles { return &Handles{max: max(1, n)} }

// Open returns how many files are open now.
func (hs *Handles) Open() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.open
}

// handle is one file of a partial download, open or not. The Partial's life lock keeps use
// and close apart: close and detach run only when no read or write is in flight.
type handle struct {
	hs   *Handles
	path string

	// Guarded by hs.mu.
	f     *os.File // nil while closed
	users int
	elem  *list.Element // in hs.idle while open and unused
	gone  bool          // closed or detached for good
}

// adopt makes a handle for the file f already open at path, counted and idle.
func (hs *Handles) adopt(f *os.File, path string) *handle {
	h := &handle{hs: hs, path: path}
	hs.mu.Lock()
	h.f = f
	hs.open++
	h.elem = hs.idle.PushBack(h)
	stale := hs.trimLocked()
	hs.mu.Unlock()
	closeAll(stale)
	return h
}

// use returns the open file, opening it again if the pool closed it. Every successful use is
// paired with done.
func (h *handle) use() (*os.File, error) {
	hs := h.hs
	hs.mu.Lock()
	if h.gone {
		hs.mu.Unlock()
		return nil, fmt.Errorf("use %s: %w", h.path, ErrClosed)
	}
	h.users++
	if h.elem != nil {
		hs.idle.Remove(h.elem)
		h.elem = nil
	}
	if f := h.f; f != nil {
		hs.mu.Unlock()
		return f, nil
	}
	hs.mu.Unlock()

	// Opened outside the lock, so a slow disk holds up only this handle's users.
	f, err := os.OpenFile(h.path, os.O_RDWR, 0)
	hs.mu.Lock()
	if err != nil {
		h.users--
		hs.mu.Unlock()
		return nil, err
	}
	if h.f != nil {
		// Another user of this handle opened it at the same time: keep theirs.
		other := h.f
		hs.mu.Unlock()
		_ = f.Close() // never written through
		return other, nil
	}
	h.f = f
	hs.open++
	hs.mu.Unlock()
	return f, nil
}

// done ends a use; an unused file becomes idle and may be closed to stay within the bound.
func (h *handle) done() {
	hs := h.hs
	hs.mu.Lock()
	h.users--
	var stale []*os.File
	if h.users == 0 && h.f != nil && !h.gone {
		h.elem = hs.idle.PushBack(h)
		stale = hs.trimLocked()
	}
	hs.mu.Unlock()
	closeAll(stale)
}

// detach ends the handle and hands its file, open, to the caller, who must hold the only use.
func (h *handle) detach() *os.File {
	hs := h.hs
	hs.mu.Lock()
	defer hs.mu.Unlock()
	f := h.f
	h.f, h.users, h.gone = nil, 0, true
	hs.open--
	return f
}

// close ends the handle, closing its file if open. Calls after the first do nothing.
func (h *handle) close() error {
	hs := h.hs
	hs.mu.Lock()
	if h.gone {
		hs.mu.Unlock()
		return nil
	}
	h.gone = true
	if h.elem != nil {
		hs.idle.Remove(h.elem)
		h.elem = nil
	}
	f := h.f
	h.f = nil
	if f != nil {
		hs.open--
	}
	hs.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Close()
}

// trimLocked takes the least recently used idle files off their handles until the pool is
// within its bound, and returns them to be closed once hs.mu is released.
func (hs *Handles) trimLocked() []*os.File {
	var stale []*os.File
	for hs.open > hs.max && hs.idle.Len() > 0 {
		h := hs.idle.Remove(hs.idle.Front()).(*handle)
		h.elem = nil
		stale = append(stale, h.f)
		h.f = nil
		hs.open--
	}
	return stale
}

// closeAll closes files the pool took back. Their writes have already reached the kernel, and
// a chunk lost to a failed close is caught by the chunk and digest checks, so errors are
// dropped.
func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
