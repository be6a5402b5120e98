package store

import (
	"container/list"

	"github.com/opencontainers/go-digest"
)

// entry is something on disk that eviction may reclaim: a committed blob, or a partial
// download that is not open (kept so a later request can resume it). Both share one recency
// order so an abandoned download ages out like any other cold data.
type entry struct {
	digest    digest.Digest
	size      int64
	mediaType string
	partial   bool

	// chunkLists are the chunk sizes with a chunk list sidecar on disk, oldest first.
	chunkLists []int64

	pins  int    // open Blobs; a pinned blob is never evicted
	trash string // where a deleted but still pinned blob waits for its last pin
	elem  *list.Element
}

func (e *entry) info() Info {
	return Info{Digest: e.digest, Size: e.size, MediaType: e.mediaType}
}

// lru orders entries from most recently used (front) to least (back).
type lru struct{ l list.List }

func (q *lru) add(e *entry)    { e.elem = q.l.PushFront(e) }
func (q *lru) touch(e *entry)  { q.l.MoveToFront(e.elem) }
func (q *lru) remove(e *entry) { q.l.Remove(e.elem); e.elem = nil }

// oldestFirst calls fn from the least recently used entry on until fn returns false. fn may
// remove the entry it is given.
func (q *lru) oldestFirst(fn func(*entry) bool) {
	for el := q.l.Back(); el != nil; {
		prev := el.Prev()
		if !fn(el.Value.(*entry)) {
			return
		}
		el = prev
	}
}

// newestFirst calls fn from the most recently used entry on until fn returns false.
func (q *lru) newestFirst(fn func(*entry) bool) {
	for el := q.l.Front(); el != nil; el = el.Next() {
		if !fn(el.Value.(*entry)) {
			return
		}
	}
}
