// Package monitoring reads the dashboards and alert rules under deploy/
// (Grafana JSON, Prometheus rule files) and names the metrics their PromQL
// uses, so tests can check them against promtool and a real Prometheus.
package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Expr is one PromQL expression and where it was found.
type Expr struct {
	Where  string // file and panel/target or rule name
	PromQL string
}

// Dashboard is the part of a Grafana dashboard the checks read.
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel (rows may nest panels).
type Panel struct {
	ID         int             `json:"id"`
	Title      string          `json:"title"`
	Type       string          `json:"type"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []Panel `json:"panels"`
}

// Variable is a templating variable.
type Variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

// LoadDashboards parses every *.json under dir (sorted by name).
func LoadDashboards(dir string) (map[string]*Dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no dashboard (*.json)", dir)
	}
	out := map[string]*Dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		d := &Dashboard{}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out[f] = d
	}
	return out, nil
}

// Exprs lists every target expression of d's panels (nested ones too) and
// every query variable's query.
func (d *Dashboard) Exprs(file string) []Expr {
	var out []Expr
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) != "" {
					out = append(out, Expr{Where: fmt.Sprintf("%s: panel %d %q target %s", file, p.ID, p.Title, t.RefID), PromQL: t.Expr})
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := VariableQuery(v.Query)
		if inner, ok := strings.CutPrefix(q, "label_values("); ok {
			// label_values(metric{...}, label): the series selector is PromQL.
			inner = strings.TrimSuffix(inner, ")")
			if i := strings.LastIndex(inner, ","); i > 0 {
				out = append(out, Expr{Where: fmt.Sprintf("%s: variable %s", file, v.Name), PromQL: inner[:i]})
			}
		}
	}
	return out
}

// VariableQuery is a query variable's query, a string or {"query": ...}.
func VariableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Query
}

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []Rule `yaml:"rules"`
	} `yaml:"groups"`
}

// Rule is an alerting or recording rule.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// LoadRules parses a rule file.
func LoadRules(path string) (*RuleFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rf := &RuleFile{}
	if err := yaml.Unmarshal(b, rf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rf, nil
}

// Exprs lists every rule's expression.
func (rf *RuleFile) Exprs(file string) []Expr {
	var out []Expr
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			out = append(out, Expr{Where: fmt.Sprintf("%s: %s/%s", file, g.Name, name), PromQL: r.Expr})
		}
	}
	return out
}

var (
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchers  = regexp.MustCompile(`\{[^{}]*\}`)
	grouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	rangeSel  = regexp.MustCompile(`\[[^\[\]]*\]`)
	ident     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// Grafana's variables: $name, ${name}, ${name:fmt}, [[name]].
	grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\]`)
)

// keywords are PromQL words that are not metric names.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "offset": true, "bool": true, "inf": true, "nan": true, "atan2": true,
}

// Grafana replaces a dashboard's variables before the query reaches
// Prometheus; Substitute does the same with harmless values so the result
// parses: intervals become 5m, anything else a plain word.
func Substitute(q string) string { return SubstituteWith(q, nil) }

// SubstituteWith is Substitute with the values of some variables given
// (e.g. tenant: acme), as a user picking them would.
func SubstituteWith(q string, vars map[string]string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		n := strings.Trim(v, "${}[]")
		n, _, _ = strings.Cut(n, ":")
		if val, ok := vars[n]; ok {
			return val
		}
		switch n {
		case "__rate_interval", "__interval", "__range", "interval":
			return "5m"
		case "__range_s", "__interval_ms", "__range_ms":
			return "300"
		}
		return "x"
	})
}

// MetricNames are the metric names q selects (recording rule names, with
// a colon, included), sorted. q must be PromQL (Substitute Grafana's
// variables first). Function names are told apart by the "(" after them.
func MetricNames(q string) []string {
	q = stringLit.ReplaceAllString(q, `""`)
	for {
		r := matchers.ReplaceAllString(q, " ")
		r = grouping.ReplaceAllString(r, " ")
		if r == q {
			break
		}
		q = r
	}
	q = rangeSel.ReplaceAllString(q, " ")
	seen := map[string]bool{}
	for _, loc := range ident.FindAllStringIndex(q, -1) {
		w := q[loc[0]:loc[1]]
		if loc[0] > 0 && (q[loc[0]-1] >= '0' && q[loc[0]-1] <= '9' || q[loc[0]-1] == '.') {
			continue // the unit of a duration or a number's exponent
		}
		rest := strings.TrimLeft(q[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || keywords[strings.ToLower(w)] {
			continue
		}
		seen[w] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
