package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/policies"
	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/xds"
	"github.com/kailash-gw/kailash/xds/translate"
)

type flagSetT = flag.FlagSet

func configFlag(name string, args []string) (*config.Config, error) {
	fs := newFlagSet(name)
	var path string
	fs.StringVar(&path, "c", "kailash.yaml", "config file")
	fs.StringVar(&path, "config", "kailash.yaml", "config file (same as -c)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return config.Load(path)
}

// runValidate runs the same code the servers run, offline: config, Envoy
// translation, policy compilation and workflow definitions.
func runValidate(ctx context.Context, args []string, w io.Writer) error {
	cfg, err := configFlag("validate", args)
	if err != nil {
		return err
	}
	if _, err := xds.Translate(cfg); err != nil {
		return fmt.Errorf("envoy translation: %w", err)
	}
	eng, err := policies.NewEngine(ctx, policies.EngineOptions{Dir: cfg.Path(cfg.Policy.Bundle), Decision: cfg.Policy.Decision})
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	n := 0
	if cfg.Runner.Workflows != "" {
		wfs, err := workflow.LoadDir(cfg.Path(cfg.Runner.Workflows))
		if err != nil {
			return fmt.Errorf("workflows: %w", err)
		}
		n = len(wfs)
	}
	_, err = fmt.Fprintf(w, "%s: ok (%d tenants, policy revision %s, %d workflows)\n", cfg.File, len(cfg.Tenants), eng.Revision(), n)
	return err
}

func runTranslate(_ context.Context, args []string, w io.Writer) error {
	if wantsRLSConfig(args) {
		return runTranslateRLS(args, w)
	}
	if rest, ok := cutExtAuthzOnly(args); ok { // translate_extauthz.go
		return runTranslateExtAuthzOnly(rest, w)
	}
	cfg, err := configFlag("translate", args)
	if err != nil {
		return err
	}
	res, err := xds.Translate(cfg)
	if err != nil {
		return err
	}
	y, err := translate.ToYAML(res)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

func runBootstrap(_ context.Context, args []string, w io.Writer) error {
	cfg, err := configFlag("bootstrap", args)
	if err != nil {
		return err
	}
	b, err := envoy.Bootstrap(cfg)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func envoyVersion() string { return envoy.Version }

// runToken mints a development token. With -c it takes the tenant's issuer
// and audience from the config, so the token is one that tenant accepts.
func runToken(_ context.Context, args []string, w io.Writer) error {
	fs := newFlagSet("token")
	var (
		cfgPath, key, tenant, sub, roles, iss, aud string
		ttl                                        time.Duration
	)
	fs.StringVar(&cfgPath, "c", "", "config file to take the tenant's issuer and audience from (default examples/kailash.yaml if present)")
	fs.StringVar(&key, "key", "", "PEM signing key (default keys/dev-signing-key.pem beside the config)")
	fs.StringVar(&tenant, "tenant", "", "tenant id (required)")
	fs.StringVar(&sub, "sub", "", "subject, the user id (required)")
	fs.StringVar(&roles, "roles", "", "comma-separated roles")
	fs.StringVar(&iss, "issuer", "", "issuer (default: the tenant's, else https://dev.kailash.local)")
	fs.StringVar(&aud, "aud", "", "audience (default: the tenant's first, else kailash)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if tenant == "" || sub == "" {
		return fmt.Errorf("token: --tenant and --sub are required")
	}
	if cfgPath == "" {
		if _, err := os.Stat("examples/kailash.yaml"); err == nil {
			cfgPath = "examples/kailash.yaml"
		}
	}
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return err
		}
		t, ok := cfg.Tenant(tenant)
		if !ok {
			return fmt.Errorf("token: tenant %q is not in %s", tenant, cfgPath)
		}
		if iss == "" {
			iss = t.JWT.Issuer
		}
		if aud == "" && len(t.JWT.Audiences) > 0 {
			aud = t.JWT.Audiences[0]
		}
		if key == "" {
			key = cfg.Path("keys/dev-signing-key.pem")
		}
	}
	if iss == "" {
		iss = "https://dev.kailash.local"
	}
	if aud == "" {
		aud = "kailash"
	}
	if key == "" {
		key = "examples/keys/dev-signing-key.pem"
	}
	tok, err := mintFromFile(key, devtoken.Claims{Issuer: iss, Audience: []string{aud}, Tenant: tenant, Subject: sub, Roles: splitList(roles), TTL: ttl})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, tok)
	return err
}

func mintFromFile(path string, c devtoken.Claims) (string, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	k, err := devtoken.Key(pem)
	if err != nil {
		return "", err
	}
	return devtoken.Mint(k, c)
}
