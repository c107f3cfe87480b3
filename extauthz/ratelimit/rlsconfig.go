package ratelimit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"gopkg.in/yaml.v3"
)

// RLSConfig is a set of envoyproxy/ratelimit configuration files (their
// format, unchanged: one domain per file, nested descriptors), immutable
// once loaded. Limits of this format count in fixed windows, as
// envoyproxy/ratelimit does, so the same requests get the same answers.
type RLSConfig struct {
	domains map[string]*rlsNode
	files   []string
	limits  int
}

// rlsNode is one level of a domain's descriptor tree: its children by
// "key" or "key_value", the wildcard children (values containing '*') in
// file order, and its limit if any.
type rlsNode struct {
	children  map[string]*rlsNode
	wildcards []rlsWildcard
	limit     *RLSLimit
}

type rlsWildcard struct {
	key   string   // the child's map key, e.g. "path_/api/*"
	parts []string // key split on '*'
}

// RLSLimit is one descriptor's rate_limit.
type RLSLimit struct {
	// FullKey is the descriptor path, e.g. "mydomain.key1_value1.key2".
	FullKey         string
	RequestsPerUnit uint32
	Unit            rlsv3.RateLimitResponse_RateLimit_Unit
	Unlimited       bool
	ShadowMode      bool
	Name            string
	Replaces        []string
	DetailedMetric  bool
}

// Window is the fixed window of the limit's unit (as envoyproxy/ratelimit
// divides time: month is 30 days, year 365).
func (l *RLSLimit) Window() time.Duration { return rlsUnitWindow(l.Unit) }

func rlsUnitWindow(u rlsv3.RateLimitResponse_RateLimit_Unit) time.Duration {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_SECOND:
		return time.Second
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return time.Minute
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return time.Hour
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 24 * time.Hour
	case rlsv3.RateLimitResponse_RateLimit_WEEK:
		return 7 * 24 * time.Hour
	case rlsv3.RateLimitResponse_RateLimit_MONTH:
		return 30 * 24 * time.Hour
	case rlsv3.RateLimitResponse_RateLimit_YEAR:
		return 365 * 24 * time.Hour
	}
	return 0
}

// The keys envoyproxy/ratelimit's files may use. quota_mode,
// value_to_metric, share_threshold and metadata are accepted and do not
// change decisions here (they are stats and quota-mode features of theirs
// that kailash does not implement; see docs/integrations.md).
var rlsValidKeys = map[string]bool{
	"domain": true, "key": true, "value": true, "descriptors": true, "rate_limit": true,
	"unit": true, "requests_per_unit": true, "unlimited": true, "shadow_mode": true,
	"quota_mode": true, "name": true, "replaces": true, "detailed_metric": true,
	"value_to_metric": true, "share_threshold": true, "metadata": true,
}

type rlsYAMLRoot struct {
	Domain      string        `yaml:"domain"`
	Descriptors []rlsYAMLDesc `yaml:"descriptors"`
}

type rlsYAMLDesc struct {
	Key            string         `yaml:"key"`
	Value          string         `yaml:"value"`
	RateLimit      *rlsYAMLLimit  `yaml:"rate_limit"`
	Descriptors    []rlsYAMLDesc  `yaml:"descriptors"`
	ShadowMode     bool           `yaml:"shadow_mode"`
	QuotaMode      bool           `yaml:"quota_mode"`
	DetailedMetric bool           `yaml:"detailed_metric"`
	ValueToMetric  bool           `yaml:"value_to_metric"`
	ShareThreshold bool           `yaml:"share_threshold"`
	Metadata       map[string]any `yaml:"metadata"`
}

type rlsYAMLLimit struct {
	RequestsPerUnit uint32 `yaml:"requests_per_unit"`
	Unit            string `yaml:"unit"`
	Unlimited       bool   `yaml:"unlimited"`
	Name            string `yaml:"name"`
	Replaces        []struct {
		Name string `yaml:"name"`
	} `yaml:"replaces"`
}

// LoadRLSConfig reads path: one envoyproxy/ratelimit YAML file, or a
// directory whose *.yaml and *.yml files are all read (their
// RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config directory; subdirectories and
// hidden files are skipped). Errors name the file, the line and the
// descriptor path.
func LoadRLSConfig(path string) (*RLSConfig, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("rls config: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("rls config: %w", err)
		}
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || strings.HasPrefix(n, ".") || (filepath.Ext(n) != ".yaml" && filepath.Ext(n) != ".yml") {
				continue
			}
			files = append(files, filepath.Join(path, n))
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("rls config: %s: no *.yaml files", path)
		}
	}
	c := &RLSConfig{domains: map[string]*rlsNode{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("rls config: %w", err)
		}
		if err := c.add(f, b); err != nil {
			return nil, err
		}
	}
	c.files = files
	return c, nil
}

// ParseRLSConfig loads files given as name → content (tests, translate).
func ParseRLSConfig(files map[string][]byte) (*RLSConfig, error) {
	c := &RLSConfig{domains: map[string]*rlsNode{}}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := c.add(n, files[n]); err != nil {
			return nil, err
		}
	}
	c.files = names
	return c, nil
}

// Files are the files read, in order.
func (c *RLSConfig) Files() []string { return c.files }

// Len is the number of descriptors with a rate_limit.
func (c *RLSConfig) Len() int { return c.limits }

// Has reports whether domain is configured.
func (c *RLSConfig) Has(domain string) bool { _, ok := c.domains[domain]; return ok }

