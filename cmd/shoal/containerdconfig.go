package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/shoal-dev/shoal/registryapi"
)

const containerdConfigSummary = `Usage: shoal containerd-config --hosts-dir DIR --mirror URL [--registry HOST[=URL] ...] [--default] [flags]

Writes DIR/<host>/hosts.toml for each --registry, so that containerd pulls through the node
(the --mirror URLs, in order) and falls back to the registry itself when the node is down or
does not have what it asks for. DIR is containerd's registry config_path, usually
/etc/containerd/certs.d; containerd reads the files at every pull, no restart needed.
A hosts.toml this command did not write is kept as hosts.toml.shoal-backup next to it; the
same command with --remove puts it back, or deletes the file shoal wrote. Give at least one
--registry or --default.`

// hostsMarker starts every hosts.toml this command writes: it is how --remove, and a second
// run, tell shoal's files from the operator's. Only hostsMarkerPrefix is looked for, so the
// rest of the wording may change in a later version.
const (
	hostsMarkerPrefix = "# Written by shoal containerd-config"
	hostsMarker       = hostsMarkerPrefix + "; --remove restores what was here."
)

const (
	hostsFileName  = "hosts.toml"
	hostsBackupExt = ".shoal-backup"
	defaultHostDir = "_default"
	dockerHubURL   = "https://registry-1.docker.io"
)

// hostsTarget is one hosts.toml to manage: for a registry, or _default.
type hostsTarget struct {
	name   string // registry host as containerd names it, or "_default"
	server string // upstream URL; empty for _default, where containerd uses the image's registry
}

func runContainerdConfig(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("containerd-config")
	var (
		hostsDir    = flags.String("hosts-dir", "", "containerd's registry config_path `directory`, usually /etc/containerd/certs.d (required)")
		withDefault = flags.Bool("default", false, "also write _default/hosts.toml: registries not listed go through the node too, then to themselves")
		dialTimeout = flags.Duration("dial-timeout", 200*time.Millisecond, "how long containerd (2.1 and later; older versions ignore it) tries to connect to a mirror before the next")
		remove      = flags.Bool("remove", false, "undo: put back the hosts.toml files shoal replaced, delete the ones it created")
		mirrors     listFlag
		registries  listFlag
	)
	flags.Var(&mirrors, "mirror", "`URL` of the node's /v2 mirror, e.g. http://127.0.0.1:5080 (repeatable: tried in order)")
	flags.Var(&registries, "registry", "registry to pull through the node, `HOST[=URL]` (repeatable); URL names the upstream, by default https://HOST, or https://registry-1.docker.io for docker.io")
	if err := parseFlags(flags, args, nil, stdout, containerdConfigSummary); err != nil {
		return err
	}

	if *hostsDir == "" {
		return errors.New("--hosts-dir is required: containerd's registry config_path, usually /etc/containerd/certs.d")
	}
	if *dialTimeout <= 0 {
		return fmt.Errorf("--dial-timeout %v: must be positive", *dialTimeout)
	}
	mirrorURLs := make([]string, 0, len(mirrors))
	for _, m := range mirrors {
		u, err := parseRegistryURL(m)
		if err != nil {
			return fmt.Errorf("--mirror %q: %w", m, err)
		}
		// containerd drops a hosts.toml with the same [host] table twice as a whole.
		if slices.Contains(mirrorURLs, u) {
			return fmt.Errorf("--mirror %q: %s is given twice", m, u)
		}
		mirrorURLs = append(mirrorURLs, u)
	}
	if len(mirrorURLs) == 0 && !*remove {
		return errors.New("--mirror is required: the node's /v2 URL, e.g. http://127.0.0.1:5080")
	}
	if len(registries) == 0 && !*withDefault {
		return errors.New("no registry: give --registry HOST (repeatable), --default, or both")
	}
	targets := make([]hostsTarget, 0, len(registries)+1)
	seen := map[string]bool{}
	for _, r := range registries {
		t, err := parseRegistryArg(r)
		if err != nil {
			return fmt.Errorf("--registry %q: %w", r, err)
		}
		if seen[t.name] {
			return fmt.Errorf("--registry %q: %s is given twice", r, t.name)
		}
		seen[t.name] = true
		targets = append(targets, t)
	}
	if *withDefault {
		targets = append(targets, hostsTarget{name: defaultHostDir})
	}

	for _, t := range targets {
		var err error
		if *remove {
			err = removeHostsFile(*hostsDir, t.name, stdout, stderr)
		} else {
			var body []byte
			if body, err = renderHostsTOML(t.server, mirrorURLs, *dialTimeout); err == nil {
				err = installHostsFile(*hostsDir, t.name, body, stdout)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseRegistryArg reads HOST or HOST=URL.
func parseRegistryArg(arg string) (hostsTarget, error) {
	host, upstream, explicit := strings.Cut(arg, "=")
	if err := checkRegistryHost(host); err != nil {
		return hostsTarget{}, err
	}
	t := hostsTarget{name: host}
	switch {
	case explicit:
		u, err := parseRegistryURL(upstream)
		if err != nil {
			return hostsTarget{}, fmt.Errorf("upstream: %w", err)
		}
		t.server = u
	case host == registryapi.DockerHub:
		t.server = dockerHubURL
	default:
		t.server = "https://" + host
	}
	return t, nil
}

// checkRegistryHost accepts what an image reference may name as its registry: a DNS name,
// an IPv4 address or a bracketed IPv6 address, each with an optional port. Everything else
// is refused, in particular anything that could name a path outside the hosts directory.
func checkRegistryHost(host string) error {
	const want = "want a registry HOST[:PORT] or HOST=URL, e.g. docker.io or localhost:5000"
	if host == "" {
		return errors.New("empty registry host; " + want)
	}
	name, port := host, ""
	if rest, ok := strings.CutPrefix(host, "["); ok {
		addr, after, found := strings.Cut(rest, "]")
		ip, err := netip.ParseAddr(addr)
		if !found || err != nil || !ip.Is6() || ip.Zone() != "" {
			return errors.New("not a bracketed IPv6 address; " + want)
		}
		if after != "" {
			p, ok := strings.CutPrefix(after, ":")
			if !ok {
				return errors.New("unexpected text after the IPv6 address; " + want)
			}
			port = p
		}
		name = ""
	} else if i := strings.IndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i+1:]
		if strings.Contains(port, ":") {
			return errors.New("more than one colon (an IPv6 address goes in brackets); " + want)
		}
	}
	if name != "" {
		if err := checkDNSName(name); err != nil {
			return fmt.Errorf("%w; %s", err, want)
		}
	}
	if port != "" || strings.HasSuffix(host, ":") {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return fmt.Errorf("port %q is not a number from 1 to 65535; %s", port, want)
		}
	}
	return nil
}

// checkDNSName accepts dot-separated labels of letters, digits and inner hyphens.
func checkDNSName(name string) error {
	if len(name) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label in the host name (leading, trailing or double dot)")
		}
		if len(label) > 63 {
			return errors.New("host name label longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("host name label starts or ends with a hyphen")
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("character %q is not allowed in a host name", c)
			}
		}
	}
	return nil
}

