package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/shoal-dev/shoal/internal/units"
	"github.com/shoal-dev/shoal/node/prefetch"
)

const prefetchSummary = `Usage: shoal prefetch IMAGE [flags]

Asks shoal nodes to pull IMAGE into their caches ahead of a rollout, all nodes at once, and
shows each one's progress: bytes, rate and time left. IMAGE is a full reference,
registry-host[:port]/repo[:tag|@digest] (Docker's short forms such as nginx:1.27 mean
docker.io); its registry must be one the nodes mirror. For an index, every platform's
manifest is fetched unless --platform narrows it. Exits 1 if any node failed.`

// defaultAdminURL is where a node started with the default --admin-addr answers.
const defaultAdminURL = "http://" + defaultAdminAddr

// prefetchOutput says how progress is shown.
type prefetchOutput struct {
	w io.Writer
	// tty redraws one line per node in place; otherwise a line per running node is printed
	// every interval.
	tty      bool
	interval time.Duration
}

func runPrefetch(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("prefetch")
	var (
		nodes     commaList
		platforms commaList
		nodesDNS  = fs.String("nodes-dns", "", "DNS `name[:port]` whose A/AAAA records are nodes (e.g. a headless Service); each is asked on port (default "+defaultAdminPort+", the admin port)")
		timeout   = fs.Duration("timeout", 30*time.Minute, "give up after this `duration`")
	)
	fs.Var(&nodes, "nodes", "admin `URL`s of the nodes, comma-separated or repeated (default "+defaultAdminURL+")")
	fs.Var(&platforms, "platform", "the `os/arch[/variant]` whose manifest to take from an index, comma-separated or repeated (default: every one)")
	image, err := parsePrefetchArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout %v: must be positive", *timeout)
	}
	for _, p := range platforms {
		if _, err := prefetch.ParsePlatform(p); err != nil {
			return fmt.Errorf("--platform: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	urls, err := nodeURLs(ctx, nodes, *nodesDNS)
	if err != nil {
		return err
	}
	out := prefetchOutput{w: stdout, tty: isTerminal(stdout) && len(urls) <= maxTerminalNodes, interval: 2 * time.Second}
	return prefetchNodes(ctx, *timeout, image, platforms, urls, out)
}

// parsePrefetchArgs parses flags that may come before or after the image, and returns the
// image, checked.
func parsePrefetchArgs(fs *flag.FlagSet, args []string, stdout io.Writer) (string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printUsage(stdout, fs, prefetchSummary)
			}
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(positional) {
	case 0:
		return "", errors.New("no image given (usage: shoal prefetch IMAGE [--nodes URL,...])")
	case 1:
	default:
		return "", fmt.Errorf("one image at a time, got %d: %s", len(positional), strings.Join(positional, " "))
	}
	// A typo is caught here, before every node is asked; the nodes hold the reference to
	// the grammar of their mirror and say what they refuse.
	if _, err := name.ParseReference(positional[0]); err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", positional[0], err)
	}
	return positional[0], nil
}

// nodeURLs checks the --nodes URLs and adds the nodes --nodes-dns names; with neither it is
// the local node.
func nodeURLs(ctx context.Context, nodes []string, dnsName string) ([]string, error) {
	if len(nodes) == 0 && dnsName == "" {
		nodes = []string{defaultAdminURL}
	}
	var urls []string
	for _, raw := range nodes {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("--nodes %q: want http://HOST:PORT, a node's admin address", raw)
		}
		urls = append(urls, u.Scheme+"://"+u.Host+strings.TrimSuffix(u.EscapedPath(), "/"))
	}
	if dnsName != "" {
		host, port, err := net.SplitHostPort(dnsName)
		if err != nil {
			host, port = dnsName, defaultAdminPort
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 || host == "" {
			return nil, fmt.Errorf("--nodes-dns %q: want NAME or NAME:PORT", dnsName)
		}
		addrs, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("--nodes-dns: %w", err)
		}
		for _, a := range addrs {
			urls = append(urls, "http://"+net.JoinHostPort(a, port))
		}
	}
	slices.Sort(urls)
	return slices.Compact(urls), nil
}

// nodeProgress is what is known of one node's prefetch.
type nodeProgress struct {
	url     string
	last    prefetch.Progress
	started bool // a progress line arrived
	done    bool
	err     error
	samples []sample // recent (seconds, bytes done), for the rate
}

type sample struct {
	seconds float64
	bytes   int64
}

// rateWindow is how far back the rate shown looks.
const rateWindow = 5.0 // seconds

func (p *nodeProgress) record(line prefetch.Progress) {
	p.last, p.started = line, true
	// Bytes found in the cache arrive all at once and say nothing of the rate.
	p.samples = append(p.samples, sample{line.Seconds, line.BytesDone - line.BytesCached})
	for len(p.samples) > 2 && p.samples[0].seconds < line.Seconds-rateWindow {
		p.samples = p.samples[1:]
	}
}

// minRateSpan is how long a rate must be measured over before it is shown: nodes report
// downloads in whole chunks, so the first moments say little.
const minRateSpan = 1.5 // seconds

// rate is bytes per second over the recent samples; 0 when unknown.
func (p *nodeProgress) rate() float64 {
	if len(p.samples) < 2 {
		return 0
	}
	first, last := p.samples[0], p.samples[len(p.samples)-1]
	if last.seconds-first.seconds < minRateSpan {
		return 0
	}
	return float64(last.bytes-first.bytes) / (last.seconds - first.seconds)
}

