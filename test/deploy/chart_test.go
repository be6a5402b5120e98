package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// fullValues turns on every optional feature of the chart.
func fullValues(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("testdata/full-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// expect is what a rendering must add up to, from the values it was made with.
type expect struct {
	namespace     string
	fullname      string
	registries    []string
	hostsDir      string
	dataDir       string
	clusterDomain string
	mirrorPort    int32
	adminPort     int32
	p2pPort       int32
	defaultHosts  bool // containerd.default: _default/hosts.toml too
	cleanup       bool
	tracker       *trackerExpect // nil: tracker.enabled false
}

// trackerExpect is what the tracker's values add up to.
type trackerExpect struct {
	name     string // of the StatefulSet and its Service
	replicas int
	port     int32
	p2pPort  int32
	image    string
}

// defaultImage is the image of the chart's defaults: its repository at the appVersion.
const defaultImage = "ghcr.io/shoal-dev/shoal:0.1.0"

// withTracker is e with the tracker enabled and its other values left at their defaults.
func (e expect) withTracker() expect {
	e.tracker = &trackerExpect{name: e.fullname + "-tracker", replicas: 1, port: 5090, p2pPort: 5091, image: defaultImage}
	return e
}

var defaults = expect{
	namespace:     "shoal",
	fullname:      "shoal",
	registries:    []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io"},
	hostsDir:      "/etc/containerd/certs.d",
	dataDir:       "/var/lib/shoal",
	clusterDomain: "cluster.local",
	mirrorPort:    5080,
	adminPort:     5081,
	p2pPort:       5082,
	cleanup:       true,
}

// full is what testdata/full-values.yaml adds up to, rendered in namespace "mirror".
var full = expect{
	namespace:     "mirror",
	fullname:      "p2p-mirror",
	registries:    []string{"docker.io", "ghcr.io", "registry.internal:5000=http://registry.internal:5000"},
	hostsDir:      "/var/lib/containerd-hosts",
	dataDir:       "/mnt/nvme/shoal",
	clusterDomain: "k8s.example",
	mirrorPort:    30020,
	adminPort:     30021,
	p2pPort:       30022,
	defaultHosts:  true,
	cleanup:       true,
	tracker: &trackerExpect{
		name:     "p2p-mirror-tracker",
		replicas: 2,
		port:     30090,
		p2pPort:  30091,
		image:    "registry.example/mirror/shoal:9.9.8",
	},
}

func TestLint(t *testing.T) {
	h := newHelm(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"full", []string{"-f", fullValues(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := h.run(append([]string{"lint", "--strict", chartPath}, tc.args...)...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	h := newHelm(t)
	r := render(t, h, defaults.namespace)

	want := []string{
		"apps/v1/DaemonSet/shoal",
		"apps/v1/DaemonSet/shoal-cleanup (post-delete hook)",
		"batch/v1/Job/shoal-cleanup-wait (post-delete hook)",
		"rbac.authorization.k8s.io/v1/Role/shoal-cleanup (post-delete hook)",
		"rbac.authorization.k8s.io/v1/RoleBinding/shoal-cleanup (post-delete hook)",
		"v1/Service/shoal",
		"v1/ServiceAccount/shoal",
		"v1/ServiceAccount/shoal-cleanup (post-delete hook)",
	}
	got := r.names()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("rendered objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkRendering(t, r, defaults)

	pod := &get[appsv1.DaemonSet](t, r, "shoal").Spec.Template.Spec
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q, want system-node-critical", pod.PriorityClassName)
	}
	if !toleratesEverything(pod.Tolerations) {
		t.Errorf("tolerations = %+v, want one with operator Exists and no key or effect", pod.Tolerations)
	}
	if got := pod.NodeSelector["kubernetes.io/os"]; got != "linux" {
		t.Errorf("nodeSelector kubernetes.io/os = %q, want linux", got)
	}
	node := container(t, pod, "node")
	if got := flagValue(t, node.Args, "admin-addr"); got != "[$(POD_IP)]:5081" {
		t.Errorf("--admin-addr = %q, want [$(POD_IP)]:5081", got)
	}
	if !slices.ContainsFunc(node.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
	}) {
		t.Errorf("env %+v: no POD_IP from status.podIP, which --admin-addr uses", node.Env)
	}
	if flagValues(node.Args, "psk") != nil || flagValues(node.Args, "docker-config") != nil {
		t.Errorf("args %q: --psk or --docker-config without psk or upstreamCredentials set", node.Args)
	}
	if sc := node.SecurityContext; sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("node runAsUser = %v, want 0 (it writes the root-owned hostPath %s)", sc.RunAsUser, defaults.dataDir)
	}
}

// TestTracker: tracker.enabled with the other values at their defaults, and with names as
// long as the chart allows.
func TestTracker(t *testing.T) {
	h := newHelm(t)
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		r := render(t, h, defaults.namespace, "--set", "tracker.enabled=true")
		want := []string{"apps/v1/StatefulSet/shoal-tracker", "v1/Service/shoal-tracker"}
		for _, o := range r.objects {
			if o.meta.Labels["app.kubernetes.io/component"] == "tracker" && !slices.Contains(want, o.kind+"/"+o.meta.Name) {
				t.Errorf("%s/%s rendered, want only %q for the tracker", o.kind, o.meta.Name, want)
			}
		}
		checkRendering(t, r, defaults.withTracker())
		pod := &get[appsv1.StatefulSet](t, r, "shoal-tracker").Spec.Template.Spec
		if len(pod.Tolerations) != 0 {
			t.Errorf("tracker tolerations = %+v, want none by default", pod.Tolerations)
		}
		if got := pod.NodeSelector["kubernetes.io/os"]; got != "linux" {
			t.Errorf("tracker nodeSelector kubernetes.io/os = %q, want linux", got)
		}
	})
	t.Run("long names", func(t *testing.T) {
		t.Parallel()
		name := strings.Repeat("n", 55)
		r := render(t, h, "shoal", "--set", "tracker.enabled=true", "--set", "fullnameOverride="+name)
		e := defaults.withTracker()
		e.fullname = name
		e.tracker.name = strings.Repeat("n", 44) + "-tracker"
		checkRendering(t, r, e)
	})
	t.Run("psk existing secret", func(t *testing.T) {
		t.Parallel()
		r := render(t, h, "shoal", "--set", "tracker.enabled=true", "--set", "psk.existingSecret=fleet-key", "--set", "psk.secretKey=key")
		checkRendering(t, r, defaults.withTracker())
	})
}

func TestFull(t *testing.T) {
	h := newHelm(t)
	r := render(t, h, full.namespace, "-f", fullValues(t))
	checkRendering(t, r, full)

	ds := get[appsv1.DaemonSet](t, r, full.fullname)
	pod := &ds.Spec.Template.Spec
	node := container(t, pod, "node")
	init := container(t, pod, "containerd-config")

	const image = "registry.example/mirror/shoal@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []*corev1.Container{node, init} {
		if c.Image != image {
			t.Errorf("%s image = %q, want %q (the digest wins over the tag)", c.Name, c.Image, image)
		}
	}
	if toleratesEverything(pod.Tolerations) {
		t.Errorf("tolerations = %+v: tolerate everything with tolerateAllTaints false", pod.Tolerations)
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" {
		t.Errorf("tolerations = %+v, want only the one from values", pod.Tolerations)
	}
	if pod.Affinity == nil || pod.Affinity.NodeAffinity == nil {
		t.Errorf("affinity = %+v, want the node affinity from values", pod.Affinity)
	}
	if pod.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName = %q, want system-cluster-critical", pod.PriorityClassName)
	}

	// The node's flags.
	for flag, want := range map[string]string{
		"admin-addr":    "[::]:30021",
		"origin":        "http://registry.internal:5000",
		"bootstrap":     "/ip4/192.0.2.10/tcp/5082/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp",
		"cache-size":    "50GiB",
		"upload-limit":  "100MiB",
		"log-format":    "text",
		"log-level":     "debug",
		"tag-ttl":       "10s",
		"chunk-size":    "8MiB",
		"docker-config": "/etc/shoal/docker/config.json",
	} {
		if got := flagValue(t, node.Args, flag); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if got, want := flagValues(node.Args, "p2p-listen"), []string{"/ip4/0.0.0.0/tcp/30022", "/ip6/::/tcp/30022"}; !slices.Equal(got, want) {
		t.Errorf("--p2p-listen = %q, want %q", got, want)
	}

	// containerd: _default and the dial timeout, at install and at uninstall alike.
	for _, args := range [][]string{init.Args, container(t, &get[appsv1.DaemonSet](t, r, full.fullname+"-cleanup").Spec.Template.Spec, "containerd-config-remove").Args} {
		if got := flagValue(t, args, "dial-timeout"); got != "300ms" {
			t.Errorf("--dial-timeout = %q in %q, want 300ms", got, args)
		}
	}

	// The private network key: a Secret made from the value, mounted where --psk points.
	secret := get[corev1.Secret](t, r, full.fullname+"-psk")
	key := string(secret.Data["psk"])
	if !strings.HasPrefix(key, "/key/swarm/psk/1.0.0/\n/base16/\n") {
		t.Errorf("Secret %s data psk = %q, want the key file from values", secret.Name, key)
	}
	checkSecretMount(t, pod, node, "psk", secret.Name, "psk", flagValue(t, node.Args, "psk"), 0o400)
	checkSecretMount(t, pod, node, "docker-config", "registry-credentials", ".dockerconfigjson", flagValue(t, node.Args, "docker-config"), 0o400)
	if ds.Spec.Template.Annotations["checksum/psk"] == "" {
		t.Errorf("pod annotations %v: no checksum/psk, so a new key would not restart the nodes", ds.Spec.Template.Annotations)
	}

	// Extra values land where they belong.
	if !slices.ContainsFunc(node.Env, func(e corev1.EnvVar) bool { return e.Name == "GODEBUG" }) {
		t.Errorf("env %+v: no GODEBUG from extraEnv", node.Env)
	}
	if !slices.ContainsFunc(node.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "ca" }) {
		t.Errorf("volume mounts %+v: none from extraVolumeMounts", node.VolumeMounts)
	}
	if ds.Spec.Template.Labels["example.com/tier"] != "infra" || ds.Spec.Template.Annotations["example.com/team"] != "platform" {
		t.Errorf("pod metadata %+v: podLabels or podAnnotations missing", ds.Spec.Template.ObjectMeta)
	}
	if sa := get[corev1.ServiceAccount](t, r, "shoal-node"); sa.Annotations["example.com/owner"] != "platform" || pod.ServiceAccountName != sa.Name {
		t.Errorf("ServiceAccount %+v used by %q: want shoal-node with its annotation", sa.ObjectMeta, pod.ServiceAccountName)
	}

	// The ServiceMonitor scrapes /metrics on the admin port through the headless Service.
	svc := headlessService(t, r, full.fullname)
	sm := get[serviceMonitor](t, r, full.fullname)
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v: no release label from serviceMonitor.labels", sm.Labels)
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatalf("ServiceMonitor selector: %v", err)
	}
	if !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select Service %s (labels %v)", sel, svc.Name, svc.Labels)
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{full.namespace}) {
		t.Errorf("ServiceMonitor namespaceSelector = %v, want [%s]", sm.Spec.NamespaceSelector.MatchNames, full.namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints = %+v, want one", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Path != "/metrics" || ep.Interval != "15s" || ep.ScrapeTimeout != "5s" {
		t.Errorf("ServiceMonitor endpoint = %+v, want /metrics every 15s with a 5s timeout", ep)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port && p.Port == full.adminPort }) {
		t.Errorf("ServiceMonitor port %q is not the admin port of Service %s (%+v)", ep.Port, svc.Name, svc.Spec.Ports)
	}
	if len(ep.Relabelings) != 2 || ep.Relabelings[0].TargetLabel != "node" || ep.Relabelings[1].TargetLabel != "cluster" {
		t.Errorf("relabelings = %+v, want the node label, then the one from values", ep.Relabelings)
	}
	if len(ep.MetricRelabelings) != 1 || ep.MetricRelabelings[0].Action != "drop" {
		t.Errorf("metricRelabelings = %+v, want the one from values", ep.MetricRelabelings)
	}

	// The tracker's ServiceMonitor scrapes /metrics on its HTTP port, through its Service.
	tsvc := get[corev1.Service](t, r, full.tracker.name)
	tsm := get[serviceMonitor](t, r, full.tracker.name)
	tsel, err := metav1.LabelSelectorAsSelector(&tsm.Spec.Selector)
	if err != nil {
		t.Fatalf("tracker ServiceMonitor selector: %v", err)
	}
	if !tsel.Matches(labels.Set(tsvc.Labels)) || tsel.Matches(labels.Set(svc.Labels)) || sel.Matches(labels.Set(tsvc.Labels)) {
		t.Errorf("ServiceMonitor selectors: nodes %v, tracker %v; want each to select only its own Service (labels: nodes %v, tracker %v)", sel, tsel, svc.Labels, tsvc.Labels)
	}
	if tsm.Labels["release"] != "kube-prometheus-stack" || !slices.Equal(tsm.Spec.NamespaceSelector.MatchNames, []string{full.namespace}) {
		t.Errorf("tracker ServiceMonitor %+v: want the labels from values and namespace %s", tsm.ObjectMeta, full.namespace)
	}
	if len(tsm.Spec.Endpoints) != 1 {
		t.Fatalf("tracker ServiceMonitor endpoints = %+v, want one", tsm.Spec.Endpoints)
	}
	tep := tsm.Spec.Endpoints[0]
	if tep.Path != "/metrics" || tep.Interval != "15s" || tep.ScrapeTimeout != "5s" ||
		!slices.ContainsFunc(tsvc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == tep.Port && p.Port == full.tracker.port }) {
		t.Errorf("tracker ServiceMonitor endpoint = %+v, want /metrics on port %d of Service %s every 15s with a 5s timeout", tep, full.tracker.port, tsvc.Name)
	}
	if len(tep.Relabelings) != 1 || tep.Relabelings[0].TargetLabel != "cluster" || len(tep.MetricRelabelings) != 1 {
		t.Errorf("tracker relabelings = %+v, metricRelabelings = %+v, want those from values", tep.Relabelings, tep.MetricRelabelings)
	}

	// The tracker's own scheduling and extras.
	tpod := &get[appsv1.StatefulSet](t, r, full.tracker.name).Spec.Template
	if len(tpod.Spec.Tolerations) != 1 || tpod.Spec.Tolerations[0].Key != "tracker" {
		t.Errorf("tracker tolerations = %+v, want only the one from tracker.tolerations", tpod.Spec.Tolerations)
	}
	if tpod.Spec.NodeSelector["node-role.example.com/control"] != "true" || tpod.Spec.Affinity == nil || tpod.Spec.Affinity.PodAntiAffinity == nil {
		t.Errorf("tracker nodeSelector %v, affinity %+v: want those from tracker.*", tpod.Spec.NodeSelector, tpod.Spec.Affinity)
	}
	if tpod.Labels["example.com/tier"] != "tracker" || tpod.Annotations["example.com/team"] != "platform" {
		t.Errorf("tracker pod metadata %+v: tracker.podLabels or podAnnotations missing", tpod.ObjectMeta)
	}
	tc := container(t, &tpod.Spec, "tracker")
	if tc.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("tracker imagePullPolicy = %q, want Always from tracker.image", tc.ImagePullPolicy)
	}
	if got, want := flagValues(tc.Args, "p2p-listen"), []string{"/ip4/0.0.0.0/tcp/30091", "/ip6/::/tcp/30091"}; !slices.Equal(got, want) {
		t.Errorf("tracker --p2p-listen = %q, want %q (p2p.ipv6)", got, want)
	}
	for _, a := range fullTrackerExtraArgs {
		if !slices.Contains(tc.Args, a) {
			t.Errorf("tracker args %q lack %q from tracker.extraArgs", tc.Args, a)
		}
	}
	if tq := tc.Resources.Requests.Cpu(); tq.String() != "100m" {
		t.Errorf("tracker cpu request = %s, want 100m from tracker.resources", tq)
	}

	job := get[batchv1.Job](t, r, full.fullname+"-cleanup-wait")
	if got := flagValue(t, job.Spec.Template.Spec.Containers[0].Args, "timeout"); got != "900s" {
		t.Errorf("cleanup wait --timeout = %q, want 900s", got)
	}
}

