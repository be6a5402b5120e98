package e2e

// The packaging tests check the Dockerfile and the compose demo fleet (and, in
// dashboard_test.go, the Grafana dashboard) against the real things they depend on: the
// Dockerfile and compose parsers that docker itself uses, the flags of the real shoal
// binary, and real nodes. They need no docker daemon, so they cannot build the image or start
// the fleet; what they check is everything that can go wrong short of that.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"go.yaml.in/yaml/v3"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// nodeFlag is a flag of a shoal command (`shoal node`, `shoal tracker`) as its --help
// prints it.
type nodeFlag struct {
	value      string // the value's placeholder; "" for a boolean flag
	def        string // the default when --help shows one
	repeatable bool
}

// nodeFlags runs the real `shoal node --help` and returns its flags by name.
func nodeFlags(t *testing.T) map[string]nodeFlag {
	t.Helper()
	return commandFlags(t, "node", "config", "registry-addr", "admin-addr", "data-dir", "p2p-listen", "bootstrap-dns", "origin", "upstream", "tracker")
}

// commandFlags runs the real `shoal <command> --help` and returns its flags by name,
// failing t unless the required ones are among them.
func commandFlags(t *testing.T, command string, required ...string) map[string]nodeFlag {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), harness.BuildShoal(t), command, "--help").Output()
	if err != nil {
		t.Fatalf("shoal %s --help: %v", command, err)
	}
	flags := make(map[string]nodeFlag)
	lines := strings.Split(string(out), "\n")
	for i, line := range lines {
		rest, ok := strings.CutPrefix(line, "  --")
		if !ok {
			continue
		}
		name, value, _ := strings.Cut(rest, " ")
		f := nodeFlag{value: value}
		if i+1 < len(lines) {
			help := strings.TrimSpace(lines[i+1])
			f.repeatable = strings.Contains(help, "(repeatable")
			if j := strings.LastIndex(help, " (default "); j >= 0 && strings.HasSuffix(help, ")") {
				f.def = help[j+len(" (default ") : len(help)-1]
			} else if j := strings.LastIndex(help, "; default "); j >= 0 && f.repeatable && strings.HasSuffix(help, ")") {
				f.def = help[j+len("; default ") : len(help)-1] // (repeatable; default X)
			}
		}
		flags[name] = f
	}
	for _, name := range required {
		if _, ok := flags[name]; !ok {
			t.Fatalf("shoal %s --help lists no --%s; output:\n%s", command, name, out)
		}
	}
	return flags
}

// defaultPort is the port of a listen-address flag's default, e.g. 5080 for --registry-addr.
func defaultPort(t *testing.T, flags map[string]nodeFlag, name string) int {
	t.Helper()
	_, port, err := splitListen(flags[name].def)
	if err != nil {
		t.Fatalf("default of --%s: %v", name, err)
	}
	return port
}

// splitListen splits a listen address, HOST:PORT or :PORT.
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return host, port, nil
}

// allInterfaces reports whether a listen host accepts connections from outside the
// container: published ports and other containers cannot reach a loopback listener.
func allInterfaces(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::" || host == "[::]"
}

// p2pPort returns the TCP or UDP port of a libp2p listen multiaddr such as
// /ip4/0.0.0.0/tcp/5082, and whether it listens on every interface.
func p2pPort(addr string) (int, string, bool, error) {
	parts := strings.Split(addr, "/")
	if len(parts) < 5 || parts[0] != "" || (parts[1] != "ip4" && parts[1] != "ip6") {
		return 0, "", false, fmt.Errorf("p2p listen address %q: want /ip4/HOST/tcp/PORT", addr)
	}
	port, err := strconv.Atoi(parts[4])
	if err != nil || port <= 0 || port > 65535 || (parts[3] != "tcp" && parts[3] != "udp") {
		return 0, "", false, fmt.Errorf("p2p listen address %q: want a fixed tcp or udp port", addr)
	}
	return port, parts[3], parts[2] == "0.0.0.0" || parts[2] == "::", nil
}

// parseNodeArgs reads `shoal node` arguments the way Go's flag package does and returns the
// values of each flag given; unknown flags and stray arguments are errors, as for the node.
func parseNodeArgs(args []string, flags map[string]nodeFlag) (map[string][]string, error) {
	return parseArgs("node", args, flags)
}

// parseArgs is parseNodeArgs for any shoal command.
func parseArgs(command string, args []string, flags map[string]nodeFlag) (map[string][]string, error) {
	set := make(map[string][]string)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return nil, fmt.Errorf("unexpected argument %q", args[i+1])
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return nil, fmt.Errorf("unexpected argument %q", a)
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		f, ok := flags[name]
		if !ok {
			return nil, fmt.Errorf("--%s is not a flag of shoal %s", name, command)
		}
		if !hasValue && f.value != "" {
			if i+1 == len(args) {
				return nil, fmt.Errorf("--%s needs a value", name)
			}
			i++
			value = args[i]
		}
		if !hasValue && f.value == "" {
			value = "true"
		}
		set[name] = append(set[name], value)
	}
	return set, nil
}

