package node

import (
	"container/list"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/registryapi"
)

// tagCache remembers recent tag resolutions, bounded in count, least recently used first out.
type tagCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // of string keys, front = most recent
	entries map[string]*list.Element
}

type tagEntry struct {
	desc     registryapi.Descriptor
	resolved time.Time
}

type tagItem struct {
	key   string
	entry tagEntry
}

func newTagCache(max int) *tagCache {
	return &tagCache{max: max, order: list.New(), entries: make(map[string]*list.Element)}
}

func (c *tagCache) get(key string) (tagEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return tagEntry{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*tagItem).entry, true
}

func (c *tagCache) put(key string, desc registryapi.Descriptor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := tagEntry{desc: desc, resolved: time.Now()}
	if el, ok := c.entries[key]; ok {
		el.Value.(*tagItem).entry = e
		c.order.MoveToFront(el)
		return
	}
	c.entries[key] = c.order.PushFront(&tagItem{key: key, entry: e})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*tagItem).key)
	}
}