// parseRegistryURL accepts an http or https URL with a host and at most a path, and returns
// it without a trailing slash (containerd would turn "http://h/" into "http://h//v2").
func parseRegistryURL(s string) (string, error) {
	const want = "want an http:// or https:// URL with a host"
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New(want)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New(want)
	case u.Host == "" || u.Opaque != "":
		return "", errors.New(want)
	case u.User != nil:
		return "", errors.New("user information in the URL is not supported; " + want)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "", errors.New("a query or fragment is not allowed; " + want)
	}
	if err := checkRegistryHost(u.Host); err != nil {
		return "", fmt.Errorf("host %q: %w", u.Host, err)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// hostTable is one [host."URL"] table of a hosts.toml.
type hostTable struct {
	Capabilities []string `toml:"capabilities"`
	DialTimeout  string   `toml:"dial_timeout"`
}

// renderHostsTOML returns the hosts.toml that sends containerd to the mirrors first, with
// pull and resolve (tags resolve through the node too), then to server. Without a server
// containerd falls back to the registry named in the image reference.
//
// containerd tries the [host] tables in the order the file lists them, and go-toml writes a
// map's keys sorted but a struct's fields in order: the tables are the fields of a struct
// type made for these mirrors, each field named by its tag.
func renderHostsTOML(server string, mirrors []string, dialTimeout time.Duration) ([]byte, error) {
	fields := make([]reflect.StructField, len(mirrors))
	for i, m := range mirrors {
		if strings.Contains(m, ",") {
			// A struct tag ends its name at a comma.
			return nil, fmt.Errorf("mirror %q: a comma in a mirror URL is not supported", m)
		}
		fields[i] = reflect.StructField{
			Name: "Mirror" + strconv.Itoa(i),
			Type: reflect.TypeFor[hostTable](),
			Tag:  reflect.StructTag("toml:" + strconv.Quote(m)),
		}
	}
	hosts := reflect.New(reflect.StructOf(fields)).Elem()
	for i := range mirrors {
		hosts.Field(i).Set(reflect.ValueOf(hostTable{Capabilities: []string{"pull", "resolve"}, DialTimeout: dialTimeout.String()}))
	}
	doc := struct {
		Server string `toml:"server,omitempty"`
		Host   any    `toml:"host"`
	}{server, hosts.Interface()}

	var b bytes.Buffer
	b.WriteString(hostsMarker + "\n")
	if server == "" {
		b.WriteString("# No server: containerd falls back to the registry the image reference names.\n\n")
	}
	if err := toml.NewEncoder(&b).SetIndentTables(true).Encode(doc); err != nil {
		return nil, fmt.Errorf("encode hosts.toml: %w", err)
	}
	return b.Bytes(), nil
}

// hostDirCandidates are the directories containerd looks in for host, in its order
// (core/remotes/docker/config: hostPaths on Unix): "host_port_" before "host:port".
// containerd takes the first that exists, whether or not it holds a hosts.toml.
func hostDirCandidates(root, host string) []string {
	var dirs []string
	if i := strings.LastIndex(host, ":"); i > 0 {
		dirs = append(dirs, filepath.Join(root, host[:i]+"_"+host[i+1:]+"_"))
	}
	return append(dirs, filepath.Join(root, host))
}

// hostDir is the directory containerd reads for host: an existing "host_port_" directory,
// else "host:port" (or plain "host").
func hostDir(root, host string) (string, error) {
	dirs := hostDirCandidates(root, host)
	for _, d := range dirs[:len(dirs)-1] {
		st, err := os.Stat(d)
		if err == nil && st.IsDir() {
			return d, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return dirs[len(dirs)-1], nil
}

// installHostsFile writes body to the hosts.toml containerd reads for host. A file shoal did
// not write is first kept as the backup (replacing an older backup, since it is what is
// there now); shoal's own file is never backed up, so running twice loses nothing.
func installHostsFile(root, host string, body []byte, stdout io.Writer) error {
	dir, err := hostDir(root, host)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, hostsFileName)
	old, err := os.ReadFile(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if exists && bytes.Equal(old, body) {
		fmt.Fprintf(stdout, "%s is up to date\n", path)
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	note := ""
	if exists && !writtenByShoal(old) {
		if err := backUp(path, path+hostsBackupExt, old); err != nil {
			return err
		}
		note = fmt.Sprintf(" (kept the previous one as %s)", hostsFileName+hostsBackupExt)
	}
	if err := writeFileAtomic(path, body, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s%s\n", path, note)
	return nil
}

// removeHostsFile undoes installHostsFile for host in every directory containerd may read
// for it: the backup goes back in place, or shoal's file is deleted along with its directory
// when that is then empty (an empty directory would hide _default from containerd). A
// hosts.toml shoal did not write stays.
func removeHostsFile(root, host string, stdout, stderr io.Writer) error {
	did := false
	for _, dir := range hostDirCandidates(root, host) {
		path := filepath.Join(dir, hostsFileName)
		backup := path + hostsBackupExt
		cur, err := os.ReadFile(path)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read %s: %w", path, err)
		}
		_, err = os.Lstat(backup)
		hasBackup := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		switch {
		case exists && !writtenByShoal(cur):
			fmt.Fprintf(stderr, "left %s alone: shoal containerd-config did not write it\n", path)
			did = true
		case hasBackup:
			if err := os.Rename(backup, path); err != nil {
				return err
			}
			if err := syncDir(dir); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "restored %s from %s\n", path, hostsFileName+hostsBackupExt)
			did = true
		case exists:
			if err := os.Remove(path); err != nil {
				return err
			}
			// Only an empty directory goes: certificates or other files keep it.
			if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
				if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			fmt.Fprintf(stdout, "removed %s\n", path)
			did = true
		}
	}
	if !did {
		fmt.Fprintf(stdout, "nothing to remove for %s\n", host)
	}
	return nil
}

// writtenByShoal reports whether a hosts.toml starts with shoal's marker line.
func writtenByShoal(body []byte) bool {
	return bytes.HasPrefix(body, []byte(hostsMarkerPrefix))
}

// backUp makes backup an exact copy of path, whose content is data: a hard link when the
// file system allows it (same inode, so mode, owner and a symlink stay as they were), else
// data written with the same mode. backup appears complete or not at all.
func backUp(path, backup string, data []byte) error {
	tmp := backup + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Link(path, tmp); err == nil {
		if err := os.Rename(tmp, backup); err != nil {
			os.Remove(tmp)
			return err
		}
		return syncDir(filepath.Dir(backup))
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return writeFileAtomic(backup, data, st.Mode().Perm())
}

// writeFileAtomic replaces path with data through a temporary file in the same directory
// and a rename, so containerd never reads half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