// readNodeConfig reads a --config file the way the node does: a YAML mapping of flag names
// (not config itself) to a value, or to a list for repeatable flags.
func readNodeConfig(path string, flags map[string]nodeFlag) (map[string][]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string][]string)
	for key, n := range doc {
		f, ok := flags[key]
		if !ok || key == "config" {
			return nil, fmt.Errorf("%s: %q is not a flag of shoal node", path, key)
		}
		switch n.Kind {
		case yaml.ScalarNode:
			out[key] = []string{n.Value}
		case yaml.SequenceNode:
			if !f.repeatable {
				return nil, fmt.Errorf("%s: --%s takes one value, not a list", path, key)
			}
			for _, item := range n.Content {
				out[key] = append(out[key], item.Value)
			}
		default:
			return nil, fmt.Errorf("%s: %q must be a value or a list", path, key)
		}
	}
	return out, nil
}

// settings are a node's effective flag values: the command line over its --config file.
type settings map[string][]string

func (s settings) get(name string, flags map[string]nodeFlag) string {
	if v := s[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return flags[name].def
}

// TestDockerfile parses the Dockerfile with BuildKit's own parser and checks that it builds
// the binary as the Makefile does, but static, and that the image runs it with ports, a
// volume and a user that fit the node's defaults, and the tracker's.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	flags := nodeFlags(t)

	src, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s", w.Short)
	}
	var lint []string
	stages, metaArgs, err := instructions.Parse(res.AST, linter.New(&linter.Config{
		Warn: func(rule, _, _, msg string, loc []parser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			lint = append(lint, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
		},
	}))
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	for _, w := range lint {
		t.Errorf("Dockerfile lint: %s", w)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a final one", len(stages))
	}
	args := argValues(metaArgs)
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return args[k] })
	}

	// The final stage: the binary from the build stage at /shoal, run as the entrypoint.
	final := stages[len(stages)-1]
	finalBase := expand(final.BaseName)
	var (
		entrypoint, cmd *instructions.ShellDependantCmdLine
		user            string
		volumes, ports  []string
		binaryFrom      string
		copies          []*instructions.CopyCommand
	)
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			entrypoint = &c.ShellDependantCmdLine
		case *instructions.CmdCommand:
			cmd = &c.ShellDependantCmdLine
		case *instructions.UserCommand:
			user = c.User
		case *instructions.VolumeCommand:
			volumes = append(volumes, c.Volumes...)
		case *instructions.ExposeCommand:
			ports = append(ports, c.Ports...)
		case *instructions.CopyCommand:
			copies = append(copies, c)
		case *instructions.RunCommand:
			t.Errorf("final stage runs %q: the final image has no shell; do it in the build stage", c.String())
		}
	}
	if entrypoint == nil || entrypoint.PrependShell || !slices.Equal(entrypoint.CmdLine, []string{"/shoal"}) {
		t.Errorf("final stage ENTRYPOINT = %+v, want exec form [\"/shoal\"]", entrypoint)
	}
	for _, c := range copies {
		if c.DestPath == "/shoal" && c.From != "" && len(c.SourcePaths) == 1 {
			binaryFrom = c.From
		}
	}
	var build *instructions.Stage
	for i := range stages[:len(stages)-1] {
		if stages[i].Name == binaryFrom {
			build = &stages[i]
		}
	}
	if build == nil {
		t.Fatalf("final stage copies no /shoal from a build stage (COPY --from=STAGE BINARY /shoal)")
	}

	// The final image: distroless static (nonroot), or scratch with CA certificates.
	switch {
	case strings.HasPrefix(finalBase, "gcr.io/distroless/static"):
		if !strings.Contains(finalBase, "nonroot") {
			t.Errorf("final stage FROM %s: want a :nonroot distroless image", finalBase)
		}
	case finalBase == "scratch":
		hasCerts := slices.ContainsFunc(copies, func(c *instructions.CopyCommand) bool {
			return strings.HasPrefix(c.DestPath, "/etc/ssl/certs")
		})
		if !hasCerts {
			t.Errorf("final stage FROM scratch copies no CA certificates to /etc/ssl/certs: HTTPS upstreams would fail")
		}
	default:
		t.Errorf("final stage FROM %s: want gcr.io/distroless/static...:nonroot or scratch", finalBase)
	}
	uid, _, _ := strings.Cut(user, ":")
	if user == "" || uid == "0" || uid == "root" {
		t.Errorf("final stage USER = %q, want a non-root user named explicitly", user)
	}

	// The build stage: golang of the go.mod's Go release, and the Makefile's go build but
	// static and reproducible.
	goVersion := goModVersion(t, filepath.Join(root, "go.mod"))
	image := expand(build.BaseName)
	repo, tag, _ := strings.Cut(image, ":")
	if repo != "golang" && repo != "docker.io/library/golang" {
		t.Errorf("build stage FROM %s: want the golang image", image)
	}
	if release := goRelease(goVersion); tag != release && !strings.HasPrefix(tag, release+".") && !strings.HasPrefix(tag, release+"-") {
		t.Errorf("build stage FROM %s: want Go %s, the go.mod's release (go %s)", image, release, goVersion)
	}
	stageArgs := maps.Clone(args)
	var dockerBuild *goBuild
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				stageArgs[kv.Key] = kv.ValueString()
			}
		case *instructions.RunCommand:
			if !strings.Contains(strings.Join(c.CmdLine, " "), "go build") {
				continue
			}
			words, err := shell.NewLex(res.EscapeToken).ProcessWords(strings.Join(c.CmdLine, " "), envGetter(stageArgs))
			if err != nil {
				t.Fatalf("build stage RUN %q: %v", c.String(), err)
			}
			if dockerBuild, err = parseGoBuild(words); err != nil {
				t.Fatalf("build stage RUN %q: %v", c.String(), err)
			}
		}
	}
	if dockerBuild == nil {
		t.Fatalf("build stage %q runs no go build", build.Name)
	}
	makeBuild := makefileBuild(t, filepath.Join(root, "Makefile"))
	if !slices.Equal(dockerBuild.packages, makeBuild.packages) {
		t.Errorf("Dockerfile builds %v, the Makefile %v", dockerBuild.packages, makeBuild.packages)
	}
	for name := range makeBuild.x {
		if _, ok := dockerBuild.x[name]; !ok {
			t.Errorf("Dockerfile's go build sets no -X %s=..., the Makefile's does (-ldflags %q)", name, dockerBuild.flags["-ldflags"])
		}
	}
	if dockerBuild.env["CGO_ENABLED"] != "0" {
		t.Errorf("Dockerfile's go build runs with CGO_ENABLED=%q, want 0 (a static binary)", dockerBuild.env["CGO_ENABLED"])
	}
	if _, ok := dockerBuild.flags["-trimpath"]; !ok {
		t.Errorf("Dockerfile's go build has no -trimpath")
	}
	out := dockerBuild.flags["-o"]
	if !slices.ContainsFunc(copies, func(c *instructions.CopyCommand) bool {
		return c.From == build.Name && c.DestPath == "/shoal" && slices.Contains(c.SourcePaths, out)
	}) {
		t.Errorf("final stage does not copy the built binary %s to /shoal", out)
	}

	// The default command: `shoal node` listening where the exposed ports say, on every
	// interface, with the cache in the volume.
	if cmd == nil || cmd.PrependShell || len(cmd.CmdLine) == 0 || cmd.CmdLine[0] != "node" {
		t.Fatalf("final stage CMD = %+v, want exec form [\"node\", ...]", cmd)
	}
	set, err := parseNodeArgs(cmd.CmdLine[1:], flags)
	if err != nil {
		t.Fatalf("CMD %q: %v", cmd.CmdLine, err)
	}
	s := settings(set)
	wantPorts := map[string]bool{}
	for _, name := range []string{"registry-addr", "admin-addr"} {
		host, port, err := splitListen(s.get(name, flags))
		if err != nil {
			t.Errorf("CMD --%s: %v", name, err)
			continue
		}
		if !allInterfaces(host) {
			t.Errorf("CMD --%s=%s listens on %q only: a published port cannot reach it", name, s.get(name, flags), host)
		}
		if def := defaultPort(t, flags, name); port != def {
			t.Errorf("CMD --%s port %d, want the node's default %d", name, port, def)
		}
		wantPorts[strconv.Itoa(port)+"/tcp"] = true
	}
	if len(s["p2p-listen"]) == 0 {
		t.Errorf("CMD has no --p2p-listen: the container would stay out of any fleet")
	}
	for _, a := range s["p2p-listen"] {
		port, proto, all, err := p2pPort(a)
		if err != nil {
			t.Error(err)
			continue
		}
		if !all {
			t.Errorf("CMD --p2p-listen %s: want every interface", a)
		}
		wantPorts[strconv.Itoa(port)+"/"+proto] = true
	}
	// The tracker's defaults: the same image runs `shoal tracker`, with no flags needed.
	trackerFlags := commandFlags(t, "tracker", "listen", "p2p-listen", "data-dir")
	if host, port, err := splitListen(trackerFlags["listen"].def); err != nil {
		t.Errorf("shoal tracker --listen default: %v", err)
	} else if !allInterfaces(host) {
		t.Errorf("shoal tracker --listen default %s listens on %q only: a published port cannot reach it", trackerFlags["listen"].def, host)
	} else {
		wantPorts[strconv.Itoa(port)+"/tcp"] = true
	}
	if port, proto, all, err := p2pPort(trackerFlags["p2p-listen"].def); err != nil || !all {
		t.Errorf("shoal tracker --p2p-listen default %q: want a fixed port on every interface (%v)", trackerFlags["p2p-listen"].def, err)
	} else {
		wantPorts[strconv.Itoa(port)+"/"+proto] = true
	}
	gotPorts := map[string]bool{}
	for _, p := range ports {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		gotPorts[p] = true
	}
	if !mapsEqual(gotPorts, wantPorts) {
		t.Errorf("EXPOSE %v, want %v (the mirror, admin and p2p ports of the CMD, and the tracker's defaults)", ports, slices.Sorted(maps.Keys(wantPorts)))
	}
	dataDir := s.get("data-dir", flags)
	if !slices.Contains(volumes, dataDir) {
		t.Errorf("VOLUME %v does not hold the data dir %s", volumes, dataDir)
	}
	if !slices.ContainsFunc(copies, func(c *instructions.CopyCommand) bool {
		owner, _, _ := strings.Cut(c.Chown, ":")
		return c.DestPath == dataDir && owner == uid
	}) {
		t.Errorf("final stage does not create %s owned by USER %s (COPY --chown=%s ... %s): the node could not write its cache", dataDir, user, user, dataDir)
	}
	if trackerDir := trackerFlags["data-dir"].def; !slices.ContainsFunc(copies, func(c *instructions.CopyCommand) bool {
		owner, _, _ := strings.Cut(c.Chown, ":")
		return c.DestPath == trackerDir && owner == uid
	}) {
		t.Errorf("final stage does not create the tracker's default data dir %s owned by USER %s: the tracker could not write its identity", trackerDir, user)
	}

	// The real node starts with the CMD's flags, its listen addresses and data dir replaced
	// by local ones.
	var run []string
	for _, name := range slices.Sorted(maps.Keys(set)) {
		switch name {
		case "registry-addr", "admin-addr", "data-dir", "log-level", "log-format":
		case "p2p-listen":
			run = append(run, "--p2p-listen=/ip4/127.0.0.1/tcp/0")
		default:
			for _, v := range set[name] {
				run = append(run, "--"+name+"="+v)
			}
		}
	}
	harness.StartNode(t, harness.NodeOptions{Args: run})

	checkDockerignore(t, root)
}

