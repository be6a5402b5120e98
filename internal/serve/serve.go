// Package serve runs the daemons' HTTP servers.
package serve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// DrainTimeout bounds how long HTTP waits for requests in progress once its context ends.
const DrainTimeout = 10 * time.Second

// HTTP runs srv on ln until ctx ends, then drains it for at most DrainTimeout and closes
// what is left. It returns nil after a shutdown and the server's error otherwise.
func HTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
