// Package depcheck checks which packages a package depends on, so that a boundary of the
// code's layout (no libp2p below p2p, say) is a test that fails, not a rule in a document.
package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
)

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

// Forbidden returns, for each package in pkgs that depends (directly or not) on a package
// whose import path starts with one of prefixes, the chain of imports from it to the first
// such package, as "a -> b -> c". dir is where `go list` runs (inside the module).
func Forbidden(dir string, pkgs, prefixes []string) ([]string, error) {
	args := append([]string{"list", "-deps", "-json=ImportPath,Imports,Standard"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	graph := make(map[string][]string)
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		if !p.Standard {
			graph[p.ImportPath] = p.Imports
		}
	}
	var chains []string
	for _, pkg := range pkgs {
		if chain := path(graph, pkg, prefixes); chain != nil {
			chains = append(chains, strings.Join(chain, " -> "))
		}
	}
	return chains, nil
}

// path finds, breadth first, the shortest import chain from pkg to a forbidden package.
func path(graph map[string][]string, pkg string, prefixes []string) []string {
	forbidden := func(p string) bool {
		return slices.ContainsFunc(prefixes, func(prefix string) bool { return strings.HasPrefix(p, prefix) })
	}
	from := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if forbidden(p) {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, next := range graph[p] {
			if _, seen := from[next]; !seen {
				from[next] = p
				queue = append(queue, next)
			}
		}
	}
	return nil
}
