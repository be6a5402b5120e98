package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// runContainerdConfigIn runs `shoal containerd-config --hosts-dir dir ARGS`.
func runContainerdConfigIn(t *testing.T, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"containerd-config", "--hosts-dir", dir}, args...)
	err = run(context.Background(), full, &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustContainerdConfig is runContainerdConfigIn for runs that must succeed.
func mustContainerdConfig(t *testing.T, dir string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := runContainerdConfigIn(t, dir, args...)
	if err != nil {
		t.Fatalf("containerd-config %q = %v, want success", args, err)
	}
	return stdout, stderr
}

// readTree returns every regular file under dir by slash-separated relative path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func writeFile(t *testing.T, path, body string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
}

func hostsTOML(server string, mirrors ...string) string {
	s := hostsMarker + "\n"
	if server != "" {
		s += "server = '" + server + "'\n"
	} else {
		s += "# No server: containerd falls back to the registry the image reference names.\n"
	}
	if len(mirrors) > 0 {
		s += "\n[host]\n"
	}
	for i, m := range mirrors {
		if i > 0 {
			s += "\n"
		}
		s += "  [host.'" + m + "']\n    capabilities = ['pull', 'resolve']\n    dial_timeout = '200ms'\n"
	}
	return s
}

// hostsFile is what containerd reads of a hosts.toml (core/remotes/docker/config), with the
// [host] tables in the order it tries them.
type hostsFile struct {
	Server string               `toml:"server"`
	Host   map[string]hostTable `toml:"host"`
	Order  []string             `toml:"-"`
}

// decodeHostsTOML reads a hosts.toml as containerd does: go-toml for the values, its
// unstable parser for the order of the [host."URL"] tables.
func decodeHostsTOML(t *testing.T, b []byte) hostsFile {
	t.Helper()
	var f hostsFile
	if err := toml.Unmarshal(b, &f); err != nil {
		t.Fatalf("hosts.toml does not parse: %v\n%s", err, b)
	}
	p := unstable.Parser{}
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) == 2 && parts[0] == "host" {
			f.Order = append(f.Order, parts[1])
		}
	}
	if err := p.Error(); err != nil {
		t.Fatalf("hosts.toml does not parse: %v\n%s", err, b)
	}
	return f
}

// TestHostsTOMLReads checks what containerd reads of the file: the server, and every mirror
// in the order given (not sorted), each with pull and resolve and the dial timeout, even
// where a URL needs quoting.
func TestHostsTOMLReads(t *testing.T) {
	t.Parallel()
	mirrors := []string{"http://127.0.0.1:5080", "http://10.0.0.7:5080/a'b", `https://n.example/"q"`}
	for _, server := range []string{"https://registry-1.docker.io", "", `https://r.example/it's`} {
		b, err := renderHostsTOML(server, mirrors, 1500*time.Millisecond)
		if err != nil {
			t.Fatalf("renderHostsTOML(%q) = %v", server, err)
		}
		if !strings.HasPrefix(string(b), hostsMarker+"\n") {
			t.Errorf("hosts.toml does not start with the marker line:\n%s", b)
		}
		f := decodeHostsTOML(t, b)
		if f.Server != server || !slices.Equal(f.Order, mirrors) || len(f.Host) != len(mirrors) {
			t.Errorf("hosts.toml reads as server %q, hosts %q; want %q, %q:\n%s", f.Server, f.Order, server, mirrors, b)
		}
		for _, m := range mirrors {
			if h := f.Host[m]; !slices.Equal(h.Capabilities, []string{"pull", "resolve"}) || h.DialTimeout != "1.5s" {
				t.Errorf("host %q = %+v, want pull and resolve, dial_timeout 1.5s", m, h)
			}
		}
	}
	if _, err := renderHostsTOML("", []string{"http://a:1/x,y"}, time.Second); err == nil {
		t.Error("renderHostsTOML with a comma in a mirror URL succeeded, want an error")
	}
}

