package mirror

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/shoal-dev/shoal/registryapi"
)

// tagCache remembers recent tag resolutions, bounded in count, least recently used first
// out. An entry outlives the tag TTL on purpose: it is served stale, up to the maximum
// staleness, while the origin is unreachable. (golang-lru's expirable cache would drop it
// at the TTL.)
type tagCache struct{ c *lru.Cache[string, tagEntry] }

type tagEntry struct {
	desc     registryapi.Descriptor
	resolved time.Time
}

func newTagCache(max int) *tagCache {
	c, err := lru.New[string, tagEntry](max)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &tagCache{c}
}

func (c *tagCache) get(key string) (tagEntry, bool) { return c.c.Get(key) }

func (c *tagCache) put(key string, desc registryapi.Descriptor) {
	c.c.Add(key, tagEntry{desc: desc, resolved: time.Now()})
}
