package origin

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// authTransport returns the authenticated transport for (up, repo), building it on first
// use. fresh reports whether this call built it, so a rejection seen right away is not
// worth a rebuild.
func (c *Client) authTransport(ctx context.Context, up *upstream, repo string) (e *authEntry, fresh bool, err error) {
	return c.auth.get(ctx, authKey{registry: up.key, repo: repo}, func(ctx context.Context) (http.RoundTripper, error) {
		auth, err := c.creds.authenticator(up)
		if err != nil {
			return nil, permanent(fmt.Errorf("%w: credentials for %s: %w", ErrDenied, up.key, err))
		}
		scopes := []string{up.reg.Repo(repo).Scope(transport.PullScope)}
		// Pings /v2/ for the challenge, then fetches a token for the scope when the
		// registry asks for one; the result refreshes its token on a new challenge.
		rt, err := transport.NewWithContext(ctx, up.reg, auth, up.rt, scopes)
		if err != nil {
			return nil, authError(err)
		}
		return rt, nil
	})
}

// authKey names one cached authenticated transport. Tokens are scoped to a repository, so
// each repository gets its own.
type authKey struct{ registry, repo string }

// authEntry is a cached transport, or one being built: ready is closed once rt or err is
// set.
type authEntry struct {
	key   authKey
	ready chan struct{}
	rt    http.RoundTripper
	err   error
	elem  *list.Element
}

// authCache is a bounded LRU of authenticated transports. Concurrent callers for one key
// share a single build.
type authCache struct {
	mu  sync.Mutex
	max int
	lru *list.List // of *authEntry, most recently used first
	m   map[authKey]*authEntry
}

func newAuthCache(max int) *authCache {
	return &authCache{max: max, lru: list.New(), m: make(map[authKey]*authEntry)}
}

func (a *authCache) get(ctx context.Context, k authKey, build func(context.Context) (http.RoundTripper, error)) (*authEntry, bool, error) {
	for {
		a.mu.Lock()
		if e, ok := a.m[k]; ok {
			a.lru.MoveToFront(e.elem)
			a.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if e.err == nil {
				return e, false, nil
			}
			if isContextErr(e.err) && ctx.Err() == nil {
				// The caller that was building gave up; this one has not.
				continue
			}
			return nil, false, e.err
		}
		e := &authEntry{key: k, ready: make(chan struct{})}
		e.elem = a.lru.PushFront(e)
		a.m[k] = e
		for a.lru.Len() > a.max {
			a.removeLocked(a.lru.Back().Value.(*authEntry))
		}
		a.mu.Unlock()

		// Built with this caller's context, and never in a goroutine of its own:
		// waiters that outlive a cancelled builder build again themselves.
		e.rt, e.err = build(ctx)
		if e.err != nil {
			a.remove(e)
		}
		close(e.ready)
		if e.err != nil {
			return nil, true, e.err
		}
		return e, true, nil
	}
}

// remove drops e, unless it was already replaced or evicted.
func (a *authCache) remove(e *authEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(e)
}

func (a *authCache) removeLocked(e *authEntry) {
	if a.m[e.key] != e {
		return
	}
	delete(a.m, e.key)
	a.lru.Remove(e.elem)
}

func (a *authCache) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

// credentials reads a docker config.json and re-reads it when it changes on disk.
type credentials struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	modTime time.Time
	size    int64
	file    *configfile.ConfigFile
}

// loadCredentials reads path; "" means anonymous everywhere.
func loadCredentials(path string, log *slog.Logger) (*credentials, error) {
	c := &credentials{path: path, log: log}
	if path == "" {
		return c, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	file, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	c.file, c.modTime, c.size = file, fi.ModTime(), fi.Size()
	return c, nil
}

func readConfig(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	file, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	file.Filename = path
	return file, nil
}

// current returns the parsed config, reading it again if the file changed. A file that
// became unreadable or malformed keeps the last good credentials in use.
func (c *credentials) current() *configfile.ConfigFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		c.log.Warn("docker config unreadable, keeping the credentials read before", "err", err)
		return c.file
	}
	if fi.ModTime().Equal(c.modTime) && fi.Size() == c.size {
		return c.file
	}
	file, err := readConfig(c.path)
	if err != nil {
		c.log.Warn("docker config unreadable, keeping the credentials read before", "err", err)
		return c.file
	}
	c.file, c.modTime, c.size = file, fi.ModTime(), fi.Size()
	return file
}

// dockerHub lists the names Docker Hub goes by; its credentials are filed under
// authn.DefaultAuthKey ("https://index.docker.io/v1/").
var dockerHub = map[string]bool{
	"docker.io":            true,
	"index.docker.io":      true,
	"registry-1.docker.io": true,
}

// authenticator returns the credentials for up: those filed under its registry key, or
// else under its host. Credentials are only ever sent to that host and its token realm.
func (c *credentials) authenticator(up *upstream) (authn.Authenticator, error) {
	if c.path == "" {
		return authn.Anonymous, nil
	}
	file := c.current()
	keys := []string{up.key, up.host}
	if dockerHub[up.key] || dockerHub[up.host] {
		keys = append([]string{authn.DefaultAuthKey}, keys...)
	}
	seen := make(map[string]bool, len(keys))
	for _, key := range keys {
		if seen[key] {
			continue
		}
		seen[key] = true
		ac, err := file.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		// GetAuthConfig fills ServerAddress in even when it found nothing.
		ac.ServerAddress = ""
		if ac == (types.AuthConfig{}) {
			continue
		}
		return authn.FromConfig(authn.AuthConfig{
			Username:      ac.Username,
			Password:      ac.Password,
			Auth:          ac.Auth,
			IdentityToken: ac.IdentityToken,
			RegistryToken: ac.RegistryToken,
		}), nil
	}
	return authn.Anonymous, nil
}
