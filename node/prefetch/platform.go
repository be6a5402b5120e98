package prefetch

import (
	"fmt"
	"strings"
)

// Platform is a platform asked for, "os/arch[/variant]".
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses "os/arch[/variant]", e.g. "linux/amd64" or "linux/arm/v7". It is
// stricter than containerd's platform specifiers (no os alone, no upper case, nothing
// implied from the machine it runs on): the client checks what it sends with it, and the
// node what it receives, so both read a platform the same way wherever they run.
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", truncate(s))
	}
	for _, part := range parts {
		if !platformPart(part) {
			return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant] in lower-case letters, digits, '.', '_' and '-'", truncate(s))
		}
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func platformPart(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// truncate shortens what an error message quotes of a client's input.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
