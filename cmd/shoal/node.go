package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/node"
)

const nodeSummary = `Usage: shoal node [flags]

Runs a node: a /v2 registry mirror for the local containerd or Docker that serves blobs from
its cache or downloads them once from the upstream registry, verifying every digest. Every
flag can also be set in a YAML file given with --config (keys are flag names; repeatable
flags take a list); flags on the command line win.`

// defaultAdminAddr is the default --admin-addr, and defaultAdminPort its port, which
// prefetch --nodes-dns asks when the name carries none.
const (
	defaultAdminPort = "5081"
	defaultAdminAddr = "127.0.0.1:" + defaultAdminPort
)

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node")
	var (
		configPath   = fs.String("config", "", "YAML `file` with flag values")
		registryAddr = fs.String("registry-addr", "127.0.0.1:5080", "`address` of the /v2 mirror")
		adminAddr    = fs.String("admin-addr", defaultAdminAddr, "`address` of /metrics, /healthz, /readyz and /status (empty: off)")
		originURL    = fs.String("origin", "", "registry `URL` used for requests that carry no ns")
		dataDir      = fs.String("data-dir", "/var/lib/shoal", "`directory` of the blob cache")
		dockerConfig = fs.String("docker-config", "", "docker config.json `file` with upstream credentials")
		tagTTL       = fs.Duration("tag-ttl", node.DefaultTagTTL, "how long a tag resolution is reused before asking the origin again")
		tagMaxStale  = fs.Duration("tag-max-stale", node.DefaultTagMaxStale, "how long a resolved tag is served while the origin is unreachable")
		identity     = fs.String("identity", "", "`file` holding the node's p2p key, created if absent (default DATA-DIR/identity)")
		psk          = fs.String("psk", "", "private network key `file` (/key/swarm/psk/1.0.0/ format): only nodes with the same key connect")
		bootstrapDNS = fs.String("bootstrap-dns", "", "DNS `name[:port]` whose A/AAAA records are fleet nodes, e.g. a headless Service; each is asked for its /status addrs on port (default 5081, the admin port)")
		pprofOn      = fs.Bool("pprof", false, "serve Go profiles at /debug/pprof/ on the admin address")
		newLog       = logFlags(fs)
		upstreams    listFlag
		p2pListen    listFlag
		bootstrap    listFlag
		trackers     listFlag
		cacheSize    units.Size
		uploadLimit  units.Size
		chunkSize    units.Size = 4 << 20
	)
	fs.Var(&upstreams, "upstream", "registry this node mirrors, `HOST[=URL]` (repeatable; docker.io means https://registry-1.docker.io)")
	fs.Var(&p2pListen, "p2p-listen", "libp2p `multiaddr` to listen on for peers, e.g. /ip4/0.0.0.0/tcp/5082 or /ip4/0.0.0.0/udp/5082/quic-v1 (repeatable; none: the node stays out of any fleet)")
	fs.Var(&bootstrap, "bootstrap", "`multiaddr` ending in /p2p/<id> of a node to join the fleet through (repeatable; see another node's /status addrs)")
	fs.Var(&trackers, "tracker", "base `URL` of an optional tracker (shoal tracker), e.g. http://tracker:5090 (repeatable; the node uses the DHT alone when none answers)")
	fs.Var(&cacheSize, "cache-size", "cache capacity, e.g. 20GiB (0: unlimited)")
	fs.Var(&chunkSize, "chunk-size", "unit of resumable transfer and of exchange between peers")
	fs.Var(&uploadLimit, "upload-limit", "bytes per second this node sends to peers, e.g. 100MiB (0: unlimited)")
	if err := parseFlags(fs, args, configPath, stdout, nodeSummary); err != nil {
		return err
	}

	logger, err := newLog(stderr)
	if err != nil {
		return err
	}
	ups := make(map[string]string, len(upstreams))
	for _, u := range upstreams {
		host, url, _ := strings.Cut(u, "=")
		if host == "" || strings.ContainsAny(host, "/@ ") {
			return fmt.Errorf("--upstream %q: want HOST or HOST=URL", u)
		}
		ups[host] = url
	}
	cfg := node.Config{
		RegistryAddr: *registryAddr,
		AdminAddr:    *adminAddr,
		DataDir:      *dataDir,
		CacheSize:    int64(cacheSize),
		ChunkSize:    int64(chunkSize),
		Origin:       *originURL,
		Upstreams:    ups,
		DockerConfig: *dockerConfig,
		P2PListen:    p2pListen,
		Bootstrap:    bootstrap,
		BootstrapDNS: *bootstrapDNS,
		Trackers:     trackers,
		Identity:     *identity,
		PSK:          *psk,
		UploadLimit:  int64(uploadLimit),
		TagTTL:       *tagTTL,
		TagMaxStale:  *tagMaxStale,
		Pprof:        *pprofOn,
		Version:      buildVersion(),
		Logger:       logger,
	}
	if err := cfg.Validate(); err != nil {
		return flagError(err)
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// configFlags names the flag that sets each node.Config field Validate may refuse.
var configFlags = map[string]string{
	"ChunkSize":    "--chunk-size",
	"DataDir":      "--data-dir",
	"TagTTL":       "--tag-ttl",
	"TagMaxStale":  "--tag-max-stale",
	"Origin":       "--origin",
	"Upstreams":    "--upstream",
	"Trackers":     "--tracker",
	"Bootstrap":    "--bootstrap",
	"BootstrapDNS": "--bootstrap-dns",
	"UploadLimit":  "--upload-limit",
}

// flagError names the flag behind a node.Config field Validate refused.
func flagError(err error) error {
	var fe *node.FieldError
	if errors.As(err, &fe) {
		if flag, ok := configFlags[fe.Field]; ok {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return err
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
