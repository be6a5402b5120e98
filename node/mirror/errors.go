package mirror

import (
	"errors"
	"fmt"

	"github.com/shoal-dev/shoal/node/swarm"
	"github.com/shoal-dev/shoal/registryapi"
	"github.com/shoal-dev/shoal/registryapi/origin"
)

// EdgeError maps what the store, the downloader and the upstream client report onto the
// errors the /v2 edge understands, keeping the original for logs.
func EdgeError(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, origin.ErrNotFound), errors.Is(err, origin.ErrUnknownRegistry):
		kind = registryapi.ErrNotFound
	case errors.Is(err, origin.ErrDenied):
		kind = registryapi.ErrDenied
	case errors.Is(err, origin.ErrTooManyRequests):
		kind = registryapi.ErrTooManyRequests
	case errors.Is(err, origin.ErrTooLarge):
		kind = registryapi.ErrTooLarge
	case errors.Is(err, origin.ErrUnavailable), errors.Is(err, origin.ErrDigestMismatch),
		errors.Is(err, swarm.ErrDigestMismatch), errors.Is(err, swarm.ErrStopped):
		// The origin sent something unusable or could not be reached: let the client try
		// the next host.
		kind = registryapi.ErrUnavailable
	default:
		return err
	}
	return fmt.Errorf("%w: %w", kind, err)
}
