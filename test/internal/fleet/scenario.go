package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/test/internal/harness"
)

// A Scenario is one way of getting the image to every host. Deploy starts what it needs
// besides the origin, with nothing cached, and says where each host's client pulls from.
type Scenario struct {
	Name   string
	Deploy func(ctx context.Context, e *Env, dir string) (*Deployment, error)
}

// Deployment is a scenario's services during one run.
type Deployment struct {
	// HostsDir is the containerd hosts.toml root every host's client uses.
	HostsDir string
	// Stop stops the services; may be nil.
	Stop func() error
	// PeerBytes, when the scenario can say, sums the bytes the hosts got from each other.
	PeerBytes func(ctx context.Context) (int64, error)
}

// Scenarios are those cmd/bench-fleet runs, in order.
var Scenarios = []Scenario{
	{Name: "direct", Deploy: deployDirect},
	{Name: "central-cache", Deploy: deployCentralCache},
	{Name: "shoal", Deploy: func(ctx context.Context, e *Env, dir string) (*Deployment, error) {
		return deployShoal(ctx, e, dir, true)
	}},
	{Name: "shoal+tracker", Deploy: deployShoalTracker},
}

// ScenarioNamed finds a scenario by name.
func ScenarioNamed(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("no scenario %q (have %v)", name, ScenarioNames())
}

// ScenarioNames lists the scenarios' names, in order.
func ScenarioNames() []string {
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = s.Name
	}
	return names
}

// deployDirect: every host pulls straight from the origin, what users do without a mirror.
func deployDirect(_ context.Context, e *Env, dir string) (*Deployment, error) {
	hosts := filepath.Join(dir, "hosts.d")
	if err := harness.WriteHostsTOML(hosts, e.OriginHost, "http://"+e.OriginHost); err != nil {
		return nil, err
	}
	return &Deployment{HostsDir: hosts}, nil
}

// deployCentralCache: one distribution registry in pull-through cache mode on a host of its
// own, the registry mirror people usually deploy; the hosts resolve and pull through it and
// would fall back to the origin.
func deployCentralCache(ctx context.Context, e *Env, dir string) (*Deployment, error) {
	storage := filepath.Join(dir, "cache")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, err
	}
	reg, err := harness.RunRegistryWith(ctx, storage, harness.RegistryOptions{
		Netns: e.Net.Cache.Netns, Addr: e.Net.Cache.IP + ":5000", ProxyRemote: "http://" + e.OriginHost,
	})
	if err != nil {
		return nil, fmt.Errorf("central cache: %w", err)
	}
	hosts := filepath.Join(dir, "hosts.d")
	if err := harness.WriteHostsTOML(hosts, e.OriginHost, "http://"+e.OriginHost, reg.URL); err != nil {
		reg.Close()
		return nil, err
	}
	return &Deployment{HostsDir: hosts, Stop: reg.Close}, nil
}

// deployShoalTracker starts a `shoal tracker` on the fleet's tracker host, then a node on
// every host given only --tracker: they join the DHT through the tracker and take their swarm
// members and origin leases from it.
func deployShoalTracker(ctx context.Context, e *Env, dir string) (*Deployment, error) {
	h := e.Net.Tracker
	data := filepath.Join(dir, "tracker")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	tr, err := harness.RunTracker(ctx, harness.TrackerOptions{
		Binary:    e.ShoalBin,
		DataDir:   data,
		LogPath:   filepath.Join(dir, "tracker.log"),
		Listen:    h.IP + ":5090",
		P2PListen: "/ip4/" + h.IP + "/tcp/5091",
		Netns:     h.Netns,
		Args:      []string{"--log-level", "info"},
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	d, err := deployShoal(ctx, e, dir, false, "--tracker", tr.URL)
	if err != nil {
		tr.Close()
		return nil, err
	}
	stopNodes := d.Stop
	d.Stop = func() error { return errors.Join(stopNodes(), tr.Close()) }
	return d, nil
}

// deployShoal starts a `shoal node` on every host, as a DaemonSet would: its mirror on the
// host's 127.0.0.1:5000, which the host's containerd uses first, and its peer-to-peer side
// on the host's address. With bootstrap, the first node starts alone and the others join
// through it. extra flags go to every node (a tracker, say).
func deployShoal(ctx context.Context, e *Env, dir string, bootstrap bool, extra ...string) (_ *Deployment, err error) {
	nodes := make([]*harness.Node, len(e.Net.Hosts))
	stop := func() error { return harness.CloseNodes(nodes) }
	defer func() {
		if err != nil {
			err = errors.Join(err, stop())
		}
	}()
	start := func(i int, bootstrap []string) error {
		h := e.Net.Hosts[i]
		data := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		args := []string{"--p2p-listen", "/ip4/" + h.IP + "/tcp/4001", "--log-level", "info"}
		for _, b := range bootstrap {
			args = append(args, "--bootstrap", b)
		}
		n, err := harness.RunNode(ctx, harness.NodeOptions{
			Binary:       e.ShoalBin,
			DataDir:      data,
			LogPath:      filepath.Join(dir, h.Name+".log"),
			Netns:        h.Netns,
			RegistryAddr: "127.0.0.1:5000",
			AdminAddr:    h.IP + ":5001",
			Upstreams:    []string{e.OriginHost + "=http://" + e.OriginHost},
			CacheSize:    units.Format(4 * e.ImageBytes),
			Args:         slices.Concat(args, extra),
		})
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		nodes[i] = n
		return nil
	}
	var boot []string
	first := 0
	if bootstrap {
		if err := start(0, nil); err != nil {
			return nil, err
		}
		st, err := nodes[0].Status(ctx)
		if err != nil {
			return nil, err
		}
		if len(st.Addrs) == 0 {
			return nil, fmt.Errorf("host %s: /status has no addrs to bootstrap from", e.Net.Hosts[0].Name)
		}
		boot, first = st.Addrs[:1], 1
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := first; i < len(nodes); i++ {
		wg.Go(func() { errs[i] = start(i, boot) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	hosts := filepath.Join(dir, "hosts.d")
	if err := harness.WriteHostsTOML(hosts, e.OriginHost, "http://"+e.OriginHost, "http://127.0.0.1:5000"); err != nil {
		return nil, err
	}
	peerBytes := func(ctx context.Context) (int64, error) {
		var sum float64
		for _, n := range nodes {
			m, err := n.Metrics(ctx)
			if err != nil {
				return 0, err
			}
			sum += m.Sum("shoal_blob_fetched_bytes_total", harness.Labels{"source": "peer"})
		}
		return int64(sum), nil
	}
	return &Deployment{HostsDir: hosts, Stop: stop, PeerBytes: peerBytes}, nil
}
