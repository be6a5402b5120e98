// Package deploy tests the Kubernetes deployment: the Helm chart in deploy/helm/shoal and the
// plain manifests rendered from it in deploy/kubernetes. It runs the real helm (lint and
// template), decodes every rendered object strictly into the Kubernetes API types, so that a
// misspelt or misplaced field fails here rather than in a cluster, and checks what the
// deployment depends on: host networking, the probes, the containerd configuration at install
// and at uninstall, the headless Service the nodes find each other through, the optional
// tracker and the URLs the nodes reach it by, and that every flag the chart passes to shoal
// exists in the built binary.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBuilds()
	os.Exit(code)
}

// chartPath is the chart's directory relative to the repository root.
const chartPath = "deploy/helm/shoal"

// helm runs the helm binary installed by scripts/install-tools.sh from the repository root,
// with its cache and configuration in a temporary directory so that nothing on the machine
// (repositories, plugins) changes what it does. A missing helm skips the test, or fails it
// in CI.
type helm struct {
	bin  string
	root string
	home string
}

func newHelm(t *testing.T) *helm {
	t.Helper()
	harness.RequireTools(t, "helm")
	bin, err := harness.ToolPath("helm")
	if err != nil {
		t.Fatal(err)
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return &helm{bin: bin, root: root, home: t.TempDir()}
}

func (h *helm) env() []string {
	return append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
	)
}

// run runs helm with args and returns its standard output; the error carries standard error.
func (h *helm) run(args ...string) ([]byte, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Dir = h.root
	cmd.Env = h.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// template renders the chart as release "shoal" in namespace ns with the given extra helm
// arguments (-f FILE, --set K=V, ...).
func (h *helm) template(ns string, args ...string) ([]byte, error) {
	return h.run(append([]string{"template", "shoal", chartPath, "--namespace", ns}, args...)...)
}

// rendering is the decoded output of helm template.
type rendering struct {
	objects []object
}

// object is one rendered Kubernetes object, decoded into its API type.
type object struct {
	kind string // apiVersion/kind, e.g. apps/v1/DaemonSet
	meta metav1.ObjectMeta
	obj  any
}

// hook is the object's helm.sh/hook annotation, "" for an ordinary object.
func (o object) hook() string { return o.meta.Annotations["helm.sh/hook"] }

// kinds maps each apiVersion/kind the chart may render to a fresh value of its type. Anything
// else is an error: an object of a kind nobody expected, or of an API version that is wrong.
var kinds = map[string]func() any{
	"v1/Namespace":                      func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                 func() any { return &corev1.ServiceAccount{} },
	"v1/Service":                        func() any { return &corev1.Service{} },
	"v1/Secret":                         func() any { return &corev1.Secret{} },
	"v1/ConfigMap":                      func() any { return &corev1.ConfigMap{} },
	"apps/v1/DaemonSet":                 func() any { return &appsv1.DaemonSet{} },
	"apps/v1/StatefulSet":               func() any { return &appsv1.StatefulSet{} },
	"batch/v1/Job":                      func() any { return &batchv1.Job{} },
	"rbac.authorization.k8s.io/v1/Role": func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"monitoring.coreos.com/v1/ServiceMonitor":  func() any { return &serviceMonitor{} },
}

// decode splits a multi-document YAML stream and decodes each document strictly into its
// API type: unknown or duplicate fields and unknown kinds are errors. Documents holding only
// comments are skipped.
func decode(data []byte) (*rendering, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out rendering
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var generic map[string]any
		if err := yaml.Unmarshal(doc, &generic); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, doc)
		}
		if generic == nil {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		kind := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("document %d: unexpected kind %q\n%s", i, kind, doc)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): strict decode: %w\n%s", i, kind, err, doc)
		}
		acc, ok := obj.(metav1.ObjectMetaAccessor)
		if !ok {
			return nil, fmt.Errorf("document %d (%s): no metadata", i, kind)
		}
		meta := acc.GetObjectMeta().(*metav1.ObjectMeta)
		if meta.Name == "" {
			return nil, fmt.Errorf("document %d (%s): no name", i, kind)
		}
		out.objects = append(out.objects, object{kind: kind, meta: *meta, obj: obj})
	}
	return &out, nil
}

// get returns the object of type T named name, failing t when there is none.
func get[T any](t *testing.T, r *rendering, name string) *T {
	t.Helper()
	for _, o := range r.objects {
		if v, ok := o.obj.(*T); ok && o.meta.Name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %q rendered; have %v", &zero, name, r.names())
	return nil
}

// all returns every object of type T.
func all[T any](r *rendering) []*T {
	var out []*T
	for _, o := range r.objects {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// names lists the objects as kind/name, hooks marked, for messages.
func (r *rendering) names() []string {
	var out []string
	for _, o := range r.objects {
		s := o.kind + "/" + o.meta.Name
		if h := o.hook(); h != "" {
			s += " (" + h + " hook)"
		}
		out = append(out, s)
	}
	return out
}

// render runs helm template and decodes the result, failing t on any error.
func render(t *testing.T, h *helm, ns string, args ...string) *rendering {
	t.Helper()
	out, err := h.template(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decode(out)
	if err != nil {
		t.Fatalf("helm template %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// serviceMonitor is the part of prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1)
// that the chart uses, so that a strict decode catches a field the chart gets wrong.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port              string          `json:"port"`
			Path              string          `json:"path,omitempty"`
			Scheme            string          `json:"scheme,omitempty"`
			Interval          string          `json:"interval,omitempty"`
			ScrapeTimeout     string          `json:"scrapeTimeout,omitempty"`
			Relabelings       []relabelConfig `json:"relabelings,omitempty"`
			MetricRelabelings []relabelConfig `json:"metricRelabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type relabelConfig struct {
	Action       string   `json:"action,omitempty"`
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
}

// container returns the container or init container named name.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// flagValues returns the values of --name=VALUE arguments, in order.
func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// flagValue returns the one value of --name=VALUE, failing t unless there is exactly one.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	vs := flagValues(args, name)
	if len(vs) != 1 {
		t.Fatalf("--%s given %d times in %q, want once", name, len(vs), args)
	}
	return vs[0]
}

// flagNames returns the names of the --flags in args.
func flagNames(args []string) []string {
	var out []string
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			out = append(out, name)
		}
	}
	return out
}

var helpFlag = regexp.MustCompile(`(?m)^\s+--([a-z0-9][a-z0-9-]*)`)

// helpFlags runs `shoal <command> --help` and returns the flags it lists.
func helpFlags(bin, command string) ([]string, error) {
	out, err := exec.Command(bin, command, "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("shoal %s --help: %w\n%s", command, err, out)
	}
	var flags []string
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("shoal %s --help lists no flags:\n%s", command, out)
	}
	return flags, nil
}

// toleratesEverything reports whether tolerations contain one that matches every taint.
func toleratesEverything(tolerations []corev1.Toleration) bool {
	return slices.ContainsFunc(tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	})
}