func (c *RLSConfig) add(file string, b []byte) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		return fmt.Errorf("%s: error loading config file: %w", file, err)
	}
	if err := rlsCheckKeys(file, "", &doc); err != nil {
		return err
	}
	var root rlsYAMLRoot
	if err := doc.Decode(&root); err != nil {
		return fmt.Errorf("%s: error loading config file: %w", file, err)
	}
	if root.Domain == "" {
		return fmt.Errorf("%s: config file cannot have empty domain", file)
	}
	if _, dup := c.domains[root.Domain]; dup {
		return fmt.Errorf("%s: duplicate domain '%s' in config file", file, root.Domain)
	}
	n := &rlsNode{children: map[string]*rlsNode{}}
	if err := c.load(file, n, root.Domain+".", "descriptors", root.Descriptors); err != nil {
		return err
	}
	c.domains[root.Domain] = n
	return nil
}

// rlsCheckKeys refuses keys envoyproxy/ratelimit refuses, naming the YAML
// path and line.
func rlsCheckKeys(file, path string, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := rlsCheckKeys(file, path, c); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if !rlsValidKeys[k.Value] {
				return fmt.Errorf("%s:%d:%d: %s: config error, unknown key '%s'", file, k.Line, k.Column, p, k.Value)
			}
			if k.Value == "metadata" {
				continue // free-form
			}
			if err := rlsCheckKeys(file, p, v); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			if e.Kind != yaml.MappingNode {
				return fmt.Errorf("%s:%d:%d: %s[%d]: config error, yaml file contains list of type other than map", file, e.Line, e.Column, path, i)
			}
			if err := rlsCheckKeys(file, fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *RLSConfig) load(file string, parent *rlsNode, parentKey, yamlPath string, ds []rlsYAMLDesc) error {
	for i, d := range ds {
		at := fmt.Sprintf("%s[%d]", yamlPath, i)
		if d.Key == "" {
			return fmt.Errorf("%s: %s: descriptor has empty key", file, at)
		}
		k := d.Key
		if d.Value != "" {
			k += "_" + d.Value
		}
		full := parentKey + k
		where := fmt.Sprintf("%s: %s (%s)", file, at, full)
		if _, dup := parent.children[k]; dup {
			return fmt.Errorf("%s: duplicate descriptor composite key '%s'", where, full)
		}
		var lim *RLSLimit
		if rl := d.RateLimit; rl != nil {
			u, ok := rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(rl.Unit)]
			valid := ok && u != int32(rlsv3.RateLimitResponse_RateLimit_UNKNOWN)
			switch {
			case rl.Unlimited && valid:
				return fmt.Errorf("%s: should not specify rate limit unit when unlimited", where)
			case !rl.Unlimited && !valid:
				return fmt.Errorf("%s: invalid rate limit unit '%s' (want second, minute, hour, day, week, month or year)", where, rl.Unit)
			}
			lim = &RLSLimit{
				FullKey: full, RequestsPerUnit: rl.RequestsPerUnit, Unit: rlsv3.RateLimitResponse_RateLimit_Unit(u),
				Unlimited: rl.Unlimited, ShadowMode: d.ShadowMode, Name: rl.Name, DetailedMetric: d.DetailedMetric,
			}
			for _, r := range rl.Replaces {
				if r.Name == "" {
					return fmt.Errorf("%s: should not have an empty replaces entry", where)
				}
				if r.Name == rl.Name {
					return fmt.Errorf("%s: replaces should not contain name of same descriptor", where)
				}
				lim.Replaces = append(lim.Replaces, r.Name)
			}
			c.limits++
		}
		if d.ShareThreshold && !strings.Contains(k, "*") {
			return fmt.Errorf("%s: share_threshold can only be used with wildcard values (containing '*'), but found key '%s'", where, k)
		}
		if strings.Contains(k, "*") {
			parent.wildcards = append(parent.wildcards, rlsWildcard{key: k, parts: strings.Split(k, "*")})
		}
		child := &rlsNode{children: map[string]*rlsNode{}, limit: lim}
		if err := c.load(file, child, full+".", at+".descriptors", d.Descriptors); err != nil {
			return err
		}
		parent.children[k] = child
	}
	return nil
}

// wildcardMatch reports whether value matches the pattern split on '*'
// (each '*' matches any run of characters, possibly empty).
func wildcardMatch(parts []string, value string) bool {
	if len(parts) == 1 {
		return parts[0] == value
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(value) < len(first)+len(last) || !strings.HasPrefix(value, first) || !strings.HasSuffix(value, last) {
		return false
	}
	rest := value[len(first) : len(value)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}

// Limit finds the limit of descriptor d in domain, as envoyproxy/ratelimit
// does: level by level, "key_value" first, then a wildcard value in file
// order, then the key-only default; the limit applies only if it sits at
// the level of the descriptor's last entry. nil: no limit.
func (c *RLSConfig) Limit(domain string, d *rlcommonv3.RateLimitDescriptor) *RLSLimit {
	n := c.domains[domain]
	if n == nil {
		return nil
	}
	var found *RLSLimit
	es := d.GetEntries()
	for i, e := range es {
		kv := e.GetKey() + "_" + e.GetValue()
		next := n.children[kv]
		if next == nil {
			for _, w := range n.wildcards {
				if wildcardMatch(w.parts, kv) {
					next = n.children[w.key]
					break
				}
			}
		}
		if next == nil {
			next = n.children[e.GetKey()]
		}
		if next != nil && next.limit != nil && i == len(es)-1 {
			found = next.limit
		}
		if next == nil || len(next.children) == 0 {
			break
		}
		n = next
	}
	return found
}
