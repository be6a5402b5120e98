package swarm

import (
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// The askers of a blob are the peers that asked this node about it lately, most likely
// downloading it. A node holding the blob whole names them in what it answers of it
// (chunk.Have.Peers), so the nodes downloading one blob at once find each other through the
// holders they all ask, as BitTorrent's peer exchange does. In a rolling update the batch's nodes then take most of the
// image from each other: the DHT's answers are random samples of the holders, and a node that
// knew only those would take its image from the earlier batches alike, the first batch
// serving every later one.
const (
	// maxAskers is how many askers a node names for one blob; askersFor how long an ask
	// counts; askerBlobs how many blobs' askers it keeps.
	maxAskers  = 8
	askersFor  = 30 * time.Second
	askerBlobs = 1024
)

// askers keeps each blob's latest distinct askers.
type askers struct {
	mu    sync.Mutex
	blobs *lru.Cache[digest.Digest, *[maxAskers]asked]
}

type asked struct {
	peer string
	at   time.Time
}

func newAskers() *askers {
	c, err := lru.New[digest.Digest, *[maxAskers]asked](askerBlobs)
	if err != nil {
		panic(err) // only for a size <= 0
	}
	return &askers{blobs: c}
}

// add records that peer asked about d at now, in place of its own earlier ask or else of
// the oldest one.
func (a *askers) add(d digest.Digest, peer string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ring, ok := a.blobs.Get(d)
	if !ok {
		ring = new([maxAskers]asked)
		a.blobs.Add(d, ring)
	}
	slot := 0
	for i := range ring {
		if ring[i].peer == peer {
			slot = i
			break
		}
		if ring[i].at.Before(ring[slot].at) {
			slot = i
		}
	}
	ring[slot] = asked{peer: peer, at: now}
}

// list returns d's askers of the last askersFor, newest first.
func (a *askers) list(d digest.Digest, now time.Time) []string {
	a.mu.Lock()
	ring, ok := a.blobs.Peek(d)
	var recent []asked
	if ok {
		for _, x := range ring {
			if x.peer != "" && now.Sub(x.at) < askersFor {
				recent = append(recent, x)
			}
		}
	}
	a.mu.Unlock()
	if len(recent) == 0 {
		return nil
	}
	slices.SortFunc(recent, func(x, y asked) int { return y.at.Compare(x.at) })
	out := make([]string, len(recent))
	for i, x := range recent {
		out[i] = x.peer
	}
	return out
}
