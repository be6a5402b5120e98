// Package harness runs the real programs shoal works with (the CNCF distribution registry,
// crane, containerd and ctr, the OCI conformance suite, and shoal itself) as child processes
// on loopback addresses, for the end-to-end tests, the benchmark and the demo.
//
// Functions that take a testing.TB fail or skip the test and register their own cleanup.
// Each has a plain variant that returns an error and leaves stopping to the caller, for
// programs that are not tests.
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the process runs in CI (CI=true), where a missing tool is a failure
// rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

var gobin = sync.OnceValue(func() string {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return ""
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 2 {
		return ""
	}
	if dir := strings.TrimSpace(lines[0]); dir != "" {
		return dir
	}
	if gopath := strings.TrimSpace(lines[1]); gopath != "" {
		return filepath.Join(filepath.SplitList(gopath)[0], "bin")
	}
	return ""
})

// ToolPath finds a program on PATH or, failing that, where scripts/install-tools.sh puts
// it: $(go env GOBIN), else $(go env GOPATH)/bin.
func ToolPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if dir := gobin(); dir != "" {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (run scripts/install-tools.sh)", name)
}

// RequireTools skips tb when one of the named programs is missing, or fails it in CI.
func RequireTools(tb testing.TB, names ...string) {
	tb.Helper()
	for _, name := range names {
		if _, err := ToolPath(name); err != nil {
			skipOrFail(tb, err.Error())
		}
	}
}

// RequireContainerd skips tb unless it runs as root with containerd and ctr installed; in
// CI it fails instead.
func RequireContainerd(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(tb, "containerd tests need root")
	}
	RequireTools(tb, "containerd", "ctr")
}

func skipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("%s (CI=true: a missing prerequisite is a failure)", msg)
	}
	tb.Skip(msg)
}

var (
	portsMu sync.Mutex
	ports   = map[string]bool{}
)

// FreeAddr returns a loopback address "127.0.0.1:PORT" that nothing listens on and that this
// process has not handed out before. Another process can still take the port before the
// caller binds it; the Start functions retry with a new address when that happens.
func FreeAddr() (string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("pick a free port: %w", err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !ports[addr] {
			ports[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("pick a free port: no unused port found")
}

// FreePort is FreeAddr's port.
func FreePort() (int, error) {
	addr, err := FreeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

// MustFreeAddr is FreeAddr for tests.
func MustFreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := FreeAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// Poll calls check every 50 ms until it returns nil, ctx ends or timeout passes; the error
// names what was awaited and the last failure.
func Poll(ctx context.Context, what string, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if errors.Is(err, errGiveUp) {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// errGiveUp, wrapped in the error of a Poll check, stops the polling at once.
var errGiveUp = errors.New("gave up")

// shortTempDir makes a directory with a short path under the system temp dir: unix socket
// paths must stay under 108 bytes, which test names in t.TempDir paths easily exceed.
func shortTempDir(prefix string) (string, error) {
	return os.MkdirTemp("", prefix)
}

// tempDir returns tb.TempDir(), or a short one removed on cleanup when short is set.
func tempDir(tb testing.TB, prefix string, short bool) string {
	tb.Helper()
	if !short {
		return tb.TempDir()
	}
	dir, err := shortTempDir(prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// RequireNetns skips tb unless network namespaces and shaped links can be made here (see
// CheckNetns); in CI it fails instead.
func RequireNetns(tb testing.TB) {
	tb.Helper()
	if err := CheckNetns(); err != nil {
		skipOrFail(tb, err.Error())
	}
}