// line describes the node's state in one line.
func (p *nodeProgress) line(width int) string {
	name := fmt.Sprintf("%-*s", width, p.url)
	l := p.last
	switch {
	case p.err != nil:
		return name + "  failed: " + p.err.Error()
	case p.done:
		fetched := l.BytesDone - l.BytesCached
		s := fmt.Sprintf("%s  ok  %s in %s (%s) in %.1fs: %s fetched", name,
			units.Human(l.BytesTotal), plural(l.BlobsTotal, "blob"), plural(l.Manifests, "manifest"), l.Seconds, units.Human(fetched))
		if l.Seconds > 0 && fetched > 0 {
			s += fmt.Sprintf(" at %s/s", units.Human(int64(float64(fetched)/l.Seconds)))
		}
		return s + fmt.Sprintf(", %s already cached", units.Human(l.BytesCached))
	case !p.started:
		return name + "  resolving..."
	}
	pct := 100.0
	if l.BytesTotal > 0 {
		pct = 100 * float64(l.BytesDone) / float64(l.BytesTotal)
	}
	s := fmt.Sprintf("%s  %s / %s  %3.0f%%  %d/%d blobs", name, units.Human(l.BytesDone), units.Human(l.BytesTotal), pct, l.BlobsDone, l.BlobsTotal)
	if r := p.rate(); r > 0 {
		eta := time.Duration(float64(l.BytesTotal-l.BytesDone) / r * float64(time.Second))
		s += fmt.Sprintf("  %s/s  ETA %v", units.Human(int64(r)), eta.Round(time.Second))
	} else {
		s += "  ETA ?"
	}
	return s
}

// prefetchNodes runs the prefetch on every node at once and shows progress until all are done.
func prefetchNodes(ctx context.Context, timeout time.Duration, image string, platforms, urls []string, out prefetchOutput) error {
	body, err := json.Marshal(prefetch.Request{Image: image, Platforms: platforms})
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex
		states = make([]*nodeProgress, len(urls))
		width  int
		wg     sync.WaitGroup
	)
	for i, u := range urls {
		states[i] = &nodeProgress{url: u}
		width = max(width, len(u))
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	finished := make(chan struct{})
	for i, u := range urls {
		wg.Go(func() {
			err := prefetchOn(ctx, client, u, body, func(line prefetch.Progress) {
				mu.Lock()
				states[i].record(line)
				mu.Unlock()
			})
			switch {
			case err == nil:
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				err = fmt.Errorf("timed out after %v", timeout)
			case ctx.Err() != nil:
				err = errors.New("interrupted")
			}
			mu.Lock()
			states[i].done, states[i].err = true, err
			mu.Unlock()
		})
	}
	go func() {
		wg.Wait()
		close(finished)
	}()

	render := func(final bool) {
		mu.Lock()
		defer mu.Unlock()
		var b strings.Builder
		if out.tty {
			for _, s := range states {
				b.WriteString("\r\x1b[2K" + s.line(width) + "\n")
			}
			if !final {
				// Back to the first line, to draw over it next time.
				fmt.Fprintf(&b, "\x1b[%dA", len(states))
			}
		} else {
			for _, s := range states {
				if final || !s.done {
					b.WriteString(s.line(width) + "\n")
				}
			}
		}
		_, _ = io.WriteString(out.w, b.String()) // a terminal that went away has nobody to tell
	}
	interval := out.interval
	if out.tty {
		interval = 200 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	if out.tty {
		render(false)
	}
	for running := true; running; {
		select {
		case <-tick.C:
			render(false)
		case <-finished:
			running = false
		}
	}
	render(true)

	var failed []string
	for _, s := range states {
		if s.err != nil {
			failed = append(failed, s.url+": "+s.err.Error())
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(urls) == 1:
		return fmt.Errorf("prefetch %s on %s", image, failed[0])
	}
	return fmt.Errorf("prefetch %s failed on %d of %d nodes; %s", image, len(failed), len(urls), strings.Join(failed, "; "))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// maxTerminalNodes is the most nodes shown as lines redrawn in place; more would not fit
// on a screen, and are shown as plain lines.
const maxTerminalNodes = 20

// maxProgressLine bounds one line of a node's answer.
const maxProgressLine = 1 << 20

// prefetchOn asks one node to prefetch and hands each progress line to progress. It
// returns nil once the node said ok.
func prefetchOn(ctx context.Context, client *http.Client, base string, body []byte, progress func(prefetch.Progress)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+prefetch.Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", prefetch.RequestType)
	req.Header.Set("Accept", prefetch.ProgressType)
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return oneLine(err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var p prefetch.Progress
		if json.Unmarshal(raw, &p) == nil && p.Error != "" {
			return oneLine(fmt.Sprintf("%s (status %d)", p.Error, resp.StatusCode))
		}
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return oneLine(fmt.Sprintf("status %d: %s", resp.StatusCode, msg))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxProgressLine)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var p prefetch.Progress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return oneLine(fmt.Sprintf("the node sent a line that is not progress: %v", err))
		}
		progress(p)
		switch p.Status {
		case prefetch.StatusOK:
			return nil
		case prefetch.StatusError:
			return oneLine(p.Error)
		}
	}
	if err := sc.Err(); err != nil {
		return oneLine(fmt.Sprintf("reading progress: %v", err))
	}
	return errors.New("the node ended the stream before the prefetch finished")
}

// oneLine makes an error of msg that fits on one line.
func oneLine(msg string) error {
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" {
		msg = "failed without a message"
	}
	return errors.New(msg)
}

// isTerminal reports whether w is a terminal that understands cursor movement.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// commaList is a flag of values given comma-separated, repeatedly, or both.
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }
func (l *commaList) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return errors.New("empty value")
		}
		*l = append(*l, part)
	}
	return nil
}