// argValues maps each ARG to its default.
func argValues(args []instructions.ArgCommand) map[string]string {
	m := make(map[string]string)
	for _, a := range args {
		for _, kv := range a.Args {
			m[kv.Key] = kv.ValueString()
		}
	}
	return m
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// envGetter hands ARG values to BuildKit's word splitter; an ARG without a default (such
// as TARGETOS, set by BuildKit itself) expands to nothing.
type envGetter map[string]string

func (e envGetter) Get(k string) (string, bool) {
	v, ok := e[k]
	return v, ok
}

func (e envGetter) Keys() []string { return slices.Collect(maps.Keys(e)) }

// goModVersion returns the go directive of a go.mod.
func goModVersion(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\d+\.\d+(?:\.\d+)?)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s has no go directive", path)
	}
	return string(m[1])
}

// goRelease is the major.minor of a Go version: 1.26 for 1.26.8.
func goRelease(v string) string {
	parts := strings.SplitN(v, ".", 3)
	return parts[0] + "." + parts[1]
}

// goBuild is one `go build` command line.
type goBuild struct {
	env      map[string]string // VAR=value words before it
	flags    map[string]string // -flag to value ("" for a boolean flag)
	x        map[string]string // -X settings within -ldflags
	packages []string
}

// goBuildValueFlags are the go build flags that take a separate value.
var goBuildValueFlags = map[string]bool{
	"-o": true, "-ldflags": true, "-gcflags": true, "-asmflags": true, "-tags": true, "-mod": true,
	"-buildmode": true, "-p": true, "-pgo": true, "-modfile": true, "-overlay": true, "-C": true,
}

