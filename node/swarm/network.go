package swarm

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/internal/backoff"
)

// This file is what a download reaches beyond this node, the origin registry and the fleet,
// and the timing of its work with them.

// Origin is the upstream registry a download takes bytes from.
type Origin interface {
	// GetBlob returns the blob's bytes from offset (length < 0: to the end) and its total size.
	GetBlob(ctx context.Context, registry, repo string, d digest.Digest, offset, length int64) (io.ReadCloser, int64, error)
	// HeadBlob returns the blob's size.
	HeadBlob(ctx context.Context, registry, repo string, d digest.Digest) (int64, error)
}

// Fleet is how a download reaches other nodes; the node implements it over p2p.Network.
type Fleet interface {
	// Self is this node's peer ID.
	Self() string
	// Connected reports whether the node knows any fleet member at all; a lone node does not
	// look for holders.
	Connected() bool
	// Provide announces that this node holds, or is fetching, d.
	Provide(ctx context.Context, d digest.Digest) error
	// FindProviders returns the IDs of other peers that announced d; fresh bypasses any cache.
	FindProviders(ctx context.Context, d digest.Digest, fresh bool) ([]string, error)
	// Have asks a peer what it holds of d.
	Have(ctx context.Context, peer string, d digest.Digest) (chunk.Have, error)
	// GetChunk copies chunk index of d from peer to w as it arrives.
	GetChunk(ctx context.Context, peer string, d digest.Digest, index int, w io.Writer) (int64, error)
}

// Watcher may be implemented by a Fleet: a watched peer tells what it holds of a blob each
// time that changes, on one stream, so a download need not poll it (p2p.Exchange.WatchHave).
type Watcher interface {
	// WatchHave calls fn with each of peer's answers on d, from the calling goroutine, until
	// the watch ends: nil when the peer ended it (it holds d whole, or the watch's lifetime
	// ran out), an error wrapping chunk.ErrNotHeld or chunk.ErrBusy when it refused, another
	// error when it does not take watches or failed. A watch that hears nothing for a few
	// seconds ends with an error: while one runs, the peer's last answer is still true.
	WatchHave(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have)) error
}

// WatchStarter may be implemented by a Watcher that carries watches without a goroutine of
// the caller's waiting through each: StartWatch returns at once, calls fn with each answer as
// WatchHave would, and then end once, from a goroutine of its own that end may block, with
// what WatchHave would have returned. (The fleet simulator's nodes do: at 10,000 nodes the
// watches were most of its goroutines, and their stacks most of its memory.)
type WatchStarter interface {
	StartWatch(ctx context.Context, peer string, d digest.Digest, fn func(chunk.Have), end func(error))
}

// OriginLeaser may be implemented by a Fleet that has a tracker: before a chunk is fetched
// from the origin, the fleet's tracker is asked for a lease on it, so that at most one node
// fetches a given chunk from the origin at a time across the whole fleet (without one, nodes
// split the origin's work among the members they see, which is exact only while every
// member sees every other).
type OriginLeaser interface {
	// LeaseOrigin asks for the lease on chunk index of d (size bytes in chunks of chunkSize).
	// ok false: another node holds the lease or the chunk (holder, when the tracker named
	// it); get it from peers. An error wrapping ErrNoTracker: no tracker is up, and the chunk
	// is fetched without a lease. Any other error (a tracker too slow to answer, or one that
	// refused the request) is no grant: the chunk is asked for again a little later, and
	// fetched without a lease only once the trackers failed to answer for leaseGiveUp and
	// no byte came from peers for as long. Peers see a chunk as being fetched from the
	// origin only once its lease is held.
	// While held, the lease is kept alive; release ends it, done saying the chunk arrived
	// whole.
	LeaseOrigin(ctx context.Context, d digest.Digest, size, chunkSize int64, index int) (release func(done bool), holder string, ok bool, err error)
}

// Seeder may be implemented by a Fleet. It names a blob's seeds: the few fleet members every
// node works out alike, which alone fetch the blob from the origin, splitting its chunks
// among themselves, while every other member takes it from peers. So the origin sends a
// blob about once however large the fleet. Without trackers they are the DHT's closest
// peers to the blob's key: members need not see each other to agree on who fetches what,
// and a seed asked for a blob it is not fetching starts to, whether or not it needs the
// blob. With trackers they are the fetchers the trackers name among the blob's swarm
// (with an OriginLeaser's leases), so that lease requests come from a few members, not
// from the whole fleet; an empty list means none (every tracker down), and every member
// fetches its share.
type Seeder interface {
	// Seeds returns d's seeds, closest first; this node may be one.
	Seeds(ctx context.Context, d digest.Digest) ([]string, error)
	// AskSeed asks seed to fetch d from repo at registry (see Downloader.Fetch).
	AskSeed(ctx context.Context, seed, registry, repo string, d digest.Digest) error
}

