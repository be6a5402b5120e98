package node

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestValidate: each semantic check names the field it refused, and no message names a
// command-line flag (cmd/shoal adds those).
func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Config{DataDir: "/data", Origin: "http://127.0.0.1:5000"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v, want nil", ok, err)
	}
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
		want  string
	}{
		{"small chunk", func(c *Config) { c.ChunkSize = 1 << 10 }, "ChunkSize", "chunk size"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir", "no data directory"},
		{"negative tag ttl", func(c *Config) { c.TagTTL = -time.Second }, "TagTTL", "negative"},
		{"negative max stale", func(c *Config) { c.TagMaxStale = -time.Second }, "TagMaxStale", "negative"},
		{"no upstream", func(c *Config) { c.Origin = "" }, "Upstreams", "no upstream configured"},
		{"bad origin", func(c *Config) { c.Origin = "ftp://x" }, "Origin", "not a registry URL"},
		{"bad upstream", func(c *Config) { c.Upstreams = map[string]string{"x": "https://u:p@x"} }, "Upstreams", "upstream x"},
		{"bad tracker", func(c *Config) { c.Trackers, c.P2PListen = []string{"ftp://t"}, listen }, "Trackers", "tracker URL"},
		{"tracker without listen", func(c *Config) { c.Trackers = []string{"http://t"} }, "Trackers", "no p2p listen address"},
		{"bootstrap without listen", func(c *Config) { c.Bootstrap = []string{"/ip4/1.2.3.4/tcp/1"} }, "Bootstrap", "no p2p listen address"},
		{"bootstrap dns without listen", func(c *Config) { c.BootstrapDNS = "shoal" }, "BootstrapDNS", "no p2p listen address"},
		{"bad bootstrap dns", func(c *Config) { c.BootstrapDNS, c.P2PListen = "shoal:0", listen }, "BootstrapDNS", "bootstrap dns"},
		{"negative upload limit", func(c *Config) { c.UploadLimit = -1 }, "UploadLimit", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.edit(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate(%s) = %v, want a FieldError on %s containing %q", tt.name, err, tt.field, tt.want)
			}
			if strings.Contains(err.Error(), "--") {
				t.Errorf("Validate(%s) = %q, names a flag", tt.name, err)
			}
		})
	}
}
