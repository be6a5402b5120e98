package fleet

import (
	"context"
	"fmt"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/registryapi"
)

// Seeds, in a fleet without trackers: each blob has a few seeds, the members closest to its
// key in the DHT, which every member works out alike. They alone fetch the blob from the
// origin, splitting its chunks; the others take it from peers, and ask a seed that holds
// nothing of it to fetch it (FETCH), so a seed fetches blobs it does not need itself.
const (
	// seedCount is how many seeds a blob has: enough that one dying costs little.
	seedCount = 3
	// seedsTTL is how long a blob's seeds, once looked up, are taken as they were.
	seedsTTL = time.Minute
	// fetchLookupTimeout bounds the lookup a FETCH needs to tell whether this node is a seed.
	fetchLookupTimeout = 5 * time.Second
)

// fetchLimit caps the downloads FETCH requests start, a second: a peer may ask a seed only
// for blobs the seed is a seed of, and not to start many at once.
var fetchLimit = rate.Limit(20)

// seeder is the swarm side of a member without trackers: it names each blob's seeds.
type seeder struct{ *Member }

var _ swarm.Seeder = seeder{}

// seedEntry is a blob's seeds as looked up, until expires.
type seedEntry struct {
	ids     []string
	expires time.Time
}

func newSeedCache() *lru.Cache[digest.Digest, seedEntry] {
	c, err := lru.New[digest.Digest, seedEntry](4096)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}

// Seeds returns the seeds of d, this node among them if it is one.
func (s seeder) Seeds(ctx context.Context, d digest.Digest) ([]string, error) { return s.seeds(ctx, d) }

// AskSeed sends seed a FETCH of d from repo at registry: without trackers it asks the seed
// to fetch the blob, with trackers whether the fetcher runs the download (serveFetch).
func (m *Member) AskSeed(ctx context.Context, seed, registry, repo string, d digest.Digest) error {
	m.sent.WithLabelValues(sentFetch).Inc()
	return m.net.Exchange.Fetch(ctx, seed, d, registry, repo)
}

func (m *Member) seeds(ctx context.Context, d digest.Digest) ([]string, error) {
	if e, ok := m.seedCache.Get(d); ok && time.Now().Before(e.expires) {
		return slices.Clone(e.ids), nil
	}
	m.sent.WithLabelValues(sentSeeds).Inc()
	ids, err := m.net.Router.ClosestPeers(ctx, d, seedCount)
	if err != nil {
		return nil, err
	}
	m.seedCache.Add(d, seedEntry{ids: ids, expires: time.Now().Add(seedsTTL)})
	return slices.Clone(ids), nil
}

// serveFetch is the answer to FETCH requests: dl starts the download when the source is a
// well-formed name and this node is a seed of the blob; the asker is hinted to it. With
// trackers, whose fetchers are members downloading the blob already, it only says whether
// the download runs.
func (m *Member) serveFetch(dl *swarm.Downloader) p2p.FetchFunc {
	limit := rate.NewLimiter(fetchLimit, int(2*fetchLimit))
	return func(peerID string, d digest.Digest, registry, repo string) error {
		if m.leases {
			if _, running := dl.Status(d); running {
				dl.Hint(peerID, d)
				return nil
			}
			return fmt.Errorf("not downloading %s, and the trackers name the fetchers in this fleet: %w", d, chunk.ErrNotHeld)
		}
		if ns, err := registryapi.NormalizeNamespace(registry); err != nil || ns != registry {
			return fmt.Errorf("registry %q: %w", registry, chunk.ErrNotHeld)
		}
		if err := registryapi.ValidateName(repo); err != nil {
			return fmt.Errorf("repository %q: %w", repo, chunk.ErrNotHeld)
		}
		if _, running := dl.Status(d); running {
			dl.Hint(peerID, d)
			return nil
		}
		if !limit.Allow() {
			return chunk.ErrBusy
		}
		ctx, cancel := context.WithTimeout(context.Background(), fetchLookupTimeout)
		defer cancel()
		seeds, err := m.seeds(ctx, d)
		if err != nil {
			return fmt.Errorf("seeds of %s: %w", d, err)
		}
		if !slices.Contains(seeds, m.Self()) {
			return fmt.Errorf("not a seed of %s: %w", d, chunk.ErrNotHeld)
		}
		if err := dl.Fetch(ctx, registry, repo, d); err != nil {
			return err
		}
		m.log.Debug("fetching for the fleet", "digest", d, "repo", registry+"/"+repo, "asker", peerID)
		dl.Hint(peerID, d)
		return nil
	}
}