// envName matches the name of an environment variable.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseGoBuild finds `[VAR=value...] go build ARGS` in a command's words.
func parseGoBuild(words []string) (*goBuild, error) {
	b := &goBuild{env: map[string]string{}, flags: map[string]string{}, x: map[string]string{}}
	i := 0
	for ; i+1 < len(words) && !(words[i] == "go" && words[i+1] == "build"); i++ {
		if k, v, ok := strings.Cut(words[i], "="); ok && envName.MatchString(k) {
			b.env[k] = v
		} else {
			// Anything else before go build (another command) starts the environment over.
			b.env = map[string]string{}
		}
	}
	if i+1 >= len(words) {
		return nil, errors.New("no go build")
	}
	for i += 2; i < len(words); i++ {
		w := words[i]
		if w == "&&" || w == ";" || w == "||" {
			break
		}
		if !strings.HasPrefix(w, "-") {
			b.packages = append(b.packages, w)
			continue
		}
		name, value, ok := strings.Cut(w, "=")
		name = "-" + strings.TrimLeft(name, "-")
		if !ok && goBuildValueFlags[name] {
			if i+1 == len(words) {
				return nil, fmt.Errorf("go build %s needs a value", name)
			}
			i++
			value = words[i]
		}
		b.flags[name] = value
	}
	ld := strings.Fields(b.flags["-ldflags"])
	for j := 0; j < len(ld); j++ {
		if ld[j] == "-X" && j+1 < len(ld) {
			k, v, _ := strings.Cut(ld[j+1], "=")
			b.x[k] = v
			j++
		}
	}
	return b, nil
}

