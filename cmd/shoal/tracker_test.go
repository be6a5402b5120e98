package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tracker"
)

func TestTrackerFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
		wantOut string
	}{
		{name: "help", args: []string{"--help"}, wantErr: flag.ErrHelp.Error(), wantOut: "--p2p-listen"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "flag provided but not defined: -nope"},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "bad max members", args: []string{"--max-members", "0"}, wantErr: "--max-members"},
		{name: "bad max peers", args: []string{"--max-peers", "many"}, wantErr: "invalid value"},
		{name: "missing psk", args: []string{"--psk", "/nonexistent/psk"}, wantErr: "psk"},
		{name: "bad listen", args: []string{"--listen", "nowhere", "--data-dir", "DATA"}, wantErr: "--listen"},
		{name: "bad p2p listen", args: []string{"--listen", "127.0.0.1:0", "--data-dir", "DATA", "--p2p-listen", "tcp://0.0.0.0:1"}, wantErr: "p2p"},
		{name: "bad config key", args: []string{"--config", "CONFIG"}, wantErr: `unknown key "listn"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"tracker"}
			for _, a := range tt.args {
				switch a {
				case "DATA":
					a = t.TempDir()
				case "CONFIG":
					a = filepath.Join(t.TempDir(), "tracker.yaml")
					if err := os.WriteFile(a, []byte("listn: x\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				args = append(args, a)
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("run(%q) error spans lines: %q", tt.args, err)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, out.String(), tt.wantOut)
			}
		})
	}
}

// TestTrackerRuns starts a real tracker, asks it for its bootstrap peers, and stops it as
// a signal would.
func TestTrackerRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tracker", "--listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", dir, "--log-format", "json"}, &bytes.Buffer{}, &errOut)
	}()
	addr := ""
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); {
		sc := bufio.NewScanner(strings.NewReader(errOut.String()))
		for sc.Scan() {
			var line struct{ Msg, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "tracker listening" {
				addr = line.HTTP
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		t.Fatalf("tracker did not start: %v\n%s", <-done, errOut.String())
	}

	resp, err := http.Get("http://" + addr + tracker.PathBootstrap)
	if err != nil {
		t.Fatal(err)
	}
	var boot tracker.BootstrapResponse
	err = json.NewDecoder(resp.Body).Decode(&boot)
	resp.Body.Close()
	if err != nil || len(boot.Peers) == 0 || !strings.HasPrefix(boot.Peers[0], "/ip4/127.0.0.1/tcp/") {
		t.Errorf("GET /bootstrap = %+v, %v, want the tracker's own p2p addr", boot, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "identity")); err != nil {
		t.Errorf("identity not created: %v", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v; log:\n%s", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "tracker stopped") {
		t.Errorf("log does not show the tracker stopping:\n%s", errOut.String())
	}
}