// TestPSKExistingSecret: a Secret the operator made is mounted, and none is rendered.
func TestPSKExistingSecret(t *testing.T) {
	h := newHelm(t)
	r := render(t, h, "shoal", "--set", "psk.existingSecret=fleet-key", "--set", "psk.secretKey=key")
	if s := all[corev1.Secret](r); len(s) != 0 {
		t.Errorf("rendered Secrets %v with psk.existingSecret set", r.names())
	}
	ds := get[appsv1.DaemonSet](t, r, "shoal")
	node := container(t, &ds.Spec.Template.Spec, "node")
	checkSecretMount(t, &ds.Spec.Template.Spec, node, "psk", "fleet-key", "key", flagValue(t, node.Args, "psk"), 0o400)
	if _, ok := ds.Spec.Template.Annotations["checksum/psk"]; ok {
		t.Errorf("checksum/psk annotation without a key in the values")
	}
}

// TestCleanupDisabled: no hooks at all.
func TestCleanupDisabled(t *testing.T) {
	h := newHelm(t)
	r := render(t, h, "shoal", "--set", "cleanup.enabled=false")
	for _, o := range r.objects {
		if o.hook() != "" {
			t.Errorf("%s/%s: a %s hook with cleanup.enabled false", o.kind, o.meta.Name, o.hook())
		}
	}
	e := defaults
	e.cleanup = false
	checkRendering(t, r, e)
}