// makefileBuild reads the go build of the Makefile's build target.
func makefileBuild(t *testing.T, path string) *goBuild {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "build:") {
			continue
		}
		for _, recipe := range lines[i+1:] {
			if !strings.HasPrefix(recipe, "\t") {
				break
			}
			if !strings.Contains(recipe, " build ") {
				continue
			}
			// Make variables become plain words: $(GO) is go, the others placeholders.
			recipe = regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(recipe, func(v string) string {
				if v == "$(GO)" {
					return "go"
				}
				return "MAKEVAR"
			})
			words, err := shell.NewLex('\\').ProcessWords(strings.TrimSpace(recipe), envGetter{})
			if err != nil {
				t.Fatalf("Makefile build recipe %q: %v", recipe, err)
			}
			b, err := parseGoBuild(words)
			if err != nil {
				t.Fatalf("Makefile build recipe %q: %v", recipe, err)
			}
			return b
		}
	}
	t.Fatalf("%s has no build target with a go build", path)
	return nil
}

// checkDockerignore checks that .dockerignore leaves in the build context every file the
// binary is built from, and keeps out what only makes it big.
func checkDockerignore(t *testing.T, root string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	ignored := func(rel string) bool {
		ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			t.Fatalf(".dockerignore on %s: %v", rel, err)
		}
		return ok
	}

	needed := []string{"go.mod", "go.sum"}
	list := exec.CommandContext(t.Context(), "go", "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", "./cmd/shoal")
	list.Dir = root
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/shoal: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct{ Path string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || p.Module.Path != "github.com/shoal-dev/shoal" {
			continue
		}
		for _, name := range slices.Concat(p.GoFiles, p.EmbedFiles) {
			rel, err := filepath.Rel(root, filepath.Join(p.Dir, name))
			if err != nil {
				t.Fatal(err)
			}
			needed = append(needed, rel)
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v to build ./cmd/shoal", needed)
	}
	for _, rel := range needed {
		if ignored(rel) {
			t.Errorf(".dockerignore leaves %s out of the build context; go build ./cmd/shoal needs it", rel)
		}
	}
	for _, rel := range []string{".git", "test", "bin"} {
		if !ignored(rel) {
			t.Errorf(".dockerignore lets %s into the build context; the build does not need it", rel)
		}
	}
}

// loadCompose loads a compose file with compose-go, the loader of docker compose itself:
// schema validation on (unknown keys are errors), paths resolved against the file's
// directory, nothing taken from this process's environment.
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	return loader.LoadWithContext(t.Context(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(path),
		ConfigFiles: []types.ConfigFile{{Filename: path}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SkipValidation = false
		o.SkipConsistencyCheck = false
		o.ResolvePaths = true
		if _, ok := o.GetProjectName(); !ok {
			o.SetProjectName("compose-test", false)
		}
	})
}

// TestComposeStrict makes sure the loader as TestCompose uses it rejects what docker compose
// rejects, so that a typo in docker-compose.yml cannot pass unnoticed.
func TestComposeStrict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml string }{
		{"unknown service key", "services:\n  a:\n    image: busybox\n    comand: [sh]\n"},
		{"unknown top-level key", "services:\n  a:\n    image: busybox\nvolume: {}\n"},
		{"undeclared volume", "services:\n  a:\n    image: busybox\n    volumes: [data:/data]\n"},
	} {
		path := filepath.Join(t.TempDir(), "compose.yml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := loadCompose(t, path); err == nil {
			t.Errorf("%s: load succeeded, want an error", tc.name)
		}
	}
}

