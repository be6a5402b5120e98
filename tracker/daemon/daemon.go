// Package daemon is `shoal tracker`: a tracker server on its own HTTP listener, beside a
// libp2p host that is a DHT server peer nodes join through, and the process's metrics.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-dev/shoal/internal/serve"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/tracker/server"
)

// Config is what `shoal tracker` runs with.
type Config struct {
	Listen    string   // address of the HTTP API
	P2PListen []string // libp2p multiaddrs nodes join the DHT through
	DataDir   string   // holds the p2p identity key (DATA-DIR/identity, created if absent)
	// PSK is the fleet's private network key file (/key/swarm/psk/1.0.0/ format); empty for
	// none.
	PSK    string
	Limits server.Limits
	Logger *slog.Logger // nil: slog.Default()
}

// Run runs a tracker until ctx ends: the HTTP API on cfg.Listen and a libp2p host that is a
// DHT server peer, so that a node knowing only the tracker's URL joins the DHT through the
// addresses /bootstrap gives.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.P2PListen) == 0 {
		return errors.New("tracker: no p2p listen address")
	}
	hostOpts := p2p.HostOptions{
		ListenAddrs:  cfg.P2PListen,
		IdentityPath: filepath.Join(cfg.DataDir, "identity"),
		Logger:       log,
	}
	if cfg.PSK != "" {
		psk, err := p2p.LoadPSK(cfg.PSK)
		if err != nil {
			return err
		}
		hostOpts.PSK = psk
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()
	h, err := p2p.NewHost(hostOpts)
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	defer h.Close()
	router, err := p2p.NewRouter(h, p2p.RouterOptions{Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	defer router.Close()
	srv, err := server.New(server.Options{
		Addrs:    func() []string { return p2p.Addrs(h) },
		Limits:   cfg.Limits,
		Registry: reg,
		Logger:   log,
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
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("tracker listening", "http", ln.Addr().String(), "peer", h.ID().String(), "addrs", p2p.Addrs(h))

	err = serve.HTTP(ctx, httpSrv, ln)
	log.Info("tracker stopped")
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
