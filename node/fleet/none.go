package fleet

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/swarm"
)

// None is the membership of a node outside any fleet: never connected, nothing to announce,
// ready at once. Its Swarm is nil, which tells the downloader to use the origin alone.
type None struct{}

func (None) Status() Status                                      { return Status{} }
func (None) Ready() bool                                         { return true }
func (None) Close() error                                        { return nil }
func (None) Announce(digest.Digest)                              {}
func (None) Run(context.Context) error                           { return nil }
func (None) Swarm() swarm.Fleet                                  { return nil }
func (None) Serve(*swarm.Downloader, prometheus.Counter) error   { return nil }
func (None) KeepChunkList(digest.Digest, int64, []digest.Digest) {}
func (None) Connected() bool                                     { return false }
func (None) FindProviders(context.Context, digest.Digest, bool) ([]string, error) {
	return nil, nil
}
func (None) Have(context.Context, string, digest.Digest) (chunk.Have, error) {
	return chunk.Have{}, chunk.ErrNotHeld
}
func (None) GetChunk(context.Context, string, digest.Digest, int, io.Writer) (int64, error) {
	return 0, chunk.ErrNotHeld
}