// TestCompose loads docker-compose.yml with compose-go and checks the demo fleet: an origin
// registry, three nodes built from the Dockerfile that join each other, each with its own
// data volume and host ports, a tracker every node uses, and commands and a config file the
// real binary accepts.
func TestCompose(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	flags := nodeFlags(t)
	composePath := filepath.Join(root, "docker-compose.yml")
	p, err := loadCompose(t, composePath)
	if err != nil {
		t.Fatalf("load %s: %v", composePath, err)
	}

	var origin, tracker *types.ServiceConfig
	var nodes []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		svc := p.Services[name]
		switch {
		case svc.Build != nil && len(svc.Command) > 0 && svc.Command[0] == "tracker":
			if tracker != nil {
				t.Errorf("services %s and %s both run shoal tracker", tracker.Name, name)
			}
			tracker = &svc
		case svc.Build != nil:
			nodes = append(nodes, svc)
		case svc.Image == "registry:3" || svc.Image == "docker.io/library/registry:3":
			if origin != nil {
				t.Errorf("services %s and %s both run the origin registry", origin.Name, name)
			}
			origin = &svc
		default:
			t.Errorf("service %s (image %q) is neither the origin (registry:3) nor shoal built from the Dockerfile", name, svc.Image)
		}
	}
	if origin == nil {
		t.Fatalf("no service runs the origin, the registry:3 image")
	}
	if tracker == nil {
		t.Fatalf("no service built from the Dockerfile runs shoal tracker")
	}
	if len(nodes) != 3 {
		t.Fatalf("%d services are built from the Dockerfile to run something else than the tracker, want 3 nodes", len(nodes))
	}
	originPort := uint32(5000) // where registry:3 listens
	if len(origin.Ports) > 0 && !slices.ContainsFunc(origin.Ports, func(pc types.ServicePortConfig) bool { return pc.Target == originPort }) {
		t.Errorf("origin publishes %v, not its port %d", origin.Ports, originPort)
	}

	doc, err := os.ReadFile(filepath.Join(root, "docs", "compose.md"))
	if err != nil {
		t.Errorf("docs/compose.md: %v", err)
	}

	adminPort := defaultPort(t, flags, "admin-addr")
	type hostPort struct{ service, ip, port, proto string }
	var published []hostPort
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, pc := range p.Services[name].Ports {
			if pc.Published == "" {
				continue
			}
			hp := hostPort{name, pc.HostIP, pc.Published, cmp.Or(pc.Protocol, "tcp")}
			for _, prev := range published {
				// A port published on every address collides with one on any single address.
				anyIP := hp.ip == "" || hp.ip == "0.0.0.0" || prev.ip == "" || prev.ip == "0.0.0.0"
				if prev.port == hp.port && prev.proto == hp.proto && (prev.ip == hp.ip || anyIP) {
					t.Errorf("host port %s/%s is published by both %s and %s", hp.port, hp.proto, prev.service, hp.service)
				}
			}
			published = append(published, hp)
		}
	}

	configs := map[string]bool{}
	dataVolumes := map[string]string{}
	joinName := map[string]bool{}
	trackerPort, trackerVolume := checkComposeTracker(t, root, *tracker, doc)
	if trackerVolume != "" {
		dataVolumes[trackerVolume] = tracker.Name
	}
	for _, svc := range nodes {
		t.Run(svc.Name, func(t *testing.T) {
			if svc.Build.Context != root {
				t.Errorf("build context %s, want the repository root %s", svc.Build.Context, root)
			}
			if df := svc.Build.Dockerfile; df != "" && df != "Dockerfile" && df != filepath.Join(root, "Dockerfile") {
				t.Errorf("build dockerfile %s, want the repository's Dockerfile", df)
			}
			if len(svc.Entrypoint) > 0 {
				t.Errorf("entrypoint %q replaces the image's /shoal", svc.Entrypoint)
			}
			if _, ok := svc.DependsOn[origin.Name]; !ok {
				t.Errorf("does not depend on the origin %s", origin.Name)
			}
			if len(svc.Command) == 0 || svc.Command[0] != "node" {
				t.Fatalf("command %q, want node ...", svc.Command)
			}
			set, err := parseNodeArgs(svc.Command[1:], flags)
			if err != nil {
				t.Fatalf("command %q: %v", svc.Command, err)
			}
			s := settings{}
			if cfg := set["config"]; len(cfg) > 0 {
				host := hostPath(svc, cfg[len(cfg)-1])
				if host == "" {
					t.Fatalf("--config %s is not in a volume bound from the repository", cfg[len(cfg)-1])
				}
				configs[host] = true
				fromFile, err := readNodeConfig(host, flags)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range fromFile {
					s[k] = v
				}
			}
			for k, v := range set {
				s[k] = v // the command line wins, key by key, as in the node
			}

			for _, flag := range []string{"registry-addr", "admin-addr"} {
				host, port, err := splitListen(s.get(flag, flags))
				if err != nil {
					t.Errorf("--%s: %v", flag, err)
					continue
				}
				if !allInterfaces(host) {
					t.Errorf("--%s %s: listens on %s only, which neither the host nor other nodes reach", flag, s.get(flag, flags), host)
				}
				if flag == "registry-addr" {
					i := slices.IndexFunc(svc.Ports, func(pc types.ServicePortConfig) bool { return int(pc.Target) == port && pc.Published != "" })
					if i < 0 {
						t.Errorf("mirror port %d is not published", port)
					} else if doc != nil && !bytes.Contains(doc, []byte("localhost:"+svc.Ports[i].Published)) {
						t.Errorf("docs/compose.md never mentions localhost:%s, %s's mirror", svc.Ports[i].Published, svc.Name)
					}
				}
			}
			if len(s["p2p-listen"]) == 0 {
				t.Errorf("no --p2p-listen: the node stays out of the fleet")
			}
			for _, a := range s["p2p-listen"] {
				if _, _, all, err := p2pPort(a); err != nil || !all {
					t.Errorf("--p2p-listen %s: want a fixed port on every interface (%v)", a, err)
				}
			}

			// Joining: a name that compose's DNS answers with every node, on the admin port.
			if target := s.get("bootstrap-dns", flags); target != "" {
				name, port := target, adminPort
				if h, ps, err := net.SplitHostPort(target); err == nil {
					name = h
					port, _ = strconv.Atoi(ps)
				}
				if _, aport, err := splitListen(s.get("admin-addr", flags)); err == nil && port != aport {
					t.Errorf("--bootstrap-dns %s asks port %d, but nodes serve /status on %d", target, port, aport)
				}
				joinName[name] = true
			} else if len(s["bootstrap"]) == 0 {
				t.Errorf("neither --bootstrap-dns nor --bootstrap: the node would not join the others with the tracker down")
			}

			// The tracker, as this node reaches it on a network they share.
			if _, ok := svc.DependsOn[tracker.Name]; !ok {
				t.Errorf("does not depend on the tracker %s", tracker.Name)
			}
			if len(s["tracker"]) == 0 {
				t.Errorf("no --tracker: the node does not use the tracker %s", tracker.Name)
			}
			for _, raw := range s["tracker"] {
				u, err := url.Parse(raw)
				if err != nil || u.Scheme != "http" || u.Port() != strconv.Itoa(trackerPort) || (u.Path != "" && u.Path != "/") ||
					!slices.ContainsFunc(slices.Collect(maps.Keys(svc.Networks)), func(network string) bool { return carriesName(*tracker, network, u.Hostname()) }) {
					t.Errorf("--tracker %s, want http://%s:%d, the tracker service on a network both are on", raw, tracker.Name, trackerPort)
				}
			}

			// The origin is the origin service, as other containers reach it.
			if o := s.get("origin", flags); o == "" {
				t.Errorf("no --origin")
			} else {
				checkOriginURL(t, "--origin", o, origin.Name, originPort)
			}
			for _, u := range s["upstream"] {
				if _, target, ok := strings.Cut(u, "="); ok {
					if h, err := url.Parse(target); err == nil && p.Services[h.Hostname()].Name != "" {
						checkOriginURL(t, "--upstream "+u, target, origin.Name, originPort)
					}
				}
			}

			// Its own cache and identity: a volume at the data dir that no other node shares.
			dataDir := s.get("data-dir", flags)
			i := slices.IndexFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == dataDir })
			switch {
			case i < 0:
				t.Errorf("no volume at the data dir %s: the cache and the peer identity would not survive a restart", dataDir)
			case svc.Volumes[i].Type != types.VolumeTypeVolume:
				t.Errorf("data dir %s is a %s mount; want a named volume, which takes the image's owner of %s", dataDir, svc.Volumes[i].Type, dataDir)
			default:
				src := svc.Volumes[i].Source
				if prev, ok := dataVolumes[src]; ok {
					t.Errorf("shares its data volume %s with %s: both would have the same peer ID", src, prev)
				}
				dataVolumes[src] = svc.Name
			}
		})
	}
	for name := range joinName {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(p.Networks)), func(network string) bool {
			return !slices.ContainsFunc(nodes, func(svc types.ServiceConfig) bool { return !carriesName(svc, network, name) })
		}) {
			t.Errorf("--bootstrap-dns %s: no network on which every node carries the name %s, so DNS does not lead to all of them", name, name)
		}
	}
	for _, svc := range nodes {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(svc.Networks)), func(network string) bool { return hasKey(origin.Networks, network) }) {
			t.Errorf("node %s shares no network with the origin %s", svc.Name, origin.Name)
		}
	}
	if len(joinName) > 1 {
		t.Errorf("nodes bootstrap from different names %v: they might form separate fleets", slices.Sorted(maps.Keys(joinName)))
	}

	// The real node accepts each config file: keys, values and lists.
	for path := range configs {
		checkConfigRuns(t, path, flags)
	}
}

