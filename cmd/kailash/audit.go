package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
)

// newAuditLogger is cfg's audit section as a logger (events also go to
// log); reg, when set, takes kailash_audit_events_total.
func newAuditLogger(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*audit.Logger, error) {
	a := cfg.Audit
	return audit.New(audit.Options{Log: log, File: cfg.Path(a.File), MaxSizeMB: a.MaxSizeMB, MaxBackups: a.MaxBackups,
		Mask: a.Mask, Registerer: reg})
}

// cliActor is who runs this command: the OS user and host.
func cliActor() string {
	name := strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli " + name + "@" + host
}

// fileActor names a config edit's author as well as a file can: the file
// and its owner.
func fileActor(path string) string {
	abs, _ := filepath.Abs(path)
	fi, err := os.Stat(abs)
	if err != nil {
		return "file " + abs
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner := strconv.FormatUint(uint64(st.Uid), 10)
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		return fmt.Sprintf("file %s (owner %s)", abs, owner)
	}
	return "file " + abs
}

// tenantChanges compares the tenants of two configs by id, as they are in
// force: a default another tenant's edit changes (jwt.require_tenant_claim
// once two tenants share an issuer) is a change; moving in the file is not.
func tenantChanges(old, next *config.Config) (added, removed, changed []string) {
	enc := func(t config.Tenant) []byte {
		t.Line = 0
		b, _ := json.Marshal(t)
		return b
	}
	was := map[string][]byte{}
	for _, t := range old.Tenants {
		was[t.ID] = enc(t)
	}
	for _, t := range next.Tenants {
		b := enc(t)
		prev, ok := was[t.ID]
		switch {
		case !ok:
			added = append(added, t.ID)
		case string(prev) != string(b):
			changed = append(changed, t.ID)
		}
		delete(was, t.ID)
	}
	for id := range was {
		removed = append(removed, id)
	}
	slices.Sort(removed)
	return added, removed, changed
}

// auditReload records a revision put in force, and each tenant it adds,
// removes or changes.
func auditReload(ctx context.Context, aud *audit.Logger, component, path string, old, next *config.Config, digest string) {
	actor := fileActor(path)
	added, removed, changed := tenantChanges(old, next)
	aud.Record(ctx, audit.Event{Component: component, Action: audit.ConfigReload, Actor: actor, Target: path,
		Detail: map[string]any{"digest": digest, "tenants": len(next.Tenants), "tenants_added": added, "tenants_removed": removed, "tenants_changed": changed}})
	for _, x := range []struct {
		action string
		ids    []string
	}{{audit.TenantAdd, added}, {audit.TenantRemove, removed}, {audit.TenantChange, changed}} {
		for _, id := range x.ids {
			aud.Record(ctx, audit.Event{Component: component, Action: x.action, Actor: actor, Target: id, Detail: map[string]any{"config": path}})
		}
	}
}

// serverAudit is newAuditLogger with its metric on s's /metrics.
func serverAudit(cfg *config.Config, log *slog.Logger, s any) (*audit.Logger, error) {
	aud, err := newAuditLogger(cfg, log, nil)
	if err != nil {
		return nil, err
	}
	if r, ok := s.(interface{ Registry() *prometheus.Registry }); ok {
		if err := aud.Register(r.Registry()); err != nil {
			return nil, err
		}
	}
	return aud, nil
}

// recordCLI records an administrative action of the CLI: to audit.file
// when it is set, else to stderr. err is the action's outcome.
func recordCLI(ctx context.Context, cfg *config.Config, action, target string, detail map[string]any, err error) error {
	var log *slog.Logger
	if cfg.Audit.File == "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	aud, aerr := newAuditLogger(cfg, log, nil)
	if aerr != nil {
		return errors.Join(err, aerr)
	}
	ev := audit.Event{Component: "cli", Action: action, Actor: cliActor(), Target: target, Detail: detail}
	if err != nil {
		ev.Outcome, ev.Error = audit.Error, err.Error()
	}
	aud.Record(ctx, ev)
	return errors.Join(err, aud.Close())
}