func TestContainerdConfigFiles(t *testing.T) {
	t.Parallel()
	const node = "http://127.0.0.1:5080"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		args  []string
		want  map[string]string // relative path -> content; every file in the dir
	}{
		{
			name: "docker.io",
			args: []string{"--mirror", node, "--registry", "docker.io"},
			want: map[string]string{"docker.io/hosts.toml": hostsTOML("https://registry-1.docker.io", node)},
		},
		{
			name: "host and port",
			args: []string{"--mirror", node, "--registry", "registry.example.com:5000"},
			want: map[string]string{"registry.example.com:5000/hosts.toml": hostsTOML("https://registry.example.com:5000", node)},
		},
		{
			name: "explicit upstream",
			args: []string{"--mirror", node, "--registry", "localhost:5000=http://localhost:5000"},
			want: map[string]string{"localhost:5000/hosts.toml": hostsTOML("http://localhost:5000", node)},
		},
		{
			name: "docker.io with explicit upstream",
			args: []string{"--mirror", node, "--registry", "docker.io=https://mirror.gcr.io"},
			want: map[string]string{"docker.io/hosts.toml": hostsTOML("https://mirror.gcr.io", node)},
		},
		{
			name: "several mirrors in order, several registries",
			args: []string{"--mirror", node, "--mirror", "https://10.0.0.7:5080", "--registry", "ghcr.io", "--registry", "quay.io"},
			want: map[string]string{
				"ghcr.io/hosts.toml": hostsTOML("https://ghcr.io", node, "https://10.0.0.7:5080"),
				"quay.io/hosts.toml": hostsTOML("https://quay.io", node, "https://10.0.0.7:5080"),
			},
		},
		{
			name: "default only",
			args: []string{"--mirror", node, "--default"},
			want: map[string]string{"_default/hosts.toml": hostsTOML("", node)},
		},
		{
			name: "default and a registry",
			args: []string{"--mirror", node, "--registry", "docker.io", "--default"},
			want: map[string]string{
				"docker.io/hosts.toml": hostsTOML("https://registry-1.docker.io", node),
				"_default/hosts.toml":  hostsTOML("", node),
			},
		},
		{
			name: "IPv6 registry and mirror",
			args: []string{"--mirror", "http://[::1]:5080", "--registry", "[fd00::5]:5000=http://[fd00::5]:5000"},
			want: map[string]string{"[fd00::5]:5000/hosts.toml": hostsTOML("http://[fd00::5]:5000", "http://[::1]:5080")},
		},
		{
			name: "trailing slash dropped",
			args: []string{"--mirror", node + "/", "--registry", "r.example=https://r.example/base/"},
			want: map[string]string{"r.example/hosts.toml": hostsTOML("https://r.example/base", node)},
		},
		{
			name: "dial timeout",
			args: []string{"--mirror", node, "--registry", "docker.io", "--dial-timeout", "1.5s"},
			want: map[string]string{"docker.io/hosts.toml": strings.ReplaceAll(hostsTOML("https://registry-1.docker.io", node), "200ms", "1.5s")},
		},
		{
			// containerd looks in host_port_ before host:port: an existing one is used.
			name: "existing host_port_ directory",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "localhost_5000_", "ca.crt"), "cert", 0o644)
			},
			args: []string{"--mirror", node, "--registry", "localhost:5000"},
			want: map[string]string{
				"localhost_5000_/ca.crt":     "cert",
				"localhost_5000_/hosts.toml": hostsTOML("https://localhost:5000", node),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "certs.d") // created on demand
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			stdout, _ := mustContainerdConfig(t, dir, tt.args...)
			got := readTree(t, dir)
			for path, want := range tt.want {
				if got[path] != want {
					t.Errorf("containerd-config %q wrote %s:\n%s\nwant:\n%s", tt.args, path, got[path], want)
				}
				if strings.HasSuffix(path, "hosts.toml") && !strings.Contains(stdout, "wrote "+filepath.Join(dir, filepath.FromSlash(path))) {
					t.Errorf("containerd-config %q printed %q, want it to name %s", tt.args, stdout, path)
				}
			}
			for path := range got {
				if _, ok := tt.want[path]; !ok {
					t.Errorf("containerd-config %q wrote %s, want no such file", tt.args, path)
				}
			}
			for path := range tt.want {
				st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(path)))
				if err == nil && strings.HasSuffix(path, "hosts.toml") && st.Mode().Perm() != 0o644 {
					t.Errorf("%s has mode %v, want 0644 so containerd can read it", path, st.Mode().Perm())
				}
			}

			// The same command again changes nothing, and --remove leaves only what was there.
			before := readTree(t, dir)
			stdout, _ = mustContainerdConfig(t, dir, tt.args...)
			if after := readTree(t, dir); !maps.Equal(before, after) {
				t.Errorf("second run changed the files: %v, want %v", after, before)
			}
			if !strings.Contains(stdout, "up to date") {
				t.Errorf("second run printed %q, want \"up to date\"", stdout)
			}
			mustContainerdConfig(t, dir, append(tt.args, "--remove")...)
			left := readTree(t, dir)
			for path := range left {
				if strings.HasSuffix(path, "hosts.toml") {
					t.Errorf("after --remove %s is still there", path)
				}
			}
		})
	}
}