// checkComposeTracker checks the tracker service: built like the nodes, listening on every
// interface with its HTTP port published on the host's loopback, its data dir one the
// image's user can write, and a command the real `shoal tracker` runs with. It returns the
// port of the HTTP API inside the network, and the named volume at the data dir ("" for
// none).
func checkComposeTracker(t *testing.T, root string, svc types.ServiceConfig, doc []byte) (int, string) {
	t.Helper()
	flags := commandFlags(t, "tracker", "listen", "p2p-listen", "data-dir")
	if svc.Build.Context != root {
		t.Errorf("tracker build context %s, want the repository root %s", svc.Build.Context, root)
	}
	if df := svc.Build.Dockerfile; df != "" && df != "Dockerfile" && df != filepath.Join(root, "Dockerfile") {
		t.Errorf("tracker build dockerfile %s, want the repository's Dockerfile", df)
	}
	if len(svc.Entrypoint) > 0 {
		t.Errorf("tracker entrypoint %q replaces the image's /shoal", svc.Entrypoint)
	}
	set, err := parseArgs("tracker", svc.Command[1:], flags)
	if err != nil {
		t.Fatalf("tracker command %q: %v", svc.Command, err)
	}
	s := settings(set)

	listen := s.get("listen", flags)
	host, port, err := splitListen(listen)
	if err != nil {
		t.Fatalf("tracker --listen: %v", err)
	}
	if !allInterfaces(host) {
		t.Errorf("tracker --listen %s: listens on %s only, which neither the host nor the nodes reach", listen, host)
	}
	i := slices.IndexFunc(svc.Ports, func(pc types.ServicePortConfig) bool { return int(pc.Target) == port && pc.Published != "" })
	switch {
	case i < 0:
		t.Errorf("tracker HTTP port %d is not published", port)
	case !isLoopback(svc.Ports[i].HostIP):
		t.Errorf("tracker HTTP port published on %q, want the host's loopback like the nodes' ports", svc.Ports[i].HostIP)
	case doc != nil && !bytes.Contains(doc, []byte(":"+svc.Ports[i].Published+"/swarms")):
		t.Errorf("docs/compose.md never shows the tracker's /swarms on its published port %s", svc.Ports[i].Published)
	}
	if len(s["p2p-listen"]) == 0 {
		t.Errorf("tracker has no --p2p-listen: nodes could not join the DHT through it")
	}
	for _, a := range s["p2p-listen"] {
		if _, _, all, err := p2pPort(a); err != nil || !all {
			t.Errorf("tracker --p2p-listen %s: want a fixed port on every interface (%v)", a, err)
		}
	}

	// Its data dir holds its identity: a named volume (which takes the owner of the
	// image's directory) or the container's own layer, either way a directory the image
	// creates for its user.
	dataDir := s.get("data-dir", flags)
	var volume string
	for _, v := range svc.Volumes {
		switch {
		case v.Target != dataDir:
			t.Errorf("tracker mounts %s at %s, which is not its data dir %s", v.Source, v.Target, dataDir)
		case v.Type != types.VolumeTypeVolume:
			t.Errorf("tracker data dir %s is a %s mount; want a named volume, which takes the image's owner of %s", dataDir, v.Type, dataDir)
		default:
			volume = v.Source
		}
	}
	if user, owned := imageDirs(t, root); !slices.Contains(owned, dataDir) {
		t.Errorf("the Dockerfile does not create the tracker's data dir %s owned by USER %s (it has %v): the tracker could not write its identity", dataDir, user, owned)
	}

	// The real tracker runs with the command's flags, its listen addresses and data dir
	// replaced by local ones.
	var run []string
	for _, name := range slices.Sorted(maps.Keys(set)) {
		switch name {
		case "listen", "p2p-listen", "data-dir", "log-level", "log-format":
		default:
			for _, v := range set[name] {
				run = append(run, "--"+name+"="+v)
			}
		}
	}
	harness.StartTracker(t, harness.TrackerOptions{Args: run})
	return port, volume
}

