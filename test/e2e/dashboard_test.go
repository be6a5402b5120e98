package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/shoal-dev/shoal/test/internal/harness"
)

// dashboard is the part of a Grafana dashboard JSON model the test reads.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Inputs        []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []dashboardVar `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
}

// queryText is the variable's query: a string, or {"query": "..."} in newer dashboards.
func (v dashboardVar) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &q) != nil {
		return "" // neither form: the test reports the empty query
	}
	return q.Query
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *datasourceRef   `json:"datasource"`
	Targets    []dashboardQuery `json:"targets"`
	Panels     []dashboardPanel `json:"panels"` // a collapsed row's panels
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type dashboardQuery struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// family is what a node exports under one metric name: its type and, per label, the values
// seen.
type family struct {
	typ    dto.MetricType
	labels map[string]map[string]bool
}

// shoalMetric matches the name of a shoal metric in a query.
var shoalMetric = regexp.MustCompile(`shoal_[a-z0-9_]+`)

// grafanaDurations stand in for Grafana's own range variables so that PromQL parses.
var grafanaDurations = map[string]string{
	"$__rate_interval": "5m",
	"$__interval":      "1m",
	"$__range":         "1h",
}

// TestDashboard checks deploy/grafana/shoal-dashboard.json: it is an importable dashboard
// whose every panel queries a Prometheus data source chosen by a variable, filtered by a
// node variable, in PromQL that parses, and about metrics and labels that real nodes export
// (two nodes of a fleet, after a pull through each so that every lazily created series
// exists).
func TestDashboard(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "deploy", "grafana", "shoal-dashboard.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: Grafana wants all three", d.UID, d.Title, d.SchemaVersion)
	}

	// The data source: a templated datasource variable, or an import input.
	datasources := map[string]bool{}
	nodeVar := ""
	var varQueries []string
	for _, v := range d.Templating.List {
		switch {
		case v.Type == "datasource" && v.queryText() == "prometheus":
			datasources["${"+v.Name+"}"] = true
			datasources["$"+v.Name] = true
		case v.Type == "query" && (v.Name == "node" || v.Name == "instance"):
			nodeVar = v.Name
			q := cmp.Or(v.queryText(), v.Definition)
			if !strings.Contains(q, "instance") {
				t.Errorf("variable %s: query %q does not list instances", v.Name, q)
			}
			varQueries = append(varQueries, q)
		}
	}
	for _, in := range d.Inputs {
		if in.Type == "datasource" && in.PluginID == "prometheus" {
			datasources["${"+in.Name+"}"] = true
		}
	}
	if len(datasources) == 0 {
		t.Fatalf("no Prometheus datasource variable (type datasource, query prometheus) nor __inputs DS_PROMETHEUS")
	}
	if nodeVar == "" {
		t.Fatalf("no node (or instance) query variable")
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (v.Datasource == nil || !datasources[v.Datasource.UID]) {
			t.Errorf("variable %s: datasource %+v is not the Prometheus variable", v.Name, v.Datasource)
		}
	}
	checkDS := func(what string, ref *datasourceRef) {
		if ref == nil || ref.Type != "prometheus" || !datasources[ref.UID] {
			t.Errorf("%s: datasource %+v, want {type: prometheus, uid: one of %v}", what, ref, slices.Sorted(maps.Keys(datasources)))
		}
	}

	// Every panel: a datasource, queries with one, on the grid.
	type query struct{ where, expr string }
	var queries []query
	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, ok := ids[p.ID]; ok || p.ID == 0 {
				t.Errorf("%s: id %d is missing or also that of %q", what, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: gridPos %+v does not fit Grafana's 24 columns", what, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			checkDS(what, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", what)
			}
			refs := map[string]bool{}
			for _, q := range p.Targets {
				checkDS(what+" target "+q.RefID, q.Datasource)
				if q.RefID == "" || refs[q.RefID] {
					t.Errorf("%s: target refId %q missing or repeated", what, q.RefID)
				}
				refs[q.RefID] = true
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("%s target %s: no expr", what, q.RefID)
					continue
				}
				queries = append(queries, query{what + " target " + q.RefID, q.Expr})
			}
		}
	}
	walk(d.Panels)

	// Every query parses as PromQL once Grafana's variables are replaced, and selects only
	// shoal metrics of the selected nodes.
	type selector struct {
		where string
		sel   *parser.VectorSelector
	}
	type grouping struct {
		where string
		by    []string
		names []string // metrics under the aggregation
	}
	var selectors []selector
	var groupings []grouping
	textNames := map[string]string{} // metric names found by regexp, to where
	p := parser.NewParser(parser.Options{})
	for _, q := range queries {
		for _, m := range shoalMetric.FindAllString(q.expr, -1) {
			textNames[m] = q.where
		}
		expr, err := p.ParseExpr(grafanaExpand(q.expr))
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.VectorSelector:
				selectors = append(selectors, selector{q.where, n})
			case *parser.AggregateExpr:
				if len(n.Grouping) > 0 && !n.Without {
					var names []string
					parser.Inspect(n.Expr, func(m parser.Node, _ []parser.Node) error {
						if vs, ok := m.(*parser.VectorSelector); ok {
							names = append(names, vs.Name)
						}
						return nil
					})
					groupings = append(groupings, grouping{q.where, n.Grouping, names})
				}
			}
			return nil
		})
	}
	for _, s := range selectors {
		if !strings.HasPrefix(s.sel.Name, "shoal_") {
			t.Errorf("%s: selects %q, not a shoal metric", s.where, s.sel.String())
		}
		if !slices.ContainsFunc(s.sel.LabelMatchers, func(m *labels.Matcher) bool {
			return m.Name == "instance" && m.Type == labels.MatchRegexp && (m.Value == "$"+nodeVar || m.Value == "${"+nodeVar+"}")
		}) {
			t.Errorf("%s: %s does not filter on instance=~\"$%s\"", s.where, s.sel.String(), nodeVar)
		}
	}

	// The panels the dashboard is for.
	for _, want := range []string{
		"shoal_blob_served_bytes_total", "shoal_blob_fetched_bytes_total", "shoal_origin_bytes_saved_total",
		"shoal_dht_find_duration_seconds_bucket", "shoal_chunk_failures_total", "shoal_peer_bans_total",
		"shoal_store_bytes", "shoal_store_capacity_bytes", "shoal_store_evictions_total",
		"shoal_chunk_uploaded_bytes_total", "shoal_p2p_peers", "shoal_registry_requests_total", "shoal_downloads_active",
	} {
		if _, ok := textNames[want]; !ok {
			t.Errorf("no panel queries %s", want)
		}
	}
	if t.Failed() {
		return
	}

	// What real nodes export.
	exported := fleetMetrics(t)
	familyOf := func(name string) (string, family, bool) {
		if f, ok := exported[name]; ok {
			return name, f, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base, ok := strings.CutSuffix(name, suffix)
			if f, found := exported[base]; ok && found && (f.typ == dto.MetricType_HISTOGRAM || f.typ == dto.MetricType_SUMMARY) && (suffix != "_bucket" || f.typ == dto.MetricType_HISTOGRAM) {
				return base, f, true
			}
		}
		return "", family{}, false
	}
	for _, name := range slices.Sorted(maps.Keys(textNames)) {
		if _, _, ok := familyOf(name); !ok {
			var shoal []string
			for n := range exported {
				if strings.HasPrefix(n, "shoal_") {
					shoal = append(shoal, n)
				}
			}
			slices.Sort(shoal)
			t.Errorf("%s: %s is not a metric a node exports (it exports %v)", textNames[name], name, shoal)
		}
	}
	for _, q := range varQueries {
		for _, m := range shoalMetric.FindAllString(q, -1) {
			if _, _, ok := familyOf(m); !ok {
				t.Errorf("variable %s: %s is not a metric a node exports", nodeVar, m)
			}
		}
	}
	// Prometheus adds instance and job to every series it scrapes; buckets carry le.
	scrapeLabels := map[string]bool{"instance": true, "job": true}
	for _, s := range selectors {
		base, f, ok := familyOf(s.sel.Name)
		if !ok {
			continue
		}
		for _, m := range s.sel.LabelMatchers {
			if m.Name == model.MetricNameLabel || scrapeLabels[m.Name] || m.Name == "le" && base != s.sel.Name {
				continue
			}
			values, ok := f.labels[m.Name]
			switch {
			case !ok:
				t.Errorf("%s: %s has no label %s (it has %v)", s.where, base, m.Name, slices.Sorted(maps.Keys(f.labels)))
			case m.Type == labels.MatchEqual && !values[m.Value]:
				t.Errorf("%s: %s{%s=%q}: the node exports %s values %v", s.where, base, m.Name, m.Value, m.Name, slices.Sorted(maps.Keys(values)))
			}
		}
	}
	for _, g := range groupings {
		for _, l := range g.by {
			if scrapeLabels[l] {
				continue
			}
			found := slices.ContainsFunc(g.names, func(name string) bool {
				base, f, ok := familyOf(name)
				_, has := f.labels[l]
				return ok && (has || l == "le" && base != name)
			})
			if !found {
				t.Errorf("%s: by (%s): no metric under the aggregation (%v) has the label %s", g.where, strings.Join(g.by, ", "), g.names, l)
			}
		}
	}
}

