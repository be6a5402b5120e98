package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child program whose stdout and stderr go to a log file.
type Process struct {
	Name    string // for messages: "registry", "containerd", "shoal node"
	LogPath string
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	err     error // the result of cmd.Wait, readable once done is closed
}

// startProcess starts path with args and env added to the current environment.
func startProcess(name, logPath string, env []string, path string, args ...string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	// The child dies with the test binary even when it is killed by a timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its exit error (nil for status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// ErrKilled is returned by Stop when the process ignored SIGTERM and had to be killed.
var ErrKilled = errors.New("did not exit after SIGTERM, killed")

// Stop sends SIGTERM and waits up to grace for the process to exit, then kills it. It returns
// ErrKilled if it had to kill, the exit error if the process exited with a non-zero status,
// and nil after a clean exit (or if the process had already exited cleanly).
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill() // fails only if it has exited already, which done tells
	<-p.done
	return fmt.Errorf("stop %s (pid %d) within %v: %w", p.Name, p.Pid(), grace, ErrKilled)
}

// Kill stops the process at once with SIGKILL.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill() // fails only if it has exited already, which done tells
	<-p.done
}

func (p *Process) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s (pid %d) exited: %w", p.Name, p.Pid(), p.err)
	}
	return nil
}

// Log returns the whole log.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log.
func (p *Process) LogTail(n int) string {
	b, _ := os.ReadFile(p.LogPath)
	b = bytes.TrimRight(b, "\n")
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines in %s)", len(lines)-n, p.LogPath)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// logOnFailure shows the tail of p's log when tb has failed. It must be registered after
// the TempDir that holds the log, so that it runs before the directory is removed.
func logOnFailure(tb testing.TB, p *Process) {
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("--- log of %s (%s) ---\n%s\n--- end of %s log ---", p.Name, p.LogPath, p.LogTail(logTailLines), p.Name)
		}
	})
}

// logTailLines is how much of a child's log a failing test shows; SHOAL_E2E_LOG_LINES
// changes it.
var logTailLines = func() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("SHOAL_E2E_LOG_LINES"), &n); err == nil && n > 0 {
		return n
	}
	return 60
}()

// addrInUse reports whether a process that exited during start-up did so because its port
// was taken, so the caller can retry with another.
func addrInUse(p *Process) bool {
	return strings.Contains(p.Log(), "address already in use")
}

// launch is one attempt at starting a server: what to run, where it logs, and the URL that
// answers 200 once it is up.
type launch struct {
	name    string // for messages: "registry", "shoal node"
	logPath string
	env     []string
	netns   string // run inside this network namespace (`ip netns exec` execs in place)
	bin     string
	args    []string
	ready   string
	timeout time.Duration
}

// startServer starts what next returns and waits until its ready URL answers 200. When the
// server could not listen because its address was taken and the addresses are picked here
// (repick), it tries again with a fresh launch from next, three times at most.
func startServer(ctx context.Context, repick bool, next func() (launch, error)) (*Process, error) {
	var lastErr error
	name := "server"
	for range 3 {
		l, err := next()
		if err != nil {
			return nil, err
		}
		name = l.name
		path, args := l.bin, l.args
		if l.netns != "" {
			path, args = "ip", append([]string{"netns", "exec", l.netns, l.bin}, args...)
		}
		p, err := startProcess(l.name, l.logPath, l.env, path, args...)
		if err != nil {
			return nil, err
		}
		err = waitHTTP(ctx, p, l.ready, http.StatusOK, l.timeout)
		if err == nil {
			return p, nil
		}
		p.Kill()
		lastErr = fmt.Errorf("%w\n%s", err, p.LogTail(30))
		if !repick || !addrInUse(p) {
			break
		}
	}
	return nil, fmt.Errorf("start %s: %w", name, lastErr)
}

// stopOnce stops a server at most once: its Close, its Kill and a test's cleanup share the
// first attempt, and Close returns that attempt's result ever after.
type stopOnce struct {
	once sync.Once
	err  error
}

// close runs stop unless the server was stopped already, and returns the first result.
func (s *stopOnce) close(stop func() error) error {
	s.once.Do(func() { s.err = stop() })
	return s.err
}

// kill runs kill unless the server was stopped already; it then counts as closed.
func (s *stopOnce) kill(kill func()) { s.once.Do(kill) }

// stopOnCleanup has tb's cleanup run stop unless the server was stopped already, and fail tb
// if that stop failed.
func (s *stopOnce) stopOnCleanup(tb testing.TB, name string, stop func() error) {
	tb.Cleanup(func() {
		stopped := false
		s.once.Do(func() {
			stopped = true
			s.err = stop()
		})
		if stopped && s.err != nil {
			tb.Errorf("%s shutdown: %v", name, s.err)
		}
	})
}