// isLoopback reports whether a published port's host IP is the host's loopback.
func isLoopback(ip string) bool {
	a := net.ParseIP(ip)
	return a != nil && a.IsLoopback()
}

// imageDirs reads the Dockerfile's final stage and returns its USER and the directories it
// copies in owned by that user.
func imageDirs(t *testing.T, root string) (string, []string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	if len(stages) == 0 {
		t.Fatalf("Dockerfile has no stage")
	}
	var user string
	var copies []*instructions.CopyCommand
	for _, c := range stages[len(stages)-1].Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CopyCommand:
			copies = append(copies, c)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	var dirs []string
	for _, c := range copies {
		if owner, _, _ := strings.Cut(c.Chown, ":"); owner != "" && owner == uid {
			dirs = append(dirs, filepath.Clean(c.DestPath))
		}
	}
	return user, dirs
}

// hostPath returns the file on this machine that a bind mount of svc shows at path.
func hostPath(svc types.ServiceConfig, path string) string {
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if v.Target == path {
			return v.Source
		}
		if rel, err := filepath.Rel(v.Target, path); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.Join(v.Source, rel)
		}
	}
	return ""
}

// carriesName reports whether compose's DNS answers name on network with svc's containers:
// svc is on the network and the name is its own or one of its aliases there.
func carriesName(svc types.ServiceConfig, network, name string) bool {
	n, ok := svc.Networks[network]
	if !ok {
		return false
	}
	return svc.Name == name || n != nil && slices.Contains(n.Aliases, name)
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func checkOriginURL(t *testing.T, what, raw, originName string, originPort uint32) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if u.Scheme != "http" || u.Hostname() != originName || u.Port() != strconv.Itoa(int(originPort)) {
		t.Errorf("%s: %s, want http://%s:%d, the origin service inside the network", what, raw, originName, originPort)
	}
}

// checkConfigRuns starts the real node with a compose config file, addresses and the data
// dir replaced by local ones (flags on the command line win) and no bootstrap name (compose's
// DNS is not here), and checks that it becomes ready with the upstreams the file names.
func checkConfigRuns(t *testing.T, path string, flags map[string]nodeFlag) {
	t.Helper()
	cfg, err := readNodeConfig(path, flags)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", path, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap-dns="}
	n := harness.StartNode(t, harness.NodeOptions{Args: args})
	st, err := n.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerID == "" {
		t.Errorf("node with %s: /status has no peerID; is p2p on?", path)
	}
	for _, u := range cfg["upstream"] {
		host, _, _ := strings.Cut(u, "=")
		if !slices.Contains(st.Upstreams, host) {
			t.Errorf("node with %s: /status upstreams %v lack %s", path, st.Upstreams, host)
		}
	}
}
