package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/tracker"
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
		maxPeers   = fs.Int("max-peers", tracker.DefaultMaxPeers, "most peers tracked; new ones are refused beyond it")
		maxMembers = fs.Int("max-members", tracker.DefaultMaxMembers, "most swarm memberships tracked over all blobs; new ones are refused beyond it")
		logLevel   = fs.String("log-level", "info", "log `level`: debug, info, warn, error")
		logFormat  = fs.String("log-format", "text", "log `format`: text or json")
		p2pListen  listFlag
	)
	fs.Var(&p2pListen, "p2p-listen", "libp2p `multiaddr` nodes join the DHT through (repeatable; default /ip4/0.0.0.0/tcp/5091)")
	if err := parseFlags(fs, args, configPath, stdout, trackerSummary); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if *maxPeers <= 0 || *maxMembers <= 0 {
		return errors.New("--max-peers and --max-members must be positive")
	}
	if len(p2pListen) == 0 {
		p2pListen = listFlag{"/ip4/0.0.0.0/tcp/5091"}
	}
	hostOpts := p2p.HostOptions{
		ListenAddrs:  p2pListen,
		IdentityPath: filepath.Join(*dataDir, "identity"),
		Logger:       logger,
	}
	if *psk != "" {
		if hostOpts.PSK, err = p2p.LoadPSK(*psk); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()
	h, err := p2p.NewHost(hostOpts)
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	defer h.Close()
	// The tracker is a DHT server peer like any node, so a node that knows only the
	// tracker's URL joins the DHT through the addresses /bootstrap gives.
	router, err := p2p.NewRouter(h, p2p.RouterOptions{Logger: logger, Registerer: reg})
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	defer router.Close()
	srv, err := tracker.NewServer(tracker.ServerOptions{
		Addrs:    func() []string { return p2p.Addrs(h) },
		Limits:   tracker.Limits{MaxPeers: *maxPeers, MaxMembers: *maxMembers},
		Registry: reg,
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	httpSrv := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	logger.Info("tracker listening", "http", ln.Addr().String(), "peer", h.ID().String(), "addrs", p2p.Addrs(h))

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := httpSrv.Shutdown(shutdownCtx); err != nil {
			httpSrv.Close()
		}
		return nil
	})
	err = g.Wait()
	logger.Info("tracker stopped")
	return err
}
