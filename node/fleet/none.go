package fleet

import (
	"context"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/node/mirror"
	"github.com/shoal-dev/shoal/node/swarm"
)

// None is the membership of a node outside any fleet: never connected, nothing to announce,
// ready at once. Its Swarm is nil, which tells the downloader to use the origin alone.
type None struct{ mirror.NoPeers }

func (None) Status() Status                                      { return Status{} }
func (None) Ready() bool                                         { return true }
func (None) Close() error                                        { return nil }
func (None) Announce(digest.Digest)                              {}
func (None) Run(context.Context) error                           { return nil }
func (None) Swarm() swarm.Fleet                                  { return nil }
func (None) Serve(*swarm.Downloader, prometheus.Counter) error   { return nil }
func (None) KeepChunkList(digest.Digest, int64, []digest.Digest) {}
