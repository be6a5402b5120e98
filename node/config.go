package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/chunk"
	"github.com/shoal-dev/shoal/node/fleet"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/tracker"
)

// Config is everything a node needs; cmd/shoal fills it from flags and the config file.
type Config struct {
	// RegistryAddr is where the /v2 mirror listens (host:port; port 0 picks one).
	RegistryAddr string
	// AdminAddr is where /metrics, /healthz, /readyz and /status listen; "" disables them.
	AdminAddr string
	// DataDir holds the blob cache.
	DataDir string
	// CacheSize caps the cache in bytes; 0 means unlimited.
	CacheSize int64
	// ChunkSize is the unit of resumable transfer; 0 means the default (4 MiB).
	ChunkSize int64
	// Origin is the registry URL used for requests that carry no ns.
	Origin string
	// Upstreams maps registry hosts (as containerd sends them in ns) to their URLs.
	Upstreams map[string]string
	// DockerConfig is a docker config.json with credentials for upstreams; "" is anonymous.
	DockerConfig string
	// TagTTL is how long a tag's resolution is reused before asking the origin again.
	TagTTL time.Duration
	// TagMaxStale is how long a resolved tag may still be served while the origin is down.
	TagMaxStale time.Duration
	// P2PListen are libp2p multiaddrs to listen on (e.g. /ip4/0.0.0.0/tcp/5082); empty
	// keeps the node out of any fleet.
	P2PListen []string
	// Bootstrap are multiaddrs ending in /p2p/<id> of nodes to join the fleet through.
	Bootstrap []string
	// BootstrapDNS is NAME[:PORT], a name whose A/AAAA records are fleet nodes (a Kubernetes
	// headless Service); the node learns each one's addrs from its /status on PORT (default
	// 5081, the admin port). It adds to Bootstrap.
	BootstrapDNS string
	// Trackers are base URLs of optional trackers (shoal tracker): the node announces its
	// downloads and blobs to them, learns the members of each swarm from them, takes origin
	// leases from them and, without Bootstrap or BootstrapDNS, joins the fleet through the
	// peers their /bootstrap lists: /readyz waits for that first attempt, and a node no
	// tracker answered (or whose peers it could not reach) starts alone, ready, and tries
	// again every 10 s while it has no fleet peer. When none answers the node goes on with
	// the DHT alone. Needs P2PListen.
	Trackers []string
	// Pprof serves Go profiles at /debug/pprof/ on the admin address.
	Pprof bool
	// Identity is the file holding the node's libp2p key, created if absent; "" means
	// DataDir/identity.
	Identity string
	// UploadLimit caps the bytes per second the node sends to peers; 0 is unlimited.
	UploadLimit int64
	// PSK is a private network key file (/key/swarm/psk/1.0.0/ format): only nodes with the
	// same key connect. "" means none.
	PSK string
	// Version is reported by /status.
	Version string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// Defaults for Config fields left zero.
const (
	DefaultTagTTL      = 5 * time.Second
	DefaultTagMaxStale = 24 * time.Hour
)

// FieldError is a Config field Validate refused, so that the caller (cmd/shoal) can name
// it as its user knows it: a flag, a config key.
type FieldError struct {
	Field string // the Config field, e.g. "ChunkSize"
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldError(field string, err error) error { return &FieldError{Field: field, Err: err} }

// Validate checks what can be checked of c without touching the disk or the network;
// New calls it. Its errors are *FieldError.
func (c Config) Validate() error {
	if c.ChunkSize != 0 {
		if err := chunk.CheckSize(c.ChunkSize); err != nil {
			return fieldError("ChunkSize", fmt.Errorf("chunk size: %w", err))
		}
	}
	if c.DataDir == "" {
		return fieldError("DataDir", errors.New("no data directory configured"))
	}
	if c.TagTTL < 0 {
		return fieldError("TagTTL", fmt.Errorf("tag TTL %v: must not be negative", c.TagTTL))
	}
	if c.TagMaxStale < 0 {
		return fieldError("TagMaxStale", fmt.Errorf("tag max staleness %v: must not be negative", c.TagMaxStale))
	}
	if _, _, err := upstreamTable(c.Origin, c.Upstreams); err != nil {
		return err
	}
	for _, u := range c.Trackers {
		if _, err := tracker.ParseURL(u); err != nil {
			return fieldError("Trackers", err)
		}
	}
	if len(c.P2PListen) == 0 {
		if len(c.Bootstrap) > 0 {
			return fieldError("Bootstrap", errors.New("bootstrap peers given but no p2p listen address"))
		}
		if c.BootstrapDNS != "" {
			return fieldError("BootstrapDNS", errors.New("bootstrap peers given but no p2p listen address"))
		}
		if len(c.Trackers) > 0 {
			return fieldError("Trackers", errors.New("tracker given but no p2p listen address"))
		}
	}
	if c.BootstrapDNS != "" {
		if err := fleet.CheckBootstrapDNS(c.BootstrapDNS); err != nil {
			return fieldError("BootstrapDNS", fmt.Errorf("bootstrap dns: %w", err))
		}
	}
	if c.UploadLimit < 0 {
		return fieldError("UploadLimit", fmt.Errorf("upload limit %d: must not be negative", c.UploadLimit))
	}
	return nil
}

// dockerHub is the registry key containerd sends for Docker Hub, and dockerHubURL its
// real endpoint.
const (
	dockerHub    = registryapi.DockerHub
	dockerHubURL = "https://registry-1.docker.io"
)

// upstreamTable turns Origin and Upstreams into registry key -> URL, and picks the key
// used for requests without ns.
func upstreamTable(originURL string, upstreams map[string]string) (map[string]string, string, error) {
	table := make(map[string]string)
	for host, raw := range upstreams {
		key, err := registryapi.NormalizeNamespace(host)
		if err != nil {
			return nil, "", fieldError("Upstreams", fmt.Errorf("upstream %q: not a registry host", host))
		}
		if raw == "" {
			raw = "https://" + host
			if key == dockerHub {
				raw = dockerHubURL
			}
		}
		u, err := parseUpstreamURL(raw)
		if err != nil {
			return nil, "", fieldError("Upstreams", fmt.Errorf("upstream %s: %w", host, err))
		}
		table[key] = u
	}
	def := ""
	if originURL != "" {
		u, err := parseUpstreamURL(originURL)
		if err != nil {
			return nil, "", fieldError("Origin", fmt.Errorf("origin: %w", err))
		}
		parsed, _ := url.Parse(u)
		if def, err = registryapi.NormalizeNamespace(parsed.Host); err != nil {
			return nil, "", fieldError("Origin", fmt.Errorf("origin %q: not a registry host", originURL))
		}
		table[def] = u
	} else if _, ok := table[dockerHub]; ok {
		def = dockerHub
	}
	if len(table) == 0 {
		return nil, "", fieldError("Upstreams", errors.New("no upstream configured: set an origin or upstreams"))
	}
	return table, def, nil
}

func parseUpstreamURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return "", fmt.Errorf("%q is not a registry URL (want http[s]://host[:port])", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}