// TestValueErrors: values that cannot work fail at template time, with a message.
func TestValueErrors(t *testing.T) {
	h := newHelm(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no tracker replica", []string{"--set", "tracker.enabled=true", "--set", "tracker.replicas=0"}, "replicas"},
		{"unknown tracker key", []string{"--set", "tracker.replica=2"}, "replica"},
		{"bad tracker port", []string{"--set", "tracker.p2pPort=0"}, "p2pPort"},
		{"unknown key", []string{"--set", "registry=docker.io"}, "registry"},
		{"no registry", []string{"--set-json", "registries=[]"}, "registries"},
		{"bad size", []string{"--set", "cacheSize=lots"}, "cacheSize"},
		{"bad log format", []string{"--set", "log.format=xml"}, "format"},
		{"bad port", []string{"--set", "admin.port=70000"}, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := h.template("shoal", tc.args...)
			if err == nil {
				t.Fatalf("helm template %q succeeded, want an error; rendered:\n%s", tc.args, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %q: %v\nwant an error mentioning %q", tc.args, err, tc.want)
			}
		})
	}
}

// fullTrackerExtraArgs are tracker.extraArgs in testdata/full-values.yaml.
var fullTrackerExtraArgs = []string{"--max-peers=50000"}

// TestFlagsExist runs the built shoal with the arguments the chart gives it plus --help:
// every flag must exist (an unknown one is an error), and every value must parse (flags are
// set, and so checked, before --help stops the parsing).
func TestFlagsExist(t *testing.T) {
	h := newHelm(t)
	bin := harness.BuildShoal(t)
	renderings := map[string]*rendering{
		"defaults": render(t, h, defaults.namespace),
		"tracker":  render(t, h, defaults.namespace, "--set", "tracker.enabled=true"),
		"full":     render(t, h, full.namespace, "-f", fullValues(t)),
	}

	nodeFlags, err := helpFlags(bin, "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("node", func(t *testing.T) {
		for name, r := range renderings {
			for _, ds := range all[appsv1.DaemonSet](r) {
				for _, c := range ds.Spec.Template.Spec.Containers {
					if len(c.Args) == 0 || c.Args[0] != "node" {
						continue
					}
					checkArgs(t, bin, fmt.Sprintf("%s: DaemonSet %s", name, ds.Name), c.Args, nodeFlags)
				}
			}
		}
	})

	t.Run("tracker", func(t *testing.T) {
		trackerFlags, err := helpFlags(bin, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for name, r := range renderings {
			for _, sts := range all[appsv1.StatefulSet](r) {
				for _, c := range sts.Spec.Template.Spec.Containers {
					if len(c.Args) == 0 || c.Args[0] != "tracker" {
						continue
					}
					n++
					checkArgs(t, bin, fmt.Sprintf("%s: StatefulSet %s", name, sts.Name), c.Args, trackerFlags)
				}
			}
		}
		if n == 0 {
			t.Errorf("no rendering runs shoal tracker")
		}
	})

	t.Run("containerd-config", func(t *testing.T) {
		ccFlags, err := helpFlags(bin, "containerd-config")
		if err != nil {
			if harness.InCI() {
				t.Fatal(err)
			}
			t.Skipf("this shoal has no containerd-config command yet: %v", err)
		}
		for name, r := range renderings {
			for _, ds := range all[appsv1.DaemonSet](r) {
				for _, c := range ds.Spec.Template.Spec.InitContainers {
					if len(c.Args) == 0 || c.Args[0] != "containerd-config" {
						continue
					}
					checkArgs(t, bin, fmt.Sprintf("%s: DaemonSet %s container %s", name, ds.Name, c.Name), c.Args, ccFlags)
				}
			}
		}
	})
}

