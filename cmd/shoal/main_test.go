package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string // substring; "" means success
		wantOut string
	}{
		{name: "version", args: []string{"version"}, wantOut: "shoal "},
		{name: "help", args: []string{"help"}, wantOut: "shoal node"},
		{name: "no command", args: nil, wantErr: "no command"},
		{name: "unknown command", args: []string{"fly"}, wantErr: `unknown command "fly"`},
		{name: "version help", args: []string{"version", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "Usage: shoal version"},
		{name: "version argument", args: []string{"version", "x"}, wantErr: "no arguments"},
		{name: "node help", args: []string{"node", "--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "--registry-addr"},
		{name: "unknown flag", args: []string{"node", "--nope"}, wantErr: "flag provided but not defined: -nope"},
		{name: "bad size", args: []string{"node", "--cache-size", "lots"}, wantErr: `"lots" is not a size`},
		{name: "bad duration", args: []string{"node", "--tag-ttl", "soon"}, wantErr: "invalid value"},
		{name: "bad upstream", args: []string{"node", "--upstream", "a/b=http://x", "--data-dir", "x"}, wantErr: "want HOST or HOST=URL"},
		{name: "no upstream", args: []string{"node", "--data-dir", "DATA"}, wantErr: "no upstream configured"},
		{name: "bad origin", args: []string{"node", "--origin", "ftp://x", "--data-dir", "DATA"}, wantErr: "not a registry URL"},
		{name: "bad log level", args: []string{"node", "--log-level", "loud"}, wantErr: "--log-level"},
		{name: "stray argument", args: []string{"node", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bootstrap without listen", args: []string{"node", "--origin", "http://x", "--data-dir", "DATA", "--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}, wantErr: "no p2p listen address"},
		{name: "bad p2p listen", args: []string{"node", "--origin", "http://x", "--data-dir", "DATA", "--p2p-listen", "tcp://0.0.0.0:1"}, wantErr: "p2p"},
		{name: "small chunk", args: []string{"node", "--chunk-size", "1KiB"}, wantErr: "--chunk-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string(nil), tt.args...)
			for i, a := range args {
				if a == "DATA" {
					args[i] = t.TempDir()
				}
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, &out, &errOut)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run(%q) = %v, want success", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("run(%q) error spans lines: %q", tt.args, err)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, out.String(), tt.wantOut)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		args    []string
		wantErr string
	}{
		{name: "unknown key", yaml: "registry-adr: x\n", wantErr: `unknown key "registry-adr"`},
		{name: "list for scalar", yaml: "origin: [a, b]\n", wantErr: "takes one value"},
		{name: "bad value", yaml: "cache-size: huge\n", wantErr: "cache-size"},
		{name: "not yaml", yaml: "::: [\n", wantErr: "config"},
		{name: "nested", yaml: "upstream: [{a: b}]\n", wantErr: "plain values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "shoal.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			err := run(context.Background(), append([]string{"node", "--config", path}, tt.args...), &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run with config %q = %v, want error containing %q", tt.yaml, err, tt.wantErr)
			}
		})
	}
}

// TestNodeFromConfigFile starts a real node from a config file, with a flag overriding one
// of its values, and stops it by cancelling the context as a signal would.
func TestNodeFromConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "shoal.yaml")
	cfg := "registry-addr: 127.0.0.1:1\nadmin-addr: \"\"\norigin: http://127.0.0.1:9\ndata-dir: " + dir + "\ncache-size: 1GiB\nupstream:\n  - docker.io\n  - ghcr.io=https://ghcr.io\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"node", "--config", path, "--registry-addr", "127.0.0.1:0", "--log-format", "json"}, &bytes.Buffer{}, &errOut)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(errOut.String(), "node started") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v; log:\n%s", err, errOut.String())
	}
	log := errOut.String()
	if !strings.Contains(log, "node started") || !strings.Contains(log, "docker.io") || strings.Contains(log, "127.0.0.1:1\"") {
		t.Errorf("log does not show the configured node:\n%s", log)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader at a time.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
