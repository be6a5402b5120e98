package main

import (
	"context"
	"errors"
	"io"

	"github.com/shoal-dev/shoal/tracker/daemon"
	"github.com/shoal-dev/shoal/tracker/server"
)

const trackerSummary = `Usage: shoal tracker [flags]

Runs the optional tracker: nodes given --tracker announce to it what they download and hold,
learn from it who else does, take short leases on the chunks they fetch from the origin so
that each is fetched about once, and join the DHT through it (GET /bootstrap). It keeps soft
state only: a restarted tracker rebuilds it from the nodes' next announces, and several
trackers can run side by side. Every flag can also be set in a YAML file given with --config.`

func runTracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tracker")
	var (
		configPath = fs.String("config", "", "YAML `file` with flag values")
		listen     = fs.String("listen", ":5090", "`address` of the HTTP API (/announce, /lease, /bootstrap, /swarms, /metrics, /healthz)")
		dataDir    = fs.String("data-dir", "/var/lib/shoal-tracker", "`directory` of the tracker's p2p identity key (DATA-DIR/identity, created if absent)")
		psk        = fs.String("psk", "", "private network key `file` (/key/swarm/psk/1.0.0/ format), the fleet's")
		maxPeers   = fs.Int("max-peers", server.DefaultMaxPeers, "most peers tracked; new ones are refused beyond it")
		maxMembers = fs.Int("max-members", server.DefaultMaxMembers, "most swarm memberships tracked over all blobs; new ones are refused beyond it")
		announces  = fs.Float64("announce-rate", server.DefaultAnnounceRate, "download announces a `second` the tracker aims for: with more nodes downloading at once, each is told to announce less often (every 1 s to 10 s)")
		newLog     = logFlags(fs)
		p2pListen  listFlag
	)
	fs.Var(&p2pListen, "p2p-listen", "libp2p `multiaddr` nodes join the DHT through (repeatable; default /ip4/0.0.0.0/tcp/5091)")
	if err := parseFlags(fs, args, configPath, stdout, trackerSummary); err != nil {
		return err
	}
	logger, err := newLog(stderr)
	if err != nil {
		return err
	}
	if *maxPeers <= 0 || *maxMembers <= 0 || !(*announces > 0) {
		return errors.New("--max-peers, --max-members and --announce-rate must be positive")
	}
	if len(p2pListen) == 0 {
		p2pListen = listFlag{"/ip4/0.0.0.0/tcp/5091"}
	}
	return daemon.Run(ctx, daemon.Config{
		Listen:    *listen,
		P2PListen: p2pListen,
		DataDir:   *dataDir,
		PSK:       *psk,
		Limits:    server.Limits{MaxPeers: *maxPeers, MaxMembers: *maxMembers, AnnounceRate: *announces},
		Logger:    logger,
	})
}
