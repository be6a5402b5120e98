package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tracker"
)

// TrackerOptions configures `shoal tracker`.
type TrackerOptions struct {
	Binary    string // default: ShoalBinary
	DataDir   string // --data-dir (its identity); StartTracker defaults to a temp dir
	LogPath   string // stdout and stderr; StartTracker defaults to a temp dir
	Listen    string // --listen, the HTTP API; default a free loopback address
	P2PListen string // --p2p-listen; default a free loopback TCP port
	// Netns runs the tracker inside this network namespace; Listen is then required, an
	// address there that this process can reach.
	Netns string
	Args  []string
}

// Tracker is a running `shoal tracker`.
type Tracker struct {
	*Process
	Addr    string // the HTTP API's host:port
	URL     string // http://Addr, what nodes get as --tracker
	DataDir string

	client  *http.Client
	stopped stopOnce
}

// RunTracker starts `shoal tracker` and waits until GET /healthz answers 200.
func RunTracker(ctx context.Context, o TrackerOptions) (*Tracker, error) {
	if o.Binary == "" {
		p, err := ShoalBinary()
		if err != nil {
			return nil, err
		}
		o.Binary = p
	}
	if o.DataDir == "" || o.LogPath == "" {
		return nil, errors.New("start shoal tracker: DataDir and LogPath are required")
	}
	if o.Netns != "" && o.Listen == "" {
		return nil, fmt.Errorf("start shoal tracker in namespace %s: Listen is required", o.Netns)
	}
	if o.P2PListen == "" {
		o.P2PListen = "/ip4/127.0.0.1/tcp/0"
	}
	pick := o.Listen == ""
	p, err := startServer(ctx, pick, func() (launch, error) {
		if pick {
			var err error
			if o.Listen, err = FreeAddr(); err != nil {
				return launch{}, err
			}
		}
		args := append([]string{"tracker",
			"--listen", o.Listen,
			"--p2p-listen", o.P2PListen,
			"--data-dir", o.DataDir,
			"--log-format", "json",
			"--log-level", "debug",
		}, o.Args...)
		return launch{
			name: "shoal tracker", logPath: o.LogPath, netns: o.Netns, bin: o.Binary,
			args: args, ready: "http://" + o.Listen + "/healthz", timeout: 30 * time.Second,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Tracker{Process: p, Addr: o.Listen, URL: "http://" + o.Listen, DataDir: o.DataDir, client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// StartTracker is RunTracker for tests: data and log in temp dirs unless given, stopped on
// cleanup (the test fails unless it exits cleanly), its log shown if the test failed.
func StartTracker(tb testing.TB, o TrackerOptions) *Tracker {
	tb.Helper()
	if o.Binary == "" {
		o.Binary = BuildShoal(tb)
	}
	if o.DataDir == "" {
		o.DataDir = tb.TempDir()
	}
	if o.LogPath == "" {
		o.LogPath = fmt.Sprintf("%s/shoal-tracker-%d.log", tb.TempDir(), time.Now().UnixNano())
	}
	t, err := RunTracker(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	logOnFailure(tb, t.Process)
	t.stopped.stopOnCleanup(tb, "shoal tracker", t.stop)
	return t
}

// Close sends SIGTERM and waits; calling it again returns the same result.
func (t *Tracker) Close() error { return t.stopped.close(t.stop) }

// Kill stops the tracker at once with SIGKILL, as a crash would; it then counts as closed.
func (t *Tracker) Kill() { t.stopped.kill(t.Process.Kill) }

func (t *Tracker) stop() error { return t.Stop(NodeStopTimeout) }

// Swarms reads GET /swarms.
func (t *Tracker) Swarms(ctx context.Context) (tracker.SwarmsResponse, error) {
	var out tracker.SwarmsResponse
	body, err := getOK(ctx, t.client, t.URL+tracker.PathSwarms)
	if err != nil {
		return out, err
	}
	defer body.Close()
	if err := json.NewDecoder(body).Decode(&out); err != nil {
		return out, fmt.Errorf("decode %s%s: %w", t.URL, tracker.PathSwarms, err)
	}
	return out, nil
}

// Metrics reads and parses GET /metrics.
func (t *Tracker) Metrics(ctx context.Context) (Metrics, error) {
	return readMetrics(ctx, t.client, t.URL+"/metrics")
}