// TestContainerdConfigBackup replaces an operator's hosts.toml, runs twice, and removes:
// the operator's file comes back byte for byte, with its mode, and no backup is left.
func TestContainerdConfigBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	backup := path + ".shoal-backup"
	const theirs = "server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n"
	writeFile(t, path, theirs, 0o600)
	args := []string{"--mirror", "http://127.0.0.1:5080", "--registry", "docker.io"}

	stdout, _ := mustContainerdConfig(t, dir, args...)
	if !strings.Contains(stdout, "hosts.toml.shoal-backup") {
		t.Errorf("first run printed %q, want it to mention the backup", stdout)
	}
	for run := 1; run <= 2; run++ {
		if got := readFile(t, backup); got != theirs {
			t.Fatalf("run %d: backup holds %q, want the operator's file %q", run, got, theirs)
		}
		if got := readFile(t, path); !strings.HasPrefix(got, hostsMarker+"\n") {
			t.Fatalf("run %d: hosts.toml is %q, want shoal's", run, got)
		}
		if run == 1 {
			// Running again, with another mirror, must not back up shoal's own file.
			mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5090", "--registry", "docker.io")
		}
	}
	if got := readFile(t, path); !strings.Contains(got, "5090") {
		t.Errorf("second run did not rewrite hosts.toml with the new mirror: %q", got)
	}

	stdout, _ = mustContainerdConfig(t, dir, append(args, "--remove")...)
	if !strings.Contains(stdout, "restored") {
		t.Errorf("--remove printed %q, want \"restored\"", stdout)
	}
	if got := readFile(t, path); got != theirs {
		t.Errorf("after --remove hosts.toml is %q, want the operator's %q", got, theirs)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("after --remove hosts.toml: %v, mode %v; want mode 0600 as the operator left it", err, st.Mode().Perm())
	}
	if _, err := os.Lstat(backup); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after --remove the backup is still there (%v)", err)
	}
	if files := readTree(t, dir); len(files) != 1 {
		t.Errorf("after --remove the hosts dir holds %v, want only the operator's hosts.toml", slices.Sorted(maps.Keys(files)))
	}

	// A second --remove finds the operator's file and leaves it.
	_, stderr := mustContainerdConfig(t, dir, append(args, "--remove")...)
	if got := readFile(t, path); got != theirs {
		t.Errorf("second --remove changed hosts.toml to %q", got)
	}
	if !strings.Contains(stderr, "left "+path+" alone") {
		t.Errorf("second --remove printed %q on stderr, want a note that it left the file alone", stderr)
	}
}

