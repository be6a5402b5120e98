// Command shoal runs a peer-to-peer pull-through mirror for container images.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise it comes from
// the module's build information.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		// Help was asked for and printed.
	case err != nil:
		fmt.Fprintln(os.Stderr, "shoal:", err)
		os.Exit(1)
	}
}

const usage = `shoal: a peer-to-peer pull-through mirror for container images.

Usage:
  shoal node [flags]               run a node: the localhost /v2 mirror containerd pulls through
  shoal containerd-config [flags]  write hosts.toml files so containerd pulls through the node
  shoal prefetch IMAGE [flags]     have nodes pull an image ahead of a rollout, showing progress
  shoal tracker [flags]            run the optional tracker: swarms, origin leases, DHT bootstrap
  shoal version                    print the version
  shoal help                       show this help

Run "shoal COMMAND --help" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "node":
		return runNode(ctx, rest, stdout, stderr)
	case "containerd-config":
		return runContainerdConfig(rest, stdout, stderr)
	case "prefetch":
		return runPrefetch(ctx, rest, stdout)
	case "tracker":
		return runTracker(ctx, rest, stdout, stderr)
	case "version":
		if len(rest) > 0 {
			if isHelp(rest[0]) {
				fmt.Fprintln(stdout, "Usage: shoal version\n\nPrints the version of this shoal binary.")
				return flag.ErrHelp
			}
			return fmt.Errorf("version takes no arguments, got %q", rest[0])
		}
		fmt.Fprintln(stdout, "shoal", buildVersion())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q (try \"shoal help\")", cmd)
	}
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}