// grafanaExpand replaces Grafana's duration variables with durations. Other variables may
// appear only inside label matcher strings, where PromQL takes them as they are.
func grafanaExpand(expr string) string {
	for k, v := range grafanaDurations {
		expr = strings.ReplaceAll(expr, "${"+strings.TrimPrefix(k, "$")+"}", v)
		expr = strings.ReplaceAll(expr, k, v)
	}
	return expr
}

// fleetMetrics runs two nodes of a fleet against a real registry, pulls an image through
// the second (from the origin), then through the first (from its peer), then through the
// second again (from its cache), and returns the union of what both export on /metrics.
func fleetMetrics(t *testing.T) map[string]family {
	t.Helper()
	o := startOrigin(t)
	im := o.push(t, "dashboard/app", "v1", 2, 512<<10)
	first, boot := o.startSeed(t, harness.NodeOptions{})
	second := o.join(t, boot, 1, harness.NodeOptions{})[0]

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, n := range []*harness.Node{second, first, second} {
		if err := harness.PullThrough(ctx, n.URL, im); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]family{}
	for _, n := range []*harness.Node{first, second} {
		m, err := n.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for name, mf := range m {
			f, ok := out[name]
			if !ok {
				f = family{typ: mf.GetType(), labels: map[string]map[string]bool{}}
				out[name] = f
			}
			for _, metric := range mf.GetMetric() {
				for _, lp := range metric.GetLabel() {
					if f.labels[lp.GetName()] == nil {
						f.labels[lp.GetName()] = map[string]bool{}
					}
					f.labels[lp.GetName()][lp.GetValue()] = true
				}
			}
		}
	}
	// The series the dashboard cannot do without only exist once something happened: check
	// that the pulls above made them, or the name check would prove little.
	for _, name := range []string{"shoal_dht_find_duration_seconds", "shoal_registry_requests_total", "shoal_origin_bytes_saved_total"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("after pulls through a fleet of two, no node exports %s", name)
		}
	}
	return out
}