// TestContainerdConfigReplacedAfterwards: an operator replaces shoal's file after the first
// run; the next run backs up their new file, and --remove brings that one back.
func TestContainerdConfigReplacedAfterwards(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ghcr.io", "hosts.toml")
	args := []string{"--mirror", "http://127.0.0.1:5080", "--registry", "ghcr.io"}
	mustContainerdConfig(t, dir, args...)
	if _, err := os.Lstat(path + ".shoal-backup"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("first run on an empty dir made a backup (%v)", err)
	}
	const theirs = "server = \"https://ghcr.io\"\n"
	writeFile(t, path, theirs, 0o644)
	mustContainerdConfig(t, dir, args...)
	if got := readFile(t, path+".shoal-backup"); got != theirs {
		t.Fatalf("backup holds %q, want the operator's newer file", got)
	}
	mustContainerdConfig(t, dir, append(args, "--remove")...)
	if got := readFile(t, path); got != theirs {
		t.Errorf("after --remove hosts.toml is %q, want %q", got, theirs)
	}
}

// TestContainerdConfigRemove covers --remove of foreign files and of directories.
func TestContainerdConfigRemove(t *testing.T) {
	t.Parallel()
	const theirs = "server = \"https://quay.io\"\n"
	tests := []struct {
		name      string
		setup     func(t *testing.T, dir string)
		args      []string
		want      map[string]string // every file left, by relative path
		wantDirs  []string          // directories that must remain
		goneDirs  []string          // directories that must be gone
		wantOut   string
		wantNotes string // on stderr
	}{
		{
			name: "foreign file, never replaced",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "quay.io", "hosts.toml"), theirs, 0o644)
			},
			args:      []string{"--registry", "quay.io", "--remove"},
			want:      map[string]string{"quay.io/hosts.toml": theirs},
			wantNotes: "did not write it",
		},
		{
			name:    "nothing there",
			args:    []string{"--registry", "quay.io", "--default", "--remove"},
			want:    map[string]string{},
			wantOut: "nothing to remove for quay.io",
		},
		{
			name: "created directory goes",
			setup: func(t *testing.T, dir string) {
				mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5080", "--registry", "localhost:5000", "--default")
			},
			args:     []string{"--registry", "localhost:5000", "--default", "--remove"},
			want:     map[string]string{},
			goneDirs: []string{"localhost:5000", "_default"},
			wantOut:  "removed",
		},
		{
			name: "directory with certificates stays",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "quay.io", "ca.crt"), "cert", 0o644)
				mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5080", "--registry", "quay.io")
			},
			args:     []string{"--registry", "quay.io", "--remove"},
			want:     map[string]string{"quay.io/ca.crt": "cert"},
			wantDirs: []string{"quay.io"},
		},
		{
			name: "mirror flags are accepted and ignored",
			setup: func(t *testing.T, dir string) {
				mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5080", "--registry", "quay.io")
			},
			args: []string{"--mirror", "http://127.0.0.1:5080", "--registry", "quay.io", "--remove"},
			want: map[string]string{},
		},
		{
			name: "only the listed registries",
			setup: func(t *testing.T, dir string) {
				mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5080", "--registry", "quay.io", "--registry", "ghcr.io")
			},
			args: []string{"--registry", "ghcr.io", "--remove"},
			want: map[string]string{"quay.io/hosts.toml": hostsTOML("https://quay.io", "http://127.0.0.1:5080")},
		},
		{
			// shoal's file was deleted by hand; the backup of what was there before returns.
			name: "backup without shoal's file",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "quay.io", "hosts.toml"), theirs, 0o644)
				mustContainerdConfig(t, dir, "--mirror", "http://127.0.0.1:5080", "--registry", "quay.io")
				if err := os.Remove(filepath.Join(dir, "quay.io", "hosts.toml")); err != nil {
					t.Fatal(err)
				}
			},
			args:    []string{"--registry", "quay.io", "--remove"},
			want:    map[string]string{"quay.io/hosts.toml": theirs},
			wantOut: "restored",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			stdout, stderr := mustContainerdConfig(t, dir, tt.args...)
			if got := readTree(t, dir); !maps.Equal(got, tt.want) {
				t.Errorf("after containerd-config %q the dir holds %v, want %v", tt.args, got, tt.want)
			}
			for _, d := range tt.wantDirs {
				if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
					t.Errorf("directory %s is gone (%v), want it kept", d, err)
				}
			}
			for _, d := range tt.goneDirs {
				if _, err := os.Stat(filepath.Join(dir, d)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("directory %s is still there (%v); an empty one would hide _default from containerd", d, err)
				}
			}
			if !strings.Contains(stdout, tt.wantOut) {
				t.Errorf("stdout %q, want it to contain %q", stdout, tt.wantOut)
			}
			if !strings.Contains(stderr, tt.wantNotes) {
				t.Errorf("stderr %q, want it to contain %q", stderr, tt.wantNotes)
			}
		})
	}
}

