package fleet

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
)

var (
	_ swarm.Fleet        = (*Member)(nil)
	_ swarm.Watcher      = (*Member)(nil)
	_ swarm.OriginLeaser = leasing{}
	_ swarm.Seeder       = leasing{}
)

// Swarm is what the downloads use to reach the fleet. It names each blob's seeds: without
// trackers the DHT's closest members to the blob (see seeds.go), with trackers the fetchers
// they name, who also get origin leases from them.
func (m *Member) Swarm() swarm.Fleet {
	if !m.leases {
		return seeder{m}
	}
	return leasing{m}
}

func (m *Member) Self() string { return m.net.ID() }

func (m *Member) Connected() bool { return m.net.RoutingPeers() > 0 || m.net.Peers() > 0 }

func (m *Member) Provide(ctx context.Context, d digest.Digest) error {
	m.tracker.Started(d) // to the trackers too, without waiting for them
	m.sent.WithLabelValues(sentProvide).Inc()
	return m.net.Router.Provide(ctx, d)
}

// FindProviders returns the members of d's swarm the trackers know, then the holders the DHT
// finds.
func (m *Member) FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error) {
	m.sent.WithLabelValues(sentFind).Inc()
	find := m.net.Router.FindProviders
	if fresh {
		find = m.net.Router.FindProvidersFresh
	}
	return m.tracker.Providers(ctx, d, fresh, func(ctx context.Context) ([]string, error) {
		peers, err := find(ctx, d)
		ids := make([]string, len(peers))
		for i, p := range peers {
			ids[i] = p.ID
		}
		return ids, err
	})
}

func (m *Member) Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error) {
	m.sent.WithLabelValues(sentHave).Inc()
	return m.net.Exchange.Have(ctx, peer, d)
}

func (m *Member) WatchHave(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have)) error {
	m.sent.WithLabelValues(sentWatch).Inc()
	return m.net.Exchange.WatchHave(ctx, peer, d, func(h chunk.Have) {
		m.answers.Inc()
		fn(h)
	})
}

func (m *Member) GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error) {
	m.sent.WithLabelValues(sentChunk).Inc()
	return m.net.Exchange.GetChunk(ctx, peer, d, index, w)
}

// Serve starts answering peers' chunk requests from the store and dl's running downloads,
// counting the bytes sent in uploaded; peers asking about a blob are hinted to dl.
func (m *Member) Serve(dl *swarm.Downloader, uploaded prometheus.Counter) error {
	m.net.Exchange.ServeFetch(m.serveFetch(dl))
	return m.net.Exchange.Serve(NewChunkServer(m.store, dl, m.chunkSize, uploaded, m.log), dl.Hint)
}

// KeepChunkList stores the chunk list a download computed, so peers can check what this
// node sends them.
func (m *Member) KeepChunkList(d digest.Digest, chunkSize int64, list []digest.Digest) {
	if err := m.store.PutChunkList(d, chunkSize, list); err != nil {
		m.log.Warn("store chunk list", "digest", d, "err", err)
	}
}

// leasing is the swarm side of a member with trackers.
type leasing struct{ *Member }

// Seeds returns the fetchers the trackers name for d; none while every tracker is
// unreachable.
func (l leasing) Seeds(ctx context.Context, d digest.Digest) ([]string, error) {
	return l.tracker.Fetchers(ctx, d)
}

// LeaseOrigin asks the trackers for the lease on a chunk.
func (l leasing) LeaseOrigin(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (func(bool), string, bool, error) {
	return l.tracker.Lease(ctx, d, size, chunkSize, index)
}
