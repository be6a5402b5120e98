package prefetcher

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/registryapi"
)

// run fetches the plan's blobs, a few at a time, and returns at the first failure (which
// ends the others' waits; their downloads go on without the prefetch).
func (h *Handler) run(ctx context.Context, pl *plan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(blobWorkers)
	for _, b := range pl.blobs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return h.fetch(gctx, pl.repo, b) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// fetch makes sure the node holds b: a cached blob is marked recently used; any other joins
// or starts its download and waits until it is verified and committed.
func (h *Handler) fetch(ctx context.Context, repo registryapi.Repo, b *blob) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.opts.Cache.Touch(b.digest); err == nil {
		b.state.Store(blobCached)
		return nil
	}
	b.state.Store(blobFetching)
	r, err := h.opts.Downloads.Open(ctx, repo, b.digest)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s: %w", b.digest, err)
	}
	defer r.Close()
	if r.Size() != b.size {
		return fmt.Errorf("blob %s is %d bytes, its manifest says %d", b.digest, r.Size(), b.size)
	}
	if err := r.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("blob %s: %w", b.digest, err)
	}
	if err := h.opts.Cache.Stat(b.digest); err != nil {
		return fmt.Errorf("blob %s verified but not kept in the cache: %w", b.digest, err)
	}
	b.state.Store(blobDone)
	return nil
}