// TestContainerdConfigSymlinkBackup: a hosts.toml that is a symlink is kept as that symlink.
func TestContainerdConfigSymlinkBackup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	shared := filepath.Join(t.TempDir(), "shared-hosts.toml")
	writeFile(t, shared, "server = \"https://ghcr.io\"\n", 0o644)
	path := filepath.Join(dir, "ghcr.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shared, path); err != nil {
		t.Fatal(err)
	}
	args := []string{"--mirror", "http://127.0.0.1:5080", "--registry", "ghcr.io"}
	mustContainerdConfig(t, dir, args...)
	if got := readFile(t, shared); got != "server = \"https://ghcr.io\"\n" {
		t.Fatalf("the symlink's target was changed to %q", got)
	}
	mustContainerdConfig(t, dir, append(args, "--remove")...)
	if target, err := os.Readlink(path); err != nil || target != shared {
		t.Errorf("after --remove hosts.toml is not the symlink to %s: %q, %v", shared, target, err)
	}
}

func TestContainerdConfigBadInput(t *testing.T) {
	t.Parallel()
	const node = "http://127.0.0.1:5080"
	tests := []struct {
		name    string
		args    []string // after --hosts-dir DIR, unless noDir
		noDir   bool
		wantErr string
	}{
		{name: "no hosts dir", noDir: true, args: []string{"containerd-config", "--mirror", node, "--registry", "docker.io"}, wantErr: "--hosts-dir is required"},
		{name: "empty hosts dir", noDir: true, args: []string{"containerd-config", "--hosts-dir", "", "--mirror", node, "--registry", "docker.io"}, wantErr: "--hosts-dir is required"},
		{name: "no mirror", args: []string{"--registry", "docker.io"}, wantErr: "--mirror is required"},
		{name: "no registry", args: []string{"--mirror", node}, wantErr: "no registry"},
		{name: "empty registry", args: []string{"--mirror", node, "--registry", ""}, wantErr: "empty value"},
		{name: "dot dot", args: []string{"--mirror", node, "--registry", ".."}, wantErr: `--registry ".."`},
		{name: "dot", args: []string{"--mirror", node, "--registry", "."}, wantErr: `--registry "."`},
		{name: "parent path", args: []string{"--mirror", node, "--registry", "../etc"}, wantErr: `--registry "../etc"`},
		{name: "slash", args: []string{"--mirror", node, "--registry", "a/b"}, wantErr: `--registry "a/b"`},
		{name: "absolute path", args: []string{"--mirror", node, "--registry", "/etc"}, wantErr: `--registry "/etc"`},
		{name: "backslash", args: []string{"--mirror", node, "--registry", `a\b`}, wantErr: "not allowed"},
		{name: "repository path", args: []string{"--mirror", node, "--registry", "docker.io/library"}, wantErr: "not allowed"},
		{name: "space", args: []string{"--mirror", node, "--registry", "docker .io"}, wantErr: "not allowed"},
		{name: "only space", args: []string{"--mirror", node, "--registry", " "}, wantErr: `--registry " "`},
		{name: "newline", args: []string{"--mirror", node, "--registry", "a\nb"}, wantErr: `--registry "a\nb"`},
		{name: "nul", args: []string{"--mirror", node, "--registry", "a\x00b"}, wantErr: "not allowed"},
		{name: "double dot inside", args: []string{"--mirror", node, "--registry", "a..b"}, wantErr: "empty label"},
		{name: "leading dot", args: []string{"--mirror", node, "--registry", ".docker.io"}, wantErr: "empty label"},
		{name: "hyphen", args: []string{"--mirror", node, "--registry", "-x.io"}, wantErr: "hyphen"},
		{name: "underscore default", args: []string{"--mirror", node, "--registry", "_default"}, wantErr: "not allowed"},
		{name: "long label", args: []string{"--mirror", node, "--registry", strings.Repeat("a", 64) + ".io"}, wantErr: "63"},
		{name: "bad port", args: []string{"--mirror", node, "--registry", "host:http"}, wantErr: "port"},
		{name: "port zero", args: []string{"--mirror", node, "--registry", "host:0"}, wantErr: "port"},
		{name: "port too big", args: []string{"--mirror", node, "--registry", "host:65536"}, wantErr: "port"},
		{name: "empty port", args: []string{"--mirror", node, "--registry", "host:"}, wantErr: "port"},
		{name: "two colons", args: []string{"--mirror", node, "--registry", "host:1:2"}, wantErr: "colon"},
		{name: "bare IPv6", args: []string{"--mirror", node, "--registry", "::1"}, wantErr: "brackets"},
		{name: "unclosed IPv6", args: []string{"--mirror", node, "--registry", "[::1"}, wantErr: "IPv6"},
		{name: "IPv4 in brackets", args: []string{"--mirror", node, "--registry", "[127.0.0.1]"}, wantErr: "IPv6"},
		{name: "IPv6 zone", args: []string{"--mirror", node, "--registry", "[fe80::1%25eth0]:5000"}, wantErr: "IPv6"},
		{name: "IPv6 path", args: []string{"--mirror", node, "--registry", "[::1]/x"}, wantErr: "after the IPv6"},
		{name: "empty host with URL", args: []string{"--mirror", node, "--registry", "=http://x"}, wantErr: "empty registry host"},
		{name: "empty upstream", args: []string{"--mirror", node, "--registry", "x.io="}, wantErr: "upstream"},
		{name: "upstream not http", args: []string{"--mirror", node, "--registry", "x.io=ftp://x.io"}, wantErr: "upstream"},
		{name: "upstream without host", args: []string{"--mirror", node, "--registry", "x.io=http://"}, wantErr: "upstream"},
		{name: "upstream without scheme", args: []string{"--mirror", node, "--registry", "x.io=x.io:5000"}, wantErr: "upstream"},
		{name: "upstream bad host", args: []string{"--mirror", node, "--registry", "x.io=http://a..b"}, wantErr: "upstream"},
		{name: "upstream with query", args: []string{"--mirror", node, "--registry", "x.io=http://x.io?a=b"}, wantErr: "query"},
		{name: "upstream with quote", args: []string{"--mirror", node, "--registry", `x.io=http://x"io`}, wantErr: "upstream"},
		{name: "duplicate registry", args: []string{"--mirror", node, "--registry", "quay.io", "--registry", "quay.io=https://quay.io"}, wantErr: "given twice"},
		{name: "mirror not http", args: []string{"--mirror", "unix:///run/shoal.sock", "--registry", "docker.io"}, wantErr: `--mirror "unix:///run/shoal.sock"`},
		{name: "mirror without scheme", args: []string{"--mirror", "127.0.0.1:5080", "--registry", "docker.io"}, wantErr: "--mirror"},
		{name: "mirror without host", args: []string{"--mirror", "http:///v2", "--registry", "docker.io"}, wantErr: "--mirror"},
		{name: "mirror with user", args: []string{"--mirror", "http://u:p@127.0.0.1:5080", "--registry", "docker.io"}, wantErr: "user information"},
		{name: "mirror with fragment", args: []string{"--mirror", "http://127.0.0.1:5080#x", "--registry", "docker.io"}, wantErr: "fragment"},
		{name: "mirror with newline", args: []string{"--mirror", "http://127.0.0.1:5080\n[host.x]", "--registry", "docker.io"}, wantErr: "--mirror"},
		{name: "duplicate mirror", args: []string{"--mirror", node, "--mirror", node + "/", "--registry", "docker.io"}, wantErr: "given twice"},
		{name: "empty mirror", args: []string{"--mirror", "", "--registry", "docker.io"}, wantErr: "empty value"},
		{name: "zero dial timeout", args: []string{"--mirror", node, "--registry", "docker.io", "--dial-timeout", "0s"}, wantErr: "--dial-timeout"},
		{name: "negative dial timeout", args: []string{"--mirror", node, "--registry", "docker.io", "--dial-timeout", "-1s"}, wantErr: "--dial-timeout"},
		{name: "dial timeout not a duration", args: []string{"--mirror", node, "--registry", "docker.io", "--dial-timeout", "soon"}, wantErr: "invalid value"},
		{name: "stray argument", args: []string{"--mirror", node, "--registry", "docker.io", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"--mirror", node, "--registry", "docker.io", "--config", "x.yaml"}, wantErr: "not defined"},
		{name: "bad entry after good ones", args: []string{"--mirror", node, "--registry", "docker.io", "--registry", "ghcr.io", "--registry", "../x"}, wantErr: `--registry "../x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := filepath.Join(root, "certs.d")
			args := tt.args
			if !tt.noDir {
				args = append([]string{"containerd-config", "--hosts-dir", dir}, tt.args...)
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q) = %v, want error containing %q", args, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("run(%q) error spans lines: %q", args, err)
			}
			if out.Len() > 0 || errOut.Len() > 0 {
				t.Errorf("run(%q) printed %q %q, want nothing besides the error", args, out.String(), errOut.String())
			}
			entries, _ := os.ReadDir(root)
			if len(entries) > 0 {
				t.Errorf("run(%q) created %v, want nothing written on bad input", args, entries)
			}
		})
	}
}

func TestContainerdConfigHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(context.Background(), []string{"containerd-config", "--help"}, &out, &bytes.Buffer{})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("containerd-config --help = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage: shoal containerd-config", "--hosts-dir", "--mirror", "--registry", "--default", "--dial-timeout", "(default 200ms)", "--remove"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("containerd-config --help printed %q, want it to contain %q", out.String(), want)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"help"}, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "shoal containerd-config") {
		t.Errorf("shoal help = %v, printed %q; want it to list containerd-config", err, out.String())
	}
}

// FuzzRegistryArg checks that whatever --registry accepts names a directory directly inside
// the hosts dir and a server that cannot break out of its TOML string.
func FuzzRegistryArg(f *testing.F) {
	for _, s := range []string{"docker.io", "localhost:5000=http://localhost:5000", "[::1]:5000", "..", "a/b", "a=http://b/c\"d", "x.io=https://x.io/p%2F..", "[fe80::1]:1=http://[fe80::1]:1/"} {
		f.Add(s)
	}
	root := filepath.Join("/", "certs.d")
	f.Fuzz(func(t *testing.T, arg string) {
		tgt, err := parseRegistryArg(arg)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("parseRegistryArg(%q) error spans lines: %q", arg, err)
			}
			return
		}
		for _, dir := range hostDirCandidates(root, tgt.name) {
			if filepath.Dir(dir) != root || strings.ContainsAny(tgt.name, `/\`) || tgt.name == "." || tgt.name == ".." {
				t.Errorf("parseRegistryArg(%q) accepted host %q, which names %s outside %s", arg, tgt.name, dir, root)
			}
		}
		raw, err := renderHostsTOML(tgt.server, []string{"http://127.0.0.1:5080"}, 200e6)
		if err != nil {
			t.Fatalf("renderHostsTOML(%q) = %v", tgt.server, err)
		}
		body := string(raw)
		if strings.Count(body, "\n") != 7 || !strings.HasPrefix(strings.Split(body, "\n")[1], "server = ") {
			t.Errorf("parseRegistryArg(%q): hosts.toml has unexpected lines:\n%s", arg, body)
		}
		if got := decodeHostsTOML(t, raw); got.Server != tgt.server || len(got.Host) != 1 {
			t.Errorf("parseRegistryArg(%q): hosts.toml reads as %+v, want server %q and one host:\n%s", arg, got, tgt.server, body)
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
