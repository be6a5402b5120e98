package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// newFlagSet returns a flag set that reports errors in one line instead of printing usage.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args; with --config FILE it also applies the YAML file's keys (named
// like the flags) for every flag not given on the command line. configPath is nil for a
// command without --config. On --help it prints usage to w and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, configPath *string, w io.Writer, summary string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(w, fs, summary)
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if configPath == nil || *configPath == "" {
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return applyConfigFile(fs, *configPath, set)
}

// applyConfigFile sets flags from a YAML mapping of flag name to value (a list for
// repeatable flags). Unknown keys are errors, so a typo does not pass silently.
func applyConfigFile(fs *flag.FlagSet, path string, skip map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		node := doc[key]
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return fmt.Errorf("config %s: unknown key %q", path, key)
		}
		if skip[key] {
			continue
		}
		var values []string
		switch node.Kind {
		case yaml.ScalarNode:
			values = []string{node.Value}
		case yaml.SequenceNode:
			if _, ok := f.Value.(*listFlag); !ok {
				return fmt.Errorf("config %s: %q takes one value, not a list", path, key)
			}
			for _, item := range node.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("config %s: %q: list items must be plain values", path, key)
				}
				values = append(values, item.Value)
			}
		default:
			return fmt.Errorf("config %s: %q must be a value or a list", path, key)
		}
		for _, v := range values {
			if err := fs.Set(key, v); err != nil {
				return fmt.Errorf("config %s: %s: %w", path, key, err)
			}
		}
	}
	return nil
}

func printUsage(w io.Writer, fs *flag.FlagSet, summary string) {
	fmt.Fprintln(w, summary)
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "        %s%s\n", help, def)
	})
}

// logFlags defines --log-level and --log-format on fs, and returns what builds the logger
// they describe once fs is parsed.
func logFlags(fs *flag.FlagSet) func(w io.Writer) (*slog.Logger, error) {
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	format := fs.String("log-format", "text", "log `format`: text or json")
	return func(w io.Writer) (*slog.Logger, error) { return newLogger(w, *level, *format) }
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*l = append(*l, v)
	return nil
}
