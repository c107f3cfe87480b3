package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kailash-gw/kailash/extauthz"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/policies"
)

// dropInFlags are `kailash authz`'s opa-envoy-plugin replacement flags: with
// --policy (or --bundle-url) no kailash.yaml is read, no tenant or identity
// is required, and the policy sees opa-envoy-plugin's input.
type dropInFlags struct {
	policy, bundleURL, decision, grpcAddr, httpAddr string
	persistDir, publicKey, keyID, shadow            string
	decisionLog                                     string
	mask                                            stringsFlag
	dryRun, skipBodyParse                           bool
	poll                                            time.Duration
	// OPA's config file and `opa run --server` arguments (opaconfig.go).
	configFile            string
	set                   stringsFlag
	reflection, opaServer bool
	// From the config file's services, keys and decision_logs: the clients
	// that reach the bundle and decision-log services (credentials, TLS),
	// the bundle signing key, the upload URL and its flush interval.
	bundleClient, logClient *http.Client
	verify                  *policies.Verification
	decisionLogURL          string
	logFlush                time.Duration
	labels                  map[string]string
	status                  *extauthz.StatusOptions // OPA's status plugin
	maskDecision            string                  // OPA's decision_logs.mask_decision
	decisionCache           int                     // --decision-cache-size
}

func (d *dropInFlags) enabled() bool {
	return d.policy != "" || d.bundleURL != "" || d.configFile != ""
}

func (d *dropInFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.policy, "policy", "", "drop-in mode: a policy file, bundle directory or bundle .tar.gz (no kailash.yaml needed)")
	fs.StringVar(&d.bundleURL, "bundle-url", "", "drop-in mode: poll this bundle server for the bundle (ETag)")
	fs.StringVar(&d.persistDir, "bundle-persist-dir", "", "keep the last good downloaded bundle here (for restarts during an outage)")
	fs.DurationVar(&d.poll, "bundle-poll", 30*time.Second, "how often --bundle-url is polled")
	fs.StringVar(&d.publicKey, "verification-key", "", "PEM public key: require bundles signed in OPA's format")
	fs.StringVar(&d.keyID, "verification-key-id", "default", "id of --verification-key")
	fs.StringVar(&d.decision, "decision", "envoy/authz/allow", "decision path evaluated (as opa-envoy-plugin's path)")
	fs.StringVar(&d.grpcAddr, "grpc-addr", "127.0.0.1:9191", "ext_authz gRPC listen address")
	fs.StringVar(&d.httpAddr, "http-addr", "", "metrics and health listen address (none when empty)")
	fs.BoolVar(&d.dryRun, "dry-run", false, "answer allow, log the real decision")
	fs.BoolVar(&d.skipBodyParse, "skip-request-body-parse", false, "leave parsed_body and truncated_body out of the input")
	fs.StringVar(&d.shadow, "shadow", "", "candidate bundle evaluated next to the active one; disagreements are counted and logged")
	fs.StringVar(&d.decisionLog, "decision-log", "", `decision log sink: "console" (stdout), a file path (rotated) or an http(s) URL (OPA upload format)`)
	fs.Var(&d.mask, "decision-log-mask", "input path removed from decision logs besides Authorization and Cookie, e.g. /input/parsed_body/password (repeatable)")
	fs.StringVar(&d.configFile, "config-file", "", "drop-in mode: OPA's config file (plugins.envoy_ext_authz_grpc, services, bundles, decision_logs); flags override it")
	fs.BoolVar(&d.opaServer, "server", false, "accepted for `opa run --server` command lines (always a server)")
	fs.StringVar(&d.httpAddr, "addr", "", "as --http-addr (OPA's --addr): /health, /metrics")
	fs.IntVar(&d.decisionCache, "decision-cache-size", config.DefaultDecisionCacheSize, "decision cache entries (0: off); a bundle is cached only when its policy provably allows it")
	fs.BoolVar(&d.reflection, "enable-reflection", false, "register gRPC server reflection (as opa-envoy-plugin's enable-reflection)")
	fs.Var(&d.set, "set", "OPA's --set KEY=VALUE for plugins.envoy_ext_authz_grpc.* and decision_logs.console (repeatable)")
}