// checkArgs checks the arguments what passes to shoal: every flag is one that
// `shoal <args[0]> --help` lists (known), and runWithHelp accepts them.
func checkArgs(t *testing.T, bin, what string, args, known []string) {
	t.Helper()
	for _, f := range flagNames(args) {
		if !slices.Contains(known, f) {
			t.Errorf("%s passes --%s, which shoal %s --help does not list (%v)", what, f, args[0], known)
		}
	}
	runWithHelp(t, bin, args)
}

// runWithHelp runs shoal with args and --help, with the pod's $(POD_IP) given a value.
func runWithHelp(t *testing.T, bin string, args []string) {
	t.Helper()
	args = slices.Clone(args)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "$(POD_IP)", "192.0.2.1")
	}
	out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
	if err != nil {
		t.Errorf("shoal %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestManifests checks that deploy/kubernetes holds a fresh rendering of the chart (run
// `make manifests` after changing the chart) and that the plain manifests decode too.
func TestManifests(t *testing.T) {
	h := newHelm(t)
	dir := t.TempDir()
	cmd := exec.Command("deploy/kubernetes/generate.sh", dir)
	cmd.Dir = h.root
	cmd.Env = append(h.env(), "HELM="+h.bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/kubernetes/generate.sh: %v\n%s", err, out)
	}
	committed := filepath.Join(h.root, "deploy/kubernetes")
	for _, name := range []string{"shoal.yaml", "cleanup.yaml"} {
		fresh, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(filepath.Join(committed, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(have) != string(fresh) {
			t.Errorf("deploy/kubernetes/%s differs from a fresh rendering of the chart: run make manifests\n%s", name, firstDiff(string(have), string(fresh)))
		}
	}

	data, err := os.ReadFile(filepath.Join(committed, "shoal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := decode(data)
	if err != nil {
		t.Fatalf("deploy/kubernetes/shoal.yaml: %v", err)
	}
	ns := get[corev1.Namespace](t, r, "shoal")
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("Namespace shoal labels %v: the pods need the privileged Pod Security level", ns.Labels)
	}
	for _, o := range r.objects {
		if o.hook() != "" {
			t.Errorf("shoal.yaml holds the %s hook %s/%s: kubectl would run it at once", o.hook(), o.kind, o.meta.Name)
		}
	}
	e := defaults
	e.cleanup = false
	checkRendering(t, r, e)

	data, err = os.ReadFile(filepath.Join(committed, "cleanup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := decode(data)
	if err != nil {
		t.Fatalf("deploy/kubernetes/cleanup.yaml: %v", err)
	}
	if got := cr.names(); len(got) != 1 || len(all[appsv1.DaemonSet](cr)) != 1 {
		t.Fatalf("cleanup.yaml holds %v, want the cleanup DaemonSet only", got)
	}
	checkCleanupDaemonSet(t, get[appsv1.DaemonSet](t, r, "shoal"), get[appsv1.DaemonSet](t, cr, "shoal-cleanup"))
}

// firstDiff describes the first line where two texts differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  committed: %q\n  fresh:     %q", i+1, x, y)
		}
	}
	return ""
}

// checkRendering checks what every rendering must hold, whatever the values.
func checkRendering(t *testing.T, r *rendering, e expect) {
	t.Helper()
	for _, o := range r.objects {
		if o.kind != "v1/Namespace" && o.meta.Namespace != e.namespace {
			t.Errorf("%s/%s in namespace %q, want %q", o.kind, o.meta.Name, o.meta.Namespace, e.namespace)
		}
		if e.tracker == nil && (strings.Contains(o.meta.Name, "tracker") || o.meta.Labels["app.kubernetes.io/component"] == "tracker") {
			t.Errorf("%s/%s rendered with tracker.enabled false", o.kind, o.meta.Name)
		}
	}

	ds := get[appsv1.DaemonSet](t, r, e.fullname)
	pod := &ds.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("DaemonSet selector: %v", err)
	}
	if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not match its pods' labels %v", sel, ds.Spec.Template.Labels)
	}
	if !pod.HostNetwork {
		t.Errorf("hostNetwork = false: containerd on the host could not reach the mirror on 127.0.0.1")
	}
	if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy = %q, want ClusterFirstWithHostNet (to resolve the headless Service)", pod.DNSPolicy)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken not false: the node does not use the API")
	}

	// The node: its ports, its probes, its flags.
	node := container(t, pod, "node")
	if len(node.Args) == 0 || node.Args[0] != "node" {
		t.Fatalf("node container args %q, want shoal node", node.Args)
	}
	ports := map[string]int32{}
	for _, p := range node.Ports {
		if p.HostPort != p.ContainerPort {
			t.Errorf("port %s: hostPort %d, containerPort %d; under hostNetwork they must be equal", p.Name, p.HostPort, p.ContainerPort)
		}
		ports[p.Name] = p.ContainerPort
	}
	if want := map[string]int32{"mirror": e.mirrorPort, "admin": e.adminPort, "p2p": e.p2pPort}; !reflect.DeepEqual(ports, want) {
		t.Errorf("container ports = %v, want %v", ports, want)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", node.ReadinessProbe, "/readyz"},
		{"liveness", node.LivenessProbe, "/healthz"},
		{"startup", node.StartupProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe = %+v, want an HTTP GET of %s", p.name, p.probe, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || resolvePort(g.Port, ports) != e.adminPort || g.Host != "" {
			t.Errorf("%s probe GET %s on port %s (host %q), want %s on the admin port %d of the pod's IP", p.name, g.Path, g.Port.String(), g.Host, p.path, e.adminPort)
		}
	}
	if got, want := flagValue(t, node.Args, "registry-addr"), fmt.Sprintf("127.0.0.1:%d", e.mirrorPort); got != want {
		t.Errorf("--registry-addr = %q, want %q", got, want)
	}
	if got := flagValue(t, node.Args, "admin-addr"); !strings.HasSuffix(got, ":"+strconv.Itoa(int(e.adminPort))) {
		t.Errorf("--admin-addr = %q, want port %d", got, e.adminPort)
	}
	if got, want := flagValues(node.Args, "p2p-listen"), fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", e.p2pPort); !slices.Contains(got, want) {
		t.Errorf("--p2p-listen = %q, want %q among them", got, want)
	}
	if got := flagValues(node.Args, "upstream"); !slices.Equal(got, e.registries) {
		t.Errorf("--upstream = %q, want %q", got, e.registries)
	}
	if got := flagValue(t, node.Args, "data-dir"); got != e.dataDir {
		t.Errorf("--data-dir = %q, want %q", got, e.dataDir)
	}
	checkHostPathMount(t, pod, node, e.dataDir)
	if sc := node.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Privileged != nil && *sc.Privileged || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("node securityContext %+v: want no privilege escalation, every capability dropped, a read-only root", sc)
	}

	// The headless Service the nodes find each other through.
	svc := headlessService(t, r, e.fullname)
	if svc.Spec.Selector == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("Service %s selector %v does not select the node pods (%v)", svc.Name, svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != e.adminPort || resolvePort(svc.Spec.Ports[0].TargetPort, ports) != e.adminPort {
		t.Errorf("Service %s ports %+v, want the admin port %d", svc.Name, svc.Spec.Ports, e.adminPort)
	}
	if got, want := flagValue(t, node.Args, "bootstrap-dns"), fmt.Sprintf("%s.%s.svc.%s:%d", svc.Name, e.namespace, e.clusterDomain, e.adminPort); got != want {
		t.Errorf("--bootstrap-dns = %q, want %q", got, want)
	}

	// The init container that points containerd at the node.
	init := container(t, pod, "containerd-config")
	checkContainerdConfigArgs(t, init.Args, e)
	checkHostPathMount(t, pod, init, e.hostsDir)

	if e.tracker != nil {
		checkTracker(t, r, e, ds, svc)
	} else if got := flagValues(node.Args, "tracker"); got != nil {
		t.Errorf("--tracker = %q with tracker.enabled false", got)
	}

	if !e.cleanup {
		return
	}
	cleanup := get[appsv1.DaemonSet](t, r, e.fullname+"-cleanup")
	checkCleanupDaemonSet(t, ds, cleanup)
	checkCleanupWait(t, r, e, cleanup)
}

