package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/fswatch"
)

// rlsFlags are `kailash ratelimit`'s flags for envoyproxy/ratelimit users.
type rlsFlags struct {
	path    string
	redis   string
	headers bool
}

func (r *rlsFlags) register(fs *flagSetT) {
	fs.StringVar(&r.path, "rls-config", "", "envoyproxy/ratelimit config: one YAML file, or a directory whose *.yaml files are all read (their RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config); followed for changes")
	fs.StringVar(&r.redis, "redis", "", "with --rls-config and no -c: the Redis host:port (default $REDIS_URL; neither: in-memory counters, one process only)")
	fs.BoolVar(&r.headers, "response-headers", false, "add RateLimit-Limit/-Remaining/-Reset to answers of --rls-config domains (also LIMIT_RESPONSE_HEADERS_ENABLED=true)")
}

// looksLikeRLSConfig reports whether path is a YAML mapping with
// envoyproxy/ratelimit's top-level keys (domain, and descriptors or nothing
// else), the file a user of theirs may pass to -c by mistake.
func looksLikeRLSConfig(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var m map[string]any
	if yaml.Unmarshal(b, &m) != nil {
		return false
	}
	_, domain := m["domain"]
	for k := range m {
		if k != "domain" && k != "descriptors" {
			return false
		}
	}
	return domain
}

// flagSet reports whether one of names was given on the command line.
func flagSet(fs *flag.FlagSet, names ...string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		for _, n := range names {
			if f.Name == n {
				set = true
			}
		}
	})
	return set
}

func envTrue(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// rlsStandaloneConfig is the service's config without a kailash.yaml, from
// flags and the environment variables envoyproxy/ratelimit reads:
// GRPC_HOST/GRPC_PORT (default 0.0.0.0:8081) unless -grpc, HOST/PORT
// (default 0.0.0.0:8080, serving /healthz, /readyz, /metrics) unless -http,
// --redis or REDIS_URL (host:port, or redis://host:port) for shared
// counters, REDIS_AUTH for its password (read from the environment, never
// logged). REDIS_SOCKET_TYPE must be tcp when set: unix sockets are not
// supported. Without Redis the counters are in memory.
func rlsStandaloneConfig(r *rlsFlags, env func(string) string) (*config.Config, error) {
	get := func(k, def string) string {
		if v := env(k); v != "" {
			return v
		}
		return def
	}
	cfg := &config.Config{File: "(no config file: --rls-config)"}
	cfg.RateLimit.GRPC = config.HostPortFromText(net.JoinHostPort(get("GRPC_HOST", "0.0.0.0"), get("GRPC_PORT", "8081")))
	cfg.RateLimit.HTTP = config.HostPortFromText(net.JoinHostPort(get("HOST", "0.0.0.0"), get("PORT", "8080")))
	if err := cfg.RateLimit.GRPC.Err(); err != nil {
		return nil, fmt.Errorf("GRPC_HOST/GRPC_PORT: %w", err)
	}
	if err := cfg.RateLimit.HTTP.Err(); err != nil {
		return nil, fmt.Errorf("HOST/PORT: %w", err)
	}
	addr := r.redis
	if addr == "" {
		addr = env("REDIS_URL")
		if addr != "" {
			if st := env("REDIS_SOCKET_TYPE"); st != "" && !strings.EqualFold(st, "tcp") {
				return nil, fmt.Errorf("REDIS_SOCKET_TYPE=%s: only tcp is supported (REDIS_URL is host:port)", st)
			}
		}
	}
	if strings.HasPrefix(addr, "redis://") {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		addr = u.Host
	}
	if addr != "" {
		hp, err := config.ParseHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("redis address %q: want host:port: %w", addr, err)
		}
		cfg.RateLimit.Backend = config.BackendRedis
		cfg.RateLimit.Redis.Addr = hp
		if env("REDIS_AUTH") != "" {
			cfg.RateLimit.Redis.PasswordEnv = "REDIS_AUTH"
		}
	}
	cfg.SetDefaults()
	return cfg, nil
}

// watchRLS reloads the envoyproxy/ratelimit config at path when it changes
// (the file, or any file in the directory: a ConfigMap's symlink swap
// included). A config that does not load is logged and the previous one
// kept, as envoyproxy/ratelimit keeps its last good config.
func watchRLS(ctx context.Context, path string, log *slog.Logger, s *ratelimit.Server) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return err
	}
	dir, o := abs, fswatch.Options{}
	if !st.IsDir() {
		dir = filepath.Dir(abs)
		o.Files = []string{abs}
	}
	w, err := fswatch.New(o)
	if err != nil {
		return fmt.Errorf("rls config: watch: %w", err)
	}
	defer func() { _ = w.Close() }()
	if err := w.Follow([]string{dir}); err != nil {
		return fmt.Errorf("rls config: watch %s: %w", dir, err)
	}
	w.Run(ctx, func() {
		c, err := ratelimit.LoadRLSConfig(path)
		if err != nil {
			log.Error("envoyproxy/ratelimit config rejected; keeping the previous one", "err", err)
			return
		}
		s.SetRLSConfig(c)
		log.Info("envoyproxy/ratelimit config reloaded", "path", path, "files", len(c.Files()), "limits", c.Len())
	})
	return nil
}