// config builds the in-memory config of drop-in mode.
func (d *dropInFlags) config() (*config.Config, error) {
	if d.policy != "" && d.bundleURL != "" {
		return nil, errors.New("authz: give --policy or --bundle-url, not both")
	}
	if d.policy == "" && d.bundleURL == "" {
		return nil, errors.New("authz: --config-file names no bundle: give a policy path (kailash authz --config-file opa.yaml policy.rego) or configure services and bundles")
	}
	if d.policy != "" {
		if _, err := os.Stat(d.policy); err != nil {
			return nil, fmt.Errorf("authz: --policy: %w", err)
		}
	}
	cfg := &config.Config{
		Authz: config.Authz{GRPC: config.HostPortFromText(allInterfaces(d.grpcAddr)), HTTP: config.HostPortFromText(allInterfaces(d.httpAddr))},
		Policy: config.Policy{
			Bundle: policyPath(d.policy), Decision: d.decision, BundleURL: d.bundleURL, PersistDir: d.persistDir,
			PollInterval: d.poll, DryRun: d.dryRun, SkipRequestBodyParse: d.skipBodyParse, Shadow: policyPath(d.shadow),
			Signing:       config.PolicySigning{PublicKeyFile: d.publicKey, KeyID: d.keyID},
			DecisionCache: config.DecisionCache{Size: d.decisionCache, Disabled: d.decisionCache == 0},
		},
	}
	switch {
	case d.decisionLog == "":
	case d.decisionLog == "console" || d.decisionLog == "stdout":
		cfg.Policy.DecisionLogs.Console = true
	case len(d.decisionLog) > 7 && (d.decisionLog[:7] == "http://" || d.decisionLog[:8] == "https://"):
		cfg.Policy.DecisionLogs.URL = d.decisionLog
	default:
		cfg.Policy.DecisionLogs.File = d.decisionLog
	}
	cfg.Policy.DecisionLogs.Mask = d.mask
	cfg.Policy.DecisionLogs.MaskDecision = d.maskDecision
	if d.decisionLogURL != "" && cfg.Policy.DecisionLogs.URL == "" {
		cfg.Policy.DecisionLogs.URL = d.decisionLogURL
		cfg.Policy.DecisionLogs.FlushInterval = d.logFlush
	}
	return cfg, nil
}

// policyPath is p made absolute, so the bundle is found whatever the
// working directory of later reloads.
func policyPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// loadAuthzFlags parses `kailash authz` flags: drop-in mode with --policy
// or --bundle-url, else the config file.
func loadAuthzFlags(args []string, drop *dropInFlags, listen *listenFlags) (*serverFlags, *config.Config, *slog.Logger, error) {
	f := &serverFlags{}
	fs := newFlagSet("authz")
	f.register(fs)
	drop.register(fs)
	listen.register(fs, "authz")
	if cf := flagValue(args, "config-file"); cf != "" {
		if err := drop.applyOPAConfig(cf); err != nil { // before the flags: they override it
			return nil, nil, nil, err
		}
	}
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := drop.addPaths(paths); err != nil {
		return nil, nil, nil, err
	}
	if err := drop.applySet(); err != nil {
		return nil, nil, nil, err
	}
	log, err := f.logger()
	if err != nil {
		return nil, nil, nil, err
	}
	var cfg *config.Config
	if drop.enabled() {
		cfg, err = drop.config()
	} else {
		cfg, err = config.Load(f.config)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	listen.apply(&cfg.Authz.GRPC, &cfg.Authz.HTTP)
	return f, cfg, log, nil
}

type stringsFlag []string

func (s *stringsFlag) String() string     { return fmt.Sprint(*s) }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

var _ = context.Background
var _ io.Writer