// checkContainerdConfigArgs checks the arguments of shoal containerd-config at install.
func checkContainerdConfigArgs(t *testing.T, args []string, e expect) {
	t.Helper()
	if len(args) == 0 || args[0] != "containerd-config" {
		t.Fatalf("init container args %q, want shoal containerd-config", args)
	}
	if got := flagValue(t, args, "hosts-dir"); got != e.hostsDir {
		t.Errorf("--hosts-dir = %q, want %q", got, e.hostsDir)
	}
	if got, want := flagValue(t, args, "mirror"), fmt.Sprintf("http://127.0.0.1:%d", e.mirrorPort); got != want {
		t.Errorf("--mirror = %q, want %q", got, want)
	}
	if got := flagValues(args, "registry"); !slices.Equal(got, e.registries) {
		t.Errorf("--registry = %q, want %q", got, e.registries)
	}
	if got := slices.Contains(args, "--default"); got != e.defaultHosts {
		t.Errorf("--default given: %v, want %v (args %q)", got, e.defaultHosts, args)
	}
	if slices.Contains(args, "--remove") {
		t.Errorf("install args %q contain --remove", args)
	}
}

// checkCleanupDaemonSet checks that the uninstall cleanup undoes exactly what the node
// DaemonSet's init container did, on the same nodes.
func checkCleanupDaemonSet(t *testing.T, nodeDS, cleanup *appsv1.DaemonSet) {
	t.Helper()
	np, cp := &nodeDS.Spec.Template.Spec, &cleanup.Spec.Template.Spec
	install := container(t, np, "containerd-config")
	remove := container(t, cp, "containerd-config-remove")
	if want := append(slices.Clone(install.Args), "--remove"); !slices.Equal(remove.Args, want) {
		t.Errorf("cleanup args %q, want the install's plus --remove: %q", remove.Args, want)
	}
	if remove.Image != install.Image {
		t.Errorf("cleanup image %q, install image %q", remove.Image, install.Image)
	}
	hostsDir := flagValue(t, install.Args, "hosts-dir")
	checkHostPathMount(t, cp, remove, hostsDir)
	if !reflect.DeepEqual(np.Tolerations, cp.Tolerations) || !reflect.DeepEqual(np.NodeSelector, cp.NodeSelector) ||
		!reflect.DeepEqual(np.Affinity, cp.Affinity) || np.PriorityClassName != cp.PriorityClassName {
		t.Errorf("cleanup pods are scheduled unlike the node pods, so they may miss nodes:\nnode:    %v %v %v %q\ncleanup: %v %v %v %q",
			np.Tolerations, np.NodeSelector, np.Affinity, np.PriorityClassName, cp.Tolerations, cp.NodeSelector, cp.Affinity, cp.PriorityClassName)
	}
	if len(cp.Containers) != 1 {
		t.Errorf("cleanup containers %d, want 1 (it keeps the pod running once the removal is done)", len(cp.Containers))
	}
	// The two DaemonSets must not claim each other's pods.
	nodeSel, err := metav1.LabelSelectorAsSelector(nodeDS.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	cleanupSel, err := metav1.LabelSelectorAsSelector(cleanup.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if nodeSel.Matches(labels.Set(cleanup.Spec.Template.Labels)) || cleanupSel.Matches(labels.Set(nodeDS.Spec.Template.Labels)) {
		t.Errorf("selectors overlap: node %v, cleanup %v", nodeSel, cleanupSel)
	}
	if !cleanupSel.Matches(labels.Set(cleanup.Spec.Template.Labels)) {
		t.Errorf("cleanup selector %v does not match its pods' labels %v", cleanupSel, cleanup.Spec.Template.Labels)
	}
}

// checkCleanupWait checks the hook objects around the cleanup DaemonSet: the Job Helm waits
// for, its permissions, and the hook annotations that order and delete them.
func checkCleanupWait(t *testing.T, r *rendering, e expect, cleanup *appsv1.DaemonSet) {
	t.Helper()
	weights := map[string]int{}
	for _, o := range r.objects {
		h := o.hook()
		if h == "" {
			continue
		}
		if h != "post-delete" {
			t.Errorf("%s/%s: hook %q, want post-delete", o.kind, o.meta.Name, h)
		}
		policy := strings.Split(o.meta.Annotations["helm.sh/hook-delete-policy"], ",")
		if !slices.Contains(policy, "hook-succeeded") || !slices.Contains(policy, "before-hook-creation") {
			t.Errorf("%s/%s: hook-delete-policy %q, want before-hook-creation,hook-succeeded", o.kind, o.meta.Name, policy)
		}
		w, err := strconv.Atoi(o.meta.Annotations["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%s/%s: hook-weight: %v", o.kind, o.meta.Name, err)
		}
		weights[o.kind] = w
	}
	if !(weights["rbac.authorization.k8s.io/v1/RoleBinding"] < weights["apps/v1/DaemonSet"] && weights["apps/v1/DaemonSet"] < weights["batch/v1/Job"]) {
		t.Errorf("hook weights %v: want the permissions first, then the DaemonSet, then the Job that waits for it", weights)
	}

	job := get[batchv1.Job](t, r, e.fullname+"-cleanup-wait")
	js := &job.Spec.Template.Spec
	if len(js.Containers) != 1 {
		t.Fatalf("cleanup Job has %d containers, want 1", len(js.Containers))
	}
	c := js.Containers[0]
	cmd := append(slices.Clone(c.Command), c.Args...)
	if len(cmd) < 4 || !slices.Equal(cmd[:4], []string{"kubectl", "rollout", "status", "daemonset/" + cleanup.Name}) {
		t.Errorf("cleanup Job runs %q, want kubectl rollout status daemonset/%s", cmd, cleanup.Name)
	}
	if got := flagValue(t, cmd, "namespace"); got != e.namespace {
		t.Errorf("cleanup Job --namespace = %q, want %q", got, e.namespace)
	}
	timeout, err := strconv.Atoi(strings.TrimSuffix(flagValue(t, cmd, "timeout"), "s"))
	if err != nil {
		t.Fatalf("cleanup Job --timeout: %v", err)
	}
	if job.Spec.ActiveDeadlineSeconds == nil || *job.Spec.ActiveDeadlineSeconds <= int64(timeout) {
		t.Errorf("cleanup Job activeDeadlineSeconds %v, want more than kubectl's --timeout %ds", job.Spec.ActiveDeadlineSeconds, timeout)
	}
	if js.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("cleanup Job restartPolicy %q, want Never", js.RestartPolicy)
	}

	// The Job's ServiceAccount may read DaemonSets in the namespace.
	rb := get[rbacv1.RoleBinding](t, r, js.ServiceAccountName)
	if len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != js.ServiceAccountName || rb.Subjects[0].Namespace != e.namespace {
		t.Errorf("RoleBinding %s subjects %+v, want the Job's ServiceAccount %s", rb.Name, rb.Subjects, js.ServiceAccountName)
	}
	get[corev1.ServiceAccount](t, r, js.ServiceAccountName)
	role := get[rbacv1.Role](t, r, rb.RoleRef.Name)
	if rb.RoleRef.Kind != "Role" {
		t.Errorf("RoleBinding roleRef %+v, want the Role %s", rb.RoleRef, role.Name)
	}
	allowed := map[string]bool{}
	for _, rule := range role.Rules {
		if slices.Contains(rule.APIGroups, "apps") && slices.Contains(rule.Resources, "daemonsets") {
			for _, v := range rule.Verbs {
				allowed[v] = true
			}
		}
	}
	for _, v := range []string{"get", "list", "watch"} {
		if !allowed[v] {
			t.Errorf("Role %s does not allow %s on daemonsets, which kubectl rollout status needs", role.Name, v)
		}
	}
}

// headlessService returns the nodes' headless Service and checks it is one that lists
// nodes before they are ready.
func headlessService(t *testing.T, r *rendering, name string) *corev1.Service {
	t.Helper()
	svc := get[corev1.Service](t, r, name)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s clusterIP = %q, want None (headless: one DNS record per node)", svc.Name, svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s publishNotReadyAddresses = false: a starting node could not find the others", svc.Name)
	}
	return svc
}

