package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/policies"
)

// OPA's config file (`opa run --server --config-file opa.yaml`) in drop-in
// mode: the parts that map onto kailash authz are applied, every other key
// is refused by name (never silently ignored: a credential or signing key
// left out would change what is trusted).
//
// Supported: plugins.envoy_ext_authz_grpc (addr, path, query, dry-run,
// enable-reflection, skip-request-body-parse, enable-performance-metrics),
// decision_logs.console, services[].url with one bundles entry (service,
// resource, polling, persist) and persistence_directory, labels.

type opaConfig struct {
	Services             yaml.Node            `yaml:"services"`
	Bundles              map[string]opaBundle `yaml:"bundles"`
	DecisionLogs         *opaDecisionLogs     `yaml:"decision_logs"`
	Plugins              map[string]yaml.Node `yaml:"plugins"`
	PersistenceDirectory string               `yaml:"persistence_directory"`
	Labels               map[string]string    `yaml:"labels"`
	Keys                 map[string]opaKey    `yaml:"keys"`
	Status               *struct {
		Service       string `yaml:"service"`
		PartitionName string `yaml:"partition_name"`
		Console       bool   `yaml:"console"`
		Trigger       string `yaml:"trigger"`
		Prometheus    bool   `yaml:"prometheus"`
	} `yaml:"status"`
}

type opaBundle struct {
	Service  string `yaml:"service"`
	Resource string `yaml:"resource"`
	Persist  bool   `yaml:"persist"`
	Polling  struct {
		MinDelaySeconds int `yaml:"min_delay_seconds"`
		MaxDelaySeconds int `yaml:"max_delay_seconds"`
	} `yaml:"polling"`
	Signing *struct {
		KeyID string `yaml:"keyid"`
		Scope string `yaml:"scope"`
	} `yaml:"signing"`
}

// opaKey is one of OPA's bundle verification keys.
type opaKey struct {
	Algorithm string `yaml:"algorithm"`
	Key       string `yaml:"key"`
	Scope     string `yaml:"scope"`
}

type opaDecisionLogs struct {
	Console bool `yaml:"console"`
	// Service uploads the decisions (OPA's format, gzip) to the service's
	// url + Resource (default /logs).
	Service      string `yaml:"service"`
	Resource     string `yaml:"resource"`
	MaskDecision string `yaml:"mask_decision"`
	Reporting    *struct {
		MinDelaySeconds      int `yaml:"min_delay_seconds"`
		MaxDelaySeconds      int `yaml:"max_delay_seconds"`
		UploadSizeLimitBytes int `yaml:"upload_size_limit_bytes"`
		BufferSizeLimitBytes int `yaml:"buffer_size_limit_bytes"`
	} `yaml:"reporting"`
}

type opaEnvoyPlugin struct {
	Addr                     string `yaml:"addr"`
	Path                     string `yaml:"path"`
	Query                    string `yaml:"query"`
	DryRun                   bool   `yaml:"dry-run"`
	EnableReflection         bool   `yaml:"enable-reflection"`
	SkipRequestBodyParse     bool   `yaml:"skip-request-body-parse"`
	EnablePerformanceMetrics bool   `yaml:"enable-performance-metrics"`
}

// opaUnsupported names keys OPA knows that kailash authz does not (yet),
// with what to use instead.
var opaUnsupported = map[string]string{
	"discovery":                      "discovery bundles are not supported",
	"server":                         "OPA's REST API is not served",
	"default_decision":               "OPA's REST API is not served",
	"default_authorization_decision": "OPA's REST API is not served",
	"caching":                        "not supported",
	"distributed_tracing":            "not supported",
	"storage":                        "not supported",
	"extra":                          "not supported",
	"nd_builtin_cache":               "not supported",
	"persist":                        "not supported",
}

