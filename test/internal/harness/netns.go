package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckNetns says why network namespaces and tc-shaped links cannot be made here: they need
// root and iproute2's ip and tc.
func CheckNetns() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (install iproute2)", tool)
		}
	}
	return nil
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([kmgt]?)(i?)(bit|bps)$`)

// ParseRate reads a tc rate ("250mbit", "1gbit", "100mbps", "1gibit") as bits per second.
func ParseRate(s string) (float64, error) {
	m := rateRE.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, fmt.Errorf("link rate %q: want a tc rate such as 250mbit or 1gbit", s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("link rate %q: want a positive number", s)
	}
	base := 1000.0
	if m[3] == "i" {
		base = 1024
	}
	v *= map[string]float64{"": 1, "k": base, "m": base * base, "g": base * base * base, "t": base * base * base * base}[m[2]]
	if m[4] == "bps" {
		v *= 8
	}
	return v, nil
}

// Link is a network namespace joined to the host by a veth pair whose two directions are
// shaped with tc: a host on the far side of a link of known speed, on this one machine.
// Traffic stays on the pair; nothing is routed beyond it.
type Link struct {
	Netns    string // namespace name, for `ip netns exec`
	HostAddr string // the host end's address
	PeerAddr string // the address inside the namespace
	hostDev  string
}

// NewLink creates namespace name with a veth pair to the host, addresses 10.231.<index>.1
// (host) and .2 (namespace), both directions limited to rate (a tc rate such as "1gbit").
// It needs root and iproute2. Close removes everything.
func NewLink(name string, index int, rate string) (*Link, error) {
	if err := CheckNetns(); err != nil {
		return nil, err
	}
	if index < 0 || index > 255 {
		return nil, fmt.Errorf("link index %d out of range", index)
	}
	l := &Link{
		Netns:    name,
		HostAddr: fmt.Sprintf("10.231.%d.1", index),
		PeerAddr: fmt.Sprintf("10.231.%d.2", index),
		hostDev:  fmt.Sprintf("sh%dh", index),
	}
	peerDev := fmt.Sprintf("sh%dp", index)
	l.Close() // leftovers of an interrupted run
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", l.hostDev, "type", "veth", "peer", "name", peerDev},
		{"ip", "link", "set", peerDev, "netns", name},
		{"ip", "addr", "add", l.HostAddr + "/30", "dev", l.hostDev},
		{"ip", "link", "set", l.hostDev, "up"},
		{"ip", "netns", "exec", name, "ip", "addr", "add", l.PeerAddr + "/30", "dev", peerDev},
		{"ip", "netns", "exec", name, "ip", "link", "set", peerDev, "up"},
		{"ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"},
		{"tc", "qdisc", "add", "dev", l.hostDev, "root", "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"},
		{"ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", peerDev, "root", "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"},
	}
	if err := RunCommands(steps); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// RunCommands runs each command line in turn (ip, tc: what builds a network), stopping at
// the first that fails; the error quotes the command and its output.
func RunCommands(steps [][]string) error {
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Close removes the namespace and the veth pair (deleting one end deletes both).
func (l *Link) Close() error {
	_ = exec.Command("ip", "link", "del", l.hostDev).Run() // gone with the namespace below if this fails
	if out, err := exec.Command("ip", "netns", "del", l.Netns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", l.Netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// InNetns runs f on an OS thread that has joined network namespace name (one `ip netns add`
// made). Sockets f creates belong to that namespace for their whole life, whichever thread
// later uses them, so f is where a dial or a listen goes. The thread returns to this
// process's namespace afterwards: it must live on, since a child process started from it
// (see startProcess's Pdeathsig) would die with it. Only if it cannot go back is it left
// locked, to end with its goroutine.
func InNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open(filepath.Join("/var/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", name, err)
			return
		}
		err = f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialerIn returns a DialContext function (for an http.Transport) whose connections are made
// inside network namespace name: a client in that namespace, without a process of its own.
func DialerIn(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(name, func() (err error) {
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// ListenIn listens on addr inside network namespace name.
func ListenIn(name, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNetns(name, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
