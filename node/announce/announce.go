// Package announce is a node's side of its trackers: it tells them what the node downloads
// and holds, and asks them for the members of a blob's swarm, for origin leases and for
// peers to join the fleet through. A node without trackers uses Disabled, which answers as
// if no tracker knew anything, so the rest of the node never asks whether there is one.
package announce

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/node/store"
	"github.com/shoal-dev/shoal/node/swarm"
)

// ErrDisabled is what Disabled answers where only a tracker could.
var ErrDisabled = errors.New("no tracker configured")

// Announcer is what the fleet and the node need of the trackers.
type Announcer interface {
	// Started, Committed and Gone report what happened to a blob; they never block.
	Started(d digest.Digest)
	Committed(d digest.Digest)
	Gone(d digest.Digest)
	// Providers merges the trackers' members of d's swarm with what dht finds, members
	// first; fresh asks the trackers now unless they answered about d lately.
	Providers(ctx context.Context, d digest.Digest, fresh bool, dht func(context.Context) ([]string, error)) ([]string, error)
	// Fetchers names the members that fetch d from the origin; see swarm.Seeder.
	Fetchers(ctx context.Context, d digest.Digest) ([]string, error)
	// Lease asks for the origin lease on a chunk; see swarm.OriginLeaser.
	Lease(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (release func(bool), holder string, ok bool, err error)
	// Bootstrap returns peers to join the fleet through.
	Bootstrap(ctx context.Context) ([]string, error)
	// Run announces what held holds and what running fetches, until ctx ends. They come
	// here, not to a constructor, because they are built after the announcer: the store
	// tells it of evictions, and downloads ask it for members and leases.
	Run(ctx context.Context, held Held, running Running) error
	// Close releases what the announcer holds.
	Close()
}

// Held is the store as the announcer reads it; *store.Store is one.
type Held interface {
	Walk(fn func(store.Info) bool)
	Stat(d digest.Digest) (store.Info, error)
}

// Running is the downloader as the announcer reads it; *swarm.Downloader is one.
type Running interface {
	Downloads() []swarm.DownloadStatus
}

var (
	_ Held    = (*store.Store)(nil)
	_ Running = (*swarm.Downloader)(nil)
)

// Disabled is the Announcer of a node without trackers.
type Disabled struct{}

var _ Announcer = Disabled{}

func (Disabled) Started(digest.Digest)   {}
func (Disabled) Committed(digest.Digest) {}
func (Disabled) Gone(digest.Digest)      {}

// Providers is what dht finds.
func (Disabled) Providers(ctx context.Context, _ digest.Digest, _ bool, dht func(context.Context) ([]string, error)) ([]string, error) {
	return dht(ctx)
}

// Fetchers names none: every member may fetch from the origin.
func (Disabled) Fetchers(context.Context, digest.Digest) ([]string, error) { return []string{}, nil }

// Lease fails with ErrDisabled: the chunk is fetched without a lease.
func (Disabled) Lease(context.Context, digest.Digest, int64, int64, int) (func(bool), string, bool, error) {
	return nil, "", false, ErrDisabled
}

// Bootstrap fails with ErrDisabled.
func (Disabled) Bootstrap(context.Context) ([]string, error) { return nil, ErrDisabled }

func (Disabled) Run(context.Context, Held, Running) error { return nil }
func (Disabled) Close()                                   {}