// resolvePort turns a probe's or Service's port, a number or a container port name, into
// the number.
func resolvePort(p intstr.IntOrString, named map[string]int32) int32 {
	if p.Type == intstr.String {
		return named[p.StrVal]
	}
	return p.IntVal
}

// checkHostPathMount checks that c mounts the host directory dir at the same path.
func checkHostPathMount(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, dir string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name {
				if v.HostPath == nil || v.HostPath.Path != dir || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
					t.Errorf("volume %s = %+v, want hostPath %s (DirectoryOrCreate)", v.Name, v.VolumeSource, dir)
				}
				if m.ReadOnly {
					t.Errorf("container %s mounts %s read-only", c.Name, dir)
				}
				return
			}
		}
		t.Errorf("container %s mounts volume %s, which the pod does not have", c.Name, m.Name)
		return
	}
	t.Errorf("container %s does not mount %s (mounts: %+v)", c.Name, dir, c.VolumeMounts)
}

// checkSecretMount checks that the file a flag names is the given key of the given Secret.
func checkSecretMount(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, volume, secret, key, file string, mode int32) {
	t.Helper()
	var vol *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == volume {
			vol = &pod.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret {
		t.Fatalf("volume %s = %+v, want Secret %s", volume, vol, secret)
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("container %s does not mount volume %s", c.Name, volume)
	}
	if len(vol.Secret.Items) != 1 || vol.Secret.Items[0].Key != key ||
		filepath.Join(mount.MountPath, vol.Secret.Items[0].Path) != file {
		t.Errorf("Secret %s mounted as %+v at %s, want key %q at %s", secret, vol.Secret.Items, mount.MountPath, key, file)
	}
	if m := vol.Secret.DefaultMode; m == nil || *m != mode {
		t.Errorf("Secret %s defaultMode = %v, want %#o", secret, m, mode)
	}
}

// checkTracker checks the tracker: a StatefulSet whose every replica has a DNS name of its
// own under a headless Service, probed on /healthz, running as non-root and writing only to
// an emptyDir, with the nodes' private network key; and every node given each replica's
// URL, since trackers share no state.
func checkTracker(t *testing.T, r *rendering, e expect, nodeDS *appsv1.DaemonSet, nodeSvc *corev1.Service) {
	t.Helper()
	te := e.tracker
	sts := get[appsv1.StatefulSet](t, r, te.name)
	// The pods' controller-revision-hash label is the StatefulSet's name and a hash of
	// about 11 characters, and must fit in 63.
	if len(sts.Name) > 52 {
		t.Errorf("StatefulSet name %q is %d characters, want at most 52", sts.Name, len(sts.Name))
	}
	svc := get[corev1.Service](t, r, sts.Spec.ServiceName)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("tracker Service %s clusterIP = %q, want None: the pods' own DNS names need a headless Service", svc.Name, svc.Spec.ClusterIP)
	}
	pod := &sts.Spec.Template.Spec
	podLabels := labels.Set(sts.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		t.Fatalf("StatefulSet selector: %v", err)
	}
	if !sel.Matches(podLabels) {
		t.Errorf("StatefulSet selector %v does not match its pods' labels %v", sel, podLabels)
	}
	if svc.Spec.Selector == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("tracker Service %s selector %v does not select the tracker pods (%v)", svc.Name, svc.Spec.Selector, podLabels)
	}
	// Trackers and nodes apart: the nodes ask every address of their Service for /status.
	nodeSel, err := metav1.LabelSelectorAsSelector(nodeDS.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if nodeSel.Matches(podLabels) || labels.SelectorFromSet(nodeSvc.Spec.Selector).Matches(podLabels) ||
		sel.Matches(labels.Set(nodeDS.Spec.Template.Labels)) || labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(nodeDS.Spec.Template.Labels)) {
		t.Errorf("node and tracker selectors overlap: node %v and Service %v, tracker %v and Service %v (pods: node %v, tracker %v)",
			nodeSel, nodeSvc.Spec.Selector, sel, svc.Spec.Selector, nodeDS.Spec.Template.Labels, podLabels)
	}
	if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) != te.replicas {
		t.Errorf("tracker replicas = %v, want %d", sts.Spec.Replicas, te.replicas)
	}
	if pod.HostNetwork {
		t.Errorf("tracker pod on the host network: it needs none")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("tracker automountServiceAccountToken not false: the tracker does not use the API")
	}
	if toleratesEverything(pod.Tolerations) {
		t.Errorf("tracker tolerations %+v tolerate every taint: that is for the node agent only", pod.Tolerations)
	}

	c := container(t, pod, "tracker")
	if len(c.Args) == 0 || c.Args[0] != "tracker" {
		t.Fatalf("tracker container args %q, want shoal tracker", c.Args)
	}
	if c.Image != te.image {
		t.Errorf("tracker image = %q, want %q", c.Image, te.image)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			t.Errorf("tracker port %s has hostPort %d: it needs none", p.Name, p.HostPort)
		}
		ports[p.Name] = p.ContainerPort
	}
	if want := map[string]int32{"http": te.port, "p2p": te.p2pPort}; !reflect.DeepEqual(ports, want) {
		t.Errorf("tracker container ports = %v, want %v", ports, want)
	}
	listen := flagValue(t, c.Args, "listen")
	if host, port, err := net.SplitHostPort(listen); err != nil || host != "" || port != strconv.Itoa(int(te.port)) {
		t.Errorf("tracker --listen = %q, want :%d (every address of the pod)", listen, te.port)
	}
	if got, want := flagValues(c.Args, "p2p-listen"), fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", te.p2pPort); !slices.Contains(got, want) {
		t.Errorf("tracker --p2p-listen = %q, want %q among them", got, want)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
	}{
		{"readiness", c.ReadinessProbe},
		{"liveness", c.LivenessProbe},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("tracker %s probe = %+v, want an HTTP GET of /healthz", p.name, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != "/healthz" || resolvePort(g.Port, ports) != te.port || g.Host != "" {
			t.Errorf("tracker %s probe GET %s on port %s (host %q), want /healthz on the HTTP port %d", p.name, g.Path, g.Port.String(), g.Host, te.port)
		}
	}
	checkEmptyDirMount(t, pod, c, flagValue(t, c.Args, "data-dir"))
	if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("tracker securityContext %+v: want a non-root user, no privilege escalation, every capability dropped, a read-only root", sc)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("tracker resources %+v: no memory limit", c.Resources)
	}
	node := container(t, &nodeDS.Spec.Template.Spec, "node")
	for _, flag := range []string{"log-format", "log-level"} {
		if got, want := flagValue(t, c.Args, flag), flagValue(t, node.Args, flag); got != want {
			t.Errorf("tracker --%s = %q, the nodes' %q", flag, got, want)
		}
	}

	// The nodes' private network key, when they have one: readable by the tracker's user
	// through the pod's fsGroup.
	if nodeKey := flagValues(node.Args, "psk"); nodeKey != nil {
		var secret, key string
		for _, v := range nodeDS.Spec.Template.Spec.Volumes {
			if v.Name == "psk" && v.Secret != nil && len(v.Secret.Items) == 1 {
				secret, key = v.Secret.SecretName, v.Secret.Items[0].Key
			}
		}
		checkSecretMount(t, pod, c, "psk", secret, key, flagValue(t, c.Args, "psk"), 0o440)
		if pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil {
			t.Errorf("tracker pod securityContext %+v: no fsGroup, so its non-root user cannot read the key", pod.SecurityContext)
		}
		if nodeDS.Spec.Template.Annotations["checksum/psk"] != sts.Spec.Template.Annotations["checksum/psk"] {
			t.Errorf("checksum/psk annotations: nodes %q, tracker %q; a new key must restart both", nodeDS.Spec.Template.Annotations["checksum/psk"], sts.Spec.Template.Annotations["checksum/psk"])
		}
	} else if got := flagValues(c.Args, "psk"); got != nil {
		t.Errorf("tracker --psk = %q, but the nodes have no key", got)
	}

	// The headless Service does not forward: its ports name the pods' own.
	svcPorts := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		if p.Port != resolvePort(p.TargetPort, ports) {
			t.Errorf("tracker Service port %s: %d, target %s; a headless Service's clients reach the target port", p.Name, p.Port, p.TargetPort.String())
		}
		svcPorts[p.Name] = p.Port
	}
	if !reflect.DeepEqual(svcPorts, ports) {
		t.Errorf("tracker Service ports %v, want the pods' %v", svcPorts, ports)
	}

	// Each node reaches each replica at its own name, <pod>.<service>.<namespace>.svc.<domain>.
	var want []string
	for i := range te.replicas {
		host := fmt.Sprintf("%s-%d", sts.Name, i)
		if len(host) > 63 {
			t.Errorf("tracker pod name %q is longer than a DNS label", host)
		}
		want = append(want, fmt.Sprintf("http://%s.%s.%s.svc.%s:%d", host, svc.Name, e.namespace, e.clusterDomain, ports["http"]))
	}
	if got := flagValues(node.Args, "tracker"); !slices.Equal(got, want) {
		t.Errorf("node --tracker = %q, want %q", got, want)
	}
	if flagValue(t, node.Args, "bootstrap-dns") == "" {
		t.Errorf("node --bootstrap-dns empty: nodes must find each other with the tracker down too")
	}
}

// checkEmptyDirMount checks that c mounts an emptyDir, writable, at dir.
func checkEmptyDirMount(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, dir string) {
	t.Helper()
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
	if i < 0 {
		t.Errorf("container %s does not mount %s (mounts: %+v)", c.Name, dir, c.VolumeMounts)
		return
	}
	m := c.VolumeMounts[i]
	j := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
	if j < 0 || pod.Volumes[j].EmptyDir == nil {
		t.Errorf("container %s mounts %s from volume %s, want an emptyDir (volumes: %+v)", c.Name, dir, m.Name, pod.Volumes)
	}
	if m.ReadOnly {
		t.Errorf("container %s mounts %s read-only", c.Name, dir)
	}
}