// applyOPAConfig reads an OPA config file into d.
func (d *dropInFlags) applyOPAConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("authz: --config-file: %w", err)
	}
	b = expandEnv(b) // ${VAR}, as OPA substitutes
	fail := func(format string, args ...any) error {
		return fmt.Errorf("authz: %s: %s", path, fmt.Sprintf(format, args...))
	}
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(b, &top); err != nil {
		return fail("%v", err)
	}
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if why, ok := opaUnsupported[k]; ok {
			return fail("%s: %s", k, why)
		}
		switch k {
		case "services", "bundles", "decision_logs", "plugins", "persistence_directory", "labels", "keys", "status":
		default:
			return fail("%s: unknown key", k)
		}
	}
	var c opaConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return fail("%v (supported: services (url, headers, tls, credentials bearer/client_tls/oauth2), bundles.<name>.{service,resource,persist,polling,signing}, keys, decision_logs.{console,service,resource,reporting}, plugins.envoy_ext_authz_grpc)", err)
	}
	for name, n := range c.Plugins {
		if name != "envoy_ext_authz_grpc" {
			return fail("plugins.%s: only envoy_ext_authz_grpc is supported", name)
		}
		var p opaEnvoyPlugin
		if err := decodeStrict(&n, &p); err != nil {
			return fail("plugins.envoy_ext_authz_grpc: %v", err)
		}
		if p.Addr != "" {
			d.grpcAddr = p.Addr
		}
		switch {
		case p.Path != "" && p.Query != "":
			return fail("plugins.envoy_ext_authz_grpc: give path or query, not both")
		case p.Path != "":
			d.decision = strings.TrimPrefix(p.Path, "/")
		case p.Query != "":
			q := strings.TrimPrefix(p.Query, "data.")
			if q == p.Query {
				return fail("plugins.envoy_ext_authz_grpc.query: %q: want data.<path>", p.Query)
			}
			d.decision = strings.ReplaceAll(q, ".", "/")
		}
		d.dryRun = d.dryRun || p.DryRun
		d.skipBodyParse = d.skipBodyParse || p.SkipRequestBodyParse
		d.reflection = d.reflection || p.EnableReflection
	}
	if c.DecisionLogs != nil && c.DecisionLogs.Console {
		d.decisionLog = "console"
	}
	if c.DecisionLogs != nil {
		d.maskDecision = c.DecisionLogs.MaskDecision
	}
	d.labels = c.Labels
	if len(c.Bundles) > 1 {
		return fail("bundles: only one bundle is supported")
	}
	services := map[string]opaService{}
	if c.Services.Kind != 0 {
		var list []opaService
		var byName map[string]opaService
		if c.Services.Kind == yaml.SequenceNode {
			if err := decodeStrict(&c.Services, &list); err != nil {
				return fail("services: %v", err)
			}
		} else if err := decodeStrict(&c.Services, &byName); err != nil {
			return fail("services: %v", err)
		}
		for _, s := range list {
			services[s.Name] = s
		}
		for n, s := range byName {
			s.Name = n
			services[n] = s
		}
	}
	for name, bu := range c.Bundles {
		svc := bu.Service
		if svc == "" && len(services) == 1 {
			for n := range services {
				svc = n
			}
		}
		s, ok := services[svc]
		if !ok || s.URL == "" {
			return fail("bundles.%s.service: %q is not a service with a url", name, svc)
		}
		res := bu.Resource
		if res == "" {
			res = "bundles/" + name
		}
		d.bundleURL = strings.TrimSuffix(s.URL, "/") + "/" + strings.TrimPrefix(res, "/")
		if d.bundleClient, err = s.client(); err != nil {
			return fail("%v", err)
		}
		if sg := bu.Signing; sg != nil {
			k, ok := c.Keys[sg.KeyID]
			if !ok || k.Key == "" {
				return fail("bundles.%s.signing.keyid: %q is not in keys (with a key)", name, sg.KeyID)
			}
			scope := sg.Scope
			if scope == "" {
				scope = k.Scope
			}
			d.verify = &policies.Verification{PublicKey: k.Key, KeyID: sg.KeyID, Algorithm: k.Algorithm, Scope: scope}
		}
		if bu.Polling.MinDelaySeconds > 0 {
			d.poll = time.Duration(bu.Polling.MinDelaySeconds) * time.Second
		}
		if bu.Persist {
			dir := c.PersistenceDirectory
			if dir == "" {
				dir = ".opa" // OPA's default persistence directory
			}
			d.persistDir = dir
		}
	}
	if st := c.Status; st != nil {
		if st.Trigger != "" && st.Trigger != "periodic" {
			return fail("status.trigger: %q: only periodic (the default) is supported", st.Trigger)
		}
		so := &extauthz.StatusOptions{Console: st.Console, Labels: c.Labels}
		for n := range c.Bundles {
			so.BundleName = n
		}
		if st.Service != "" {
			s, ok := services[st.Service]
			if !ok || s.URL == "" {
				return fail("status.service: %q is not a service with a url", st.Service)
			}
			so.URL = strings.TrimSuffix(s.URL, "/") + "/status"
			if st.PartitionName != "" {
				so.URL += "/" + strings.Trim(st.PartitionName, "/")
			}
			if so.Client, err = s.client(); err != nil {
				return fail("%v", err)
			}
		}
		if so.URL == "" && !so.Console {
			return fail("status: give service or console: true")
		}
		d.status = so
	}
	if dl := c.DecisionLogs; dl != nil && dl.Service != "" {
		s, ok := services[dl.Service]
		if !ok || s.URL == "" {
			return fail("decision_logs.service: %q is not a service with a url", dl.Service)
		}
		res := dl.Resource
		if res == "" {
			res = "/logs"
		}
		if d.decisionLog != "" && d.decisionLog != "console" {
			return fail("decision_logs: one sink besides console")
		}
		d.decisionLogURL = strings.TrimSuffix(s.URL, "/") + "/" + strings.TrimPrefix(res, "/")
		if d.logClient, err = s.client(); err != nil {
			return fail("%v", err)
		}
		if r := dl.Reporting; r != nil && r.MaxDelaySeconds > 0 {
			d.logFlush = time.Duration(r.MaxDelaySeconds) * time.Second
		}
	}
	return nil
}