// Timing of a download's work with peers.
const (
	// settle is how long a download that found no holder waits, at most, before its first
	// origin request when it has fleet peers: nodes that start on the same blob at the same
	// moment find each other in that time instead of all asking the origin for the same bytes.
	settle = 150 * time.Millisecond
	// tickEvery is how often a running download looks at its peers and timers; news of the
	// peers is acted on at the next tick. rescheduleEvery is how often the policy is asked
	// when nothing happened: its rules that go by time alone (endgame, back-offs, idle
	// members) are that coarse.
	tickEvery       = 50 * time.Millisecond
	rescheduleEvery = 200 * time.Millisecond
	// pollEvery is how often the bitmap of a peer still downloading is asked for again.
	pollEvery = 250 * time.Millisecond
	// pollBudget caps the HAVE polls a node sends a second, over all its downloads.
	pollBudget = 32
	// watchBusyWait is how long a peer that refused a watch as busy (it serves as many as
	// it takes: a seed of a large fleet is watched by every member) is polled instead, its
	// bitmap still heard, before a watch of it is tried again.
	watchBusyWait = 10 * time.Second
	// findEvery is how often a running download looks for new holders, while lookups find
	// some; each that finds no one new doubles the wait, up to findMax.
	findEvery = time.Second
	findMax   = 8 * time.Second
	// lookupPatience is how long after its start a download whose lookups fail, finding no
	// one, looks again (every settle after each) before it takes the origin for the only
	// source: an error is not "nobody holds it".
	lookupPatience = 10 * time.Second
	// haveTimeout bounds one HAVE request; provideTimeout the announce a download makes as
	// it starts, beside its first lookup: in a loaded fleet the walk to the blob's closest
	// members takes seconds, and an announce cut short leaves the others unable to find
	// this node until it commits (the download's end cuts it short anyway).
	haveTimeout    = 2 * time.Second
	provideTimeout = 10 * time.Second
	// originIdle is how long an origin response may send nothing before it is cut and
	// asked for again from where it stopped.
	originIdle = 15 * time.Second
	// headGrace is how long the origin may take to confirm a size peers gave.
	headGrace = 500 * time.Millisecond
	// maxPeers is the most peers one download keeps track of; with enoughPeers, its
	// lookups are spaced out as when they find no one new.
	maxPeers    = 32
	enoughPeers = 16
	// maxBuffered is the default of Options.MaxBuffered.
	maxBuffered = 32 << 20
	// stallTimeout fails a download in which no byte arrived for this long.
	stallTimeout = 2 * time.Minute
	// peerFailures is how many failed requests in a row make a download forget a peer.
	peerFailures = 3
	// memberGrace is how long a peer that announced the blob but has not yet said what it
	// holds is taken to be downloading it too.
	memberGrace = time.Second
	// seedsTimeout is how long a download waits for its blob's seeds before its first
	// origin request, and bounds asking a seed to fetch it; seedsRecheck is how often a
	// running download looks its seeds up again (from the fleet's cache, mostly);
	// seedsLookupTimeout bounds one lookup of the seeds, which goes on after that wait (a
	// loaded fleet answers late), and a failed one is tried again every seedsRetry.
	// seedLive is how long after a seed's last answer (or, for one not heard from yet,
	// after the seeds were found or last changed), or after the
	// last byte from peers if that is later, other members still leave the origin to the
	// seeds, and while the seeds are not known, how long after the download began (or
	// until the lookup running then ends); past it, with no seed live, they fetch
	// themselves. seedPollEvery is how often the others ask a seed what it holds, and
	// seedBusyPollEvery how often they poll one that refused their watch as busy.
	seedsTimeout       = 2 * time.Second
	seedsLookupTimeout = 10 * time.Second
	seedsRetry         = time.Second
	seedsRecheck       = 2 * time.Second
	seedLive           = 10 * time.Second
	seedPollEvery      = time.Second
	seedBusyPollEvery  = 3 * time.Second
)

// ErrNoTracker is what LeaseOrigin returns, wrapped, when no tracker is up.
var ErrNoTracker = errors.New("no tracker available")

// Leases.
const (
	// leaseTimeout bounds asking for a lease: past it, the chunk is asked for again after
	// leaseRecheck. leaseGiveUp is how long lease requests may fail in a row, with no byte
	// from peers meanwhile, before chunks are fetched without one, as in a fleet without a
	// tracker.
	leaseTimeout = 4 * time.Second
	leaseGiveUp  = 15 * time.Second
	// leaseRecheck is how long a chunk leased to another node is left to it before asking
	// again: by then it has usually arrived there and comes from that peer; if that node
	// died, its lease runs out and the next ask gets it.
	leaseRecheck = time.Second
)

// busyBackoff is how long a peer that answered busy is left alone: 200 to 400 ms after the
// first busy answer in a row, doubling up to 1.6 to 3.2 s.
var busyBackoff = backoff.Exponential{Base: 400 * time.Millisecond, Max: 3200 * time.Millisecond, Jitter: 0.5}

// originBackoff is how long the origin is left alone after failed requests in a row: 100 to
// 200 ms after the first, doubling up to 1.6 to 3.2 s.
var originBackoff = backoff.Exponential{Base: 200 * time.Millisecond, Max: 3200 * time.Millisecond, Jitter: 0.5}

// errLeasedElsewhere ends an origin request whose chunk another node has the lease on;
// errLeaseUnknown one whose lease request got no answer, or a refusal.
var (
	errLeasedElsewhere = errors.New("chunk leased to another node")
	errLeaseUnknown    = errors.New("no answer on the origin lease")
)
