package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/extauthz/apikey"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/redisclient"
)

// runAPIKey is `kailash apikey create|list|revoke|rotate`: the tenants'
// API keys in authz.api_keys_file, or in sessions.redis with
// authz.api_keys_in_redis (authz follows either). A key's secret
// is printed once, at create and rotate; only its hash is stored.
func runAPIKey(ctx context.Context, args []string, w io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(w, "Usage: kailash apikey create|list|revoke|rotate -c kailash.yaml [flags]")
		fmt.Fprintln(w, "  create  --tenant T --name N [--roles a,b] [--ttl 720h] [--cidr 10.0.0.0/8 ...]: a new key, printed once")
		fmt.Fprintln(w, "  list    [--tenant T]: the keys (never their secrets); with authz.api_keys_in_redis, their last use")
		fmt.Fprintln(w, "  revoke  --id ID: the key stops working")
		fmt.Fprintln(w, "  rotate  --id ID: a new secret for the key, printed once; the old one stops working")
		if len(args) == 0 {
			return errors.New("apikey: a subcommand is required")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("apikey " + sub)
	var path, tenant, name, roles, id string
	var ttl time.Duration
	var cidrs stringsFlag
	fs.StringVar(&path, "c", "kailash.yaml", "config file (authz.api_keys_file)")
	switch sub {
	case "create":
		fs.StringVar(&tenant, "tenant", "", "the key's tenant")
		fs.StringVar(&name, "name", "", "the service account (identity subject sa:<name>)")
		fs.StringVar(&roles, "roles", "", "comma-separated roles")
		fs.DurationVar(&ttl, "ttl", 0, "expire after this long (0: never)")
		fs.Var(&cidrs, "cidr", "network the key may be used from (repeatable; none: anywhere)")
	case "list":
		fs.StringVar(&tenant, "tenant", "", "only this tenant's keys")
	case "revoke", "rotate":
		fs.StringVar(&id, "id", "", "the key's id")
	default:
		return fmt.Errorf("apikey: unknown subcommand %q (create, list, revoke, rotate)", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("apikey %s: unexpected argument %q", sub, fs.Arg(0))
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	// The keys: in sessions.redis (authz.api_keys_in_redis), else the file.
	var rs *apikey.Redis
	var lastUsed map[string]time.Time
	file := cfg.Path(cfg.Authz.APIKeysFile)
	var f apikey.File
	switch {
	case cfg.Authz.APIKeysInRedis:
		rc := cfg.Sessions.Redis
		pw, err := rc.Password()
		if err != nil {
			return err
		}
		client := redisclient.New(rc.Addr.String(), pw, rc.DB, 5*time.Second)
		defer client.Close()
		rs, file = apikey.NewRedis(client, ""), "sessions.redis"
		if f, _, err = rs.Load(ctx); err != nil {
			return fmt.Errorf("apikey: %s: %w", file, err)
		}
		lastUsed, _ = rs.LastUsed(ctx)
	case cfg.Authz.APIKeysFile == "":
		return fmt.Errorf("%s: neither authz.api_keys_file nor authz.api_keys_in_redis is set", path)
	default:
		if f, err = apikey.ReadFile(file); err != nil {
			return err
		}
	}
	// save writes key k (Redis) or the whole file.
	save := func(k apikey.Key) error {
		if rs != nil {
			return rs.Put(ctx, k)
		}
		return apikey.UpdateFile(file, func(cur *apikey.File) error { cur.Upsert(k); return nil })
	}
	record := func(action, target string, detail map[string]any) error {
		return recordCLI(ctx, cfg, action, target, detail, nil)
	}
	find := func() (int, error) {
		i := slices.IndexFunc(f.Keys, func(k apikey.Key) bool { return k.ID == id })
		if id == "" || i < 0 {
			return -1, fmt.Errorf("apikey %s: no key with id %q in %s", sub, id, file)
		}
		return i, nil
	}
	switch sub {
	case "create":
		if _, ok := cfg.Tenant(tenant); !ok {
			return fmt.Errorf("apikey create: --tenant %q is not a tenant of %s", tenant, path)
		}
		var rs []string
		for _, r := range strings.Split(roles, ",") {
			if r = strings.TrimSpace(r); r != "" {
				rs = append(rs, r)
			}
		}
		k, secret, err := apikey.New(tenant, name, rs, cidrs, ttl, time.Now())
		if err != nil {
			return err
		}
		f.Keys = append(f.Keys, k)
		if err := save(k); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", secret)
		fmt.Fprintf(os.Stderr, "api key %s for sa:%s in tenant %s (shown once: store it now)\n", k.ID, k.Name, k.Tenant)
		return record(audit.KeyAdd, "api key "+k.ID, map[string]any{"tenant": tenant, "name": name, "roles": rs})
	case "list":
		for _, k := range f.Keys {
			if tenant != "" && k.Tenant != tenant {
				continue
			}
			state := "active"
			switch {
			case !k.Revoked.IsZero():
				state = "revoked " + k.Revoked.Format(time.RFC3339)
			case !k.Expires.IsZero() && time.Now().After(k.Expires):
				state = "expired " + k.Expires.Format(time.RFC3339)
			case !k.Expires.IsZero():
				state = "expires " + k.Expires.Format(time.RFC3339)
			}
			if at, ok := lastUsed[k.ID]; ok {
				state += ", last used " + at.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s  %-10s sa:%-20s roles=%s cidrs=%s  %s\n", k.ID, k.Tenant, k.Name, strings.Join(k.Roles, ","), strings.Join(k.CIDRs, ","), state)
		}
		return nil
	case "revoke":
		i, err := find()
		if err != nil {
			return err
		}
		f.Keys[i].Revoked = time.Now().UTC()
		if err := save(f.Keys[i]); err != nil {
			return err
		}
		fmt.Fprintf(w, "api key %s revoked\n", id)
		return record(audit.KeyRevoke, "api key "+id, map[string]any{"tenant": f.Keys[i].Tenant})
	default: // rotate
		i, err := find()
		if err != nil {
			return err
		}
		k, secret, err := apikey.Rotate(f.Keys[i])
		if err != nil {
			return err
		}
		f.Keys[i] = k
		if err := save(k); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", secret)
		return record(audit.KeyRotate, "api key "+id, map[string]any{"tenant": k.Tenant})
	}
}