func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// flagValue is the value of -name/--name in args (either "--name v" or
// "--name=v"), read before parsing.
func flagValue(args []string, name string) string {
	for i, a := range args {
		for _, p := range []string{"-" + name, "--" + name} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
		if a == "--" {
			break
		}
	}
	return ""
}

// parseInterspersed parses flags before and after positional arguments
// (`opa run --server --config-file c.yaml policy.rego --addr :8181`),
// returning the positional ones.
func parseInterspersed(fs interface {
	Parse([]string) error
	Args() []string
}, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// addPaths takes `opa run`'s positional policy paths: one file, bundle
// directory or .tar.gz, as --policy.
func (d *dropInFlags) addPaths(paths []string) error {
	switch {
	case len(paths) == 0:
		return nil
	case len(paths) > 1:
		return fmt.Errorf("authz: %d policy paths given (%s): give one file, bundle directory or .tar.gz", len(paths), strings.Join(paths, " "))
	case d.policy != "" && d.policy != paths[0]:
		return fmt.Errorf("authz: give the policy as --policy or as an argument, not both")
	}
	d.policy = paths[0]
	if d.bundleURL != "" {
		return fmt.Errorf("authz: %s: a policy path and a bundle (--bundle-url or the config file's bundles) cannot be combined yet", paths[0])
	}
	return nil
}

// allInterfaces is OPA's reading of ":9191": every interface.
func allInterfaces(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "0.0.0.0" + addr
	}
	return addr
}

// applySet applies OPA's --set KEY=VALUE for the keys drop-in mode maps;
// any other key is refused by name.
func (d *dropInFlags) applySet() error {
	for _, kv := range d.set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("authz: --set %q: want KEY=VALUE", kv)
		}
		b := func() (bool, error) {
			switch v {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
			return false, fmt.Errorf("authz: --set %s: %q is not true or false", k, v)
		}
		var err error
		switch k {
		case "plugins.envoy_ext_authz_grpc.addr":
			d.grpcAddr = v
		case "plugins.envoy_ext_authz_grpc.path":
			d.decision = strings.TrimPrefix(v, "/")
		case "plugins.envoy_ext_authz_grpc.dry-run":
			d.dryRun, err = b()
		case "plugins.envoy_ext_authz_grpc.enable-reflection":
			d.reflection, err = b()
		case "plugins.envoy_ext_authz_grpc.skip-request-body-parse":
			d.skipBodyParse, err = b()
		case "decision_logs.console":
			var on bool
			if on, err = b(); on {
				d.decisionLog = "console"
			}
		default:
			return fmt.Errorf("authz: --set %s: not supported (plugins.envoy_ext_authz_grpc.{addr,path,dry-run,enable-reflection,skip-request-body-parse}, decision_logs.console are)", k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
