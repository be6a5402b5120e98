package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ConformanceOptions configures a read-only run of the OCI distribution-spec conformance
// suite against a registry that already holds Image.
type ConformanceOptions struct {
	Registry   string        // host:port, plain HTTP
	Image      Image         // its repo, tag, manifest and blobs are the read-only inputs
	ResultsDir string        // default: a temp dir, removed afterwards
	Timeout    time.Duration // default 2 minutes
}

// ConformanceReport is what the suite printed.
type ConformanceReport struct {
	Result string         // the word after "OCI Conformance Result:": Pass, FAIL, Error...
	Counts map[string]int // the per-status counts: Disabled, Skip, Pass, FAIL, Error, Total
	Failed []string       // test lines whose status is FAIL or Error
	Output string         // all of stdout and stderr
}

// RunConformance runs the `conformance` binary in read-only mode (no push, delete, tag
// list or referrers; sha256 only). The suite's current version panics after printing its
// report in this mode, so its exit status is ignored and the printed report is parsed; an
// error means the suite could not run at all.
func RunConformance(ctx context.Context, o ConformanceOptions) (ConformanceReport, error) {
	bin, err := ToolPath("conformance")
	if err != nil {
		return ConformanceReport{}, err
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.ResultsDir == "" {
		dir, err := os.MkdirTemp("", "conformance-")
		if err != nil {
			return ConformanceReport{}, err
		}
		defer os.RemoveAll(dir)
		o.ResultsDir = dir
	}
	blobs := make([]string, 0, len(o.Image.Layers)+1)
	for _, d := range o.Image.Blobs() {
		blobs = append(blobs, d.Digest.String())
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+o.Registry,
		"OCI_TLS=disabled",
		"OCI_REPO1="+o.Image.Repo,
		"OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_API_TAGS_LIST=false",
		"OCI_API_REFERRER=false",
		"OCI_DATA_SHA512=false",
		"OCI_RO_DATA_TAGS="+o.Image.Tag,
		"OCI_RO_DATA_MANIFESTS="+o.Image.Manifest.Digest.String(),
		"OCI_RO_DATA_BLOBS="+strings.Join(blobs, " "),
		"OCI_RESULTS_DIR="+o.ResultsDir,
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return ConformanceReport{Output: out.String()}, fmt.Errorf("conformance: %w\n%s", ctx.Err(), out.String())
	}
	var execErr *exec.Error
	if errors.As(runErr, &execErr) {
		return ConformanceReport{Output: out.String()}, fmt.Errorf("conformance: %w", runErr)
	}
	return parseConformance(out.String()), nil
}

var (
	conformanceResult = regexp.MustCompile(`(?m)^OCI Conformance Result: (\S+)\s*$`)
	conformanceCount  = regexp.MustCompile(`^\s+(\w+)\.*:\s+(\d+)\s*$`)
	conformanceTest   = regexp.MustCompile(`^\s*(OCI Conformance Test\S*(?: \S+)*): (FAIL|Error)\s*$`)
)

// parseConformance reads the report the suite prints: a tree of "NAME: STATUS" lines, then
// "OCI Conformance Result: STATUS" followed by one "  Status....: N" line per status.
func parseConformance(out string) ConformanceReport {
	rep := ConformanceReport{Counts: map[string]int{}, Output: out}
	lines := strings.Split(out, "\n")
	resultAt := -1
	for i, line := range lines {
		if m := conformanceResult.FindStringSubmatch(line); m != nil {
			rep.Result = m[1]
			resultAt = i
			break
		}
		if m := conformanceTest.FindStringSubmatch(line); m != nil {
			rep.Failed = append(rep.Failed, m[1]+": "+m[2])
		}
	}
	if resultAt < 0 {
		return rep
	}
	for _, line := range lines[resultAt+1:] {
		m := conformanceCount.FindStringSubmatch(line)
		if m == nil {
			break
		}
		n, _ := strconv.Atoi(m[2])
		rep.Counts[m[1]] = n
	}
	return rep
}

// Err is nil when the report says Pass with no FAIL or Error and at least one Pass.
func (r ConformanceReport) Err() error {
	switch {
	case r.Result == "":
		return errors.New("conformance printed no result line")
	case r.Result != "Pass" || r.Counts["FAIL"] > 0 || r.Counts["Error"] > 0:
		return fmt.Errorf("conformance result %s: %d FAIL, %d Error: %s",
			r.Result, r.Counts["FAIL"], r.Counts["Error"], strings.Join(r.Failed, "; "))
	case r.Counts["Pass"] == 0:
		return errors.New("conformance passed no test")
	}
	return nil
}
