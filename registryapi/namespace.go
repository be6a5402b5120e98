package registryapi

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// ErrNamespaceInvalid: an ns value (or a configured registry key) that is not a plain
// host[:port].
var ErrNamespaceInvalid = errors.New("invalid registry namespace")

// DockerHub is the key Docker Hub goes by; containerd sends it as ns for docker.io images.
const DockerHub = "docker.io"

// maxNamespaceLength bounds an ns value; no host name is longer.
const maxNamespaceLength = 255

// NormalizeNamespace turns an ns query value (a registry host as containerd names it) into
// the key the node's registries are configured under: a lower-case host name, IPv4
// address or bracketed IPv6 address, with an optional port, and Docker Hub's aliases
// folded into "docker.io". Anything else (a scheme, userinfo, a path, spaces, a zone) is
// rejected with ErrNamespaceInvalid: the value comes from the request and is only ever
// looked up in the configured set, never dialled.
func NormalizeNamespace(ns string) (string, error) {
	if ns == "" || len(ns) > maxNamespaceLength {
		return "", ErrNamespaceInvalid
	}
	ns = strings.ToLower(ns)
	host, port, err := splitHostPort(ns)
	if err != nil {
		return "", err
	}
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return "", ErrNamespaceInvalid
		}
		port = ":" + strconv.FormatUint(p, 10)
	}
	if strings.HasPrefix(host, "[") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", ErrNamespaceInvalid
		}
		return "[" + a.String() + "]" + port, nil
	}
	if !validHostname(host) {
		return "", ErrNamespaceInvalid
	}
	if port == "" {
		switch host {
		case "docker.io", "index.docker.io", "registry-1.docker.io":
			return DockerHub, nil
		}
	}
	return host + port, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port". Unlike
// net.SplitHostPort it accepts a missing port and rejects an unbracketed IPv6 address.
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", ErrNamespaceInvalid
		}
		host, rest := s[:end+1], s[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", ErrNamespaceInvalid
		}
		return host, rest[1:], nil
	}
	host, port, found := strings.Cut(s, ":")
	if found && port == "" {
		return "", "", ErrNamespaceInvalid
	}
	return host, port, nil
}

// validHostname accepts dot-separated labels of [a-z0-9-], 1 to 63 bytes each, not
// starting or ending with '-' (the domain grammar of image references, lower-cased).
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}
