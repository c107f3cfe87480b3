// Package audit records administrative actions — config reloads, policy
// bundle activations, tenant changes, key rotations, session revocations —
// as structured events: who did what to what, when, and how it ended.
//
// Events go to the process log (message "audit", attribute audit=true, so
// a log pipeline can route them) and, when configured, to a JSON-lines file
// of their own (rotated). Before they are written, detail fields whose name
// says they hold a secret are removed, and so are the paths of the mask
// rules (the syntax of decision log masks: "/detail/a/b").
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Actions.
const (
	ConfigReload = "config.reload"
	ConfigReject = "config.reject"
	TenantAdd    = "tenant.add"
	TenantRemove = "tenant.remove"
	TenantChange = "tenant.change"
	// TenantSuspend and TenantResume are the admin API's (tenant store).
	TenantSuspend  = "tenant.suspend"
	TenantResume   = "tenant.resume"
	PolicyActivate = "policy.activate"
	PolicyReject   = "policy.reject"
	KeyRotate      = "key.rotate"
	KeyAdd         = "key.add"
	KeyRevoke      = "key.revoke"
	SessionRevoke  = "session.revoke"
	// RecoveryCodeUse is a login with a TOTP recovery code.
	RecoveryCodeUse = "mfa.recovery_code_use"
)

// Outcomes.
const (
	OK    = "ok"
	Error = "error"
)

// Event is one administrative action.
type Event struct {
	Time      time.Time `json:"time"`
	Component string    `json:"component"` // xds, authz, runner, ratelimit, cli
	Action    string    `json:"action"`
	// Actor is who: a user ("alice@acme"), "file /etc/kailash.yaml (owner
	// root)" for a config edit, "system" for scheduled work.
	Actor string `json:"actor"`
	// Target is what was acted on: a tenant id, a bundle source, a key id.
	Target  string         `json:"target,omitempty"`
	Outcome string         `json:"outcome"`
	Error   string         `json:"error,omitempty"`
	Detail  map[string]any `json:"detail,omitempty"`
	// Erased lists the detail paths removed before writing.
	Erased []string `json:"erased,omitempty"`
}

// Options configure a Logger.
type Options struct {
	// Log receives every event (at info, message "audit"); nil: none.
	Log *slog.Logger
	// File, when set, receives every event as a JSON line, rotated at
	// MaxSizeMB (default 100) keeping MaxBackups (default 10).
	File                  string
	MaxSizeMB, MaxBackups int
	// Mask removes more detail paths ("/detail/email").
	Mask []string
	// Registerer counts events (kailash_audit_events_total).
	Registerer prometheus.Registerer
}

// Logger writes audit events. A nil *Logger records nothing. It is safe
// for concurrent use.
type Logger struct {
	log    *slog.Logger
	mu     sync.Mutex
	file   io.WriteCloser
	masks  [][]string
	events *prometheus.CounterVec
}

// New makes a Logger; bad mask rules are an error naming the rule.
func New(o Options) (*Logger, error) {
	l := &Logger{log: o.Log}
	for _, m := range o.Mask {
		p := strings.Split(strings.Trim(m, "/"), "/")
		if len(p) < 2 || p[0] != "detail" {
			return nil, fmt.Errorf("audit.mask %q: want a path under /detail, e.g. /detail/email", m)
		}
		l.masks = append(l.masks, p[1:])
	}
	if o.File != "" {
		size, backups := o.MaxSizeMB, o.MaxBackups
		if size <= 0 {
			size = 100
		}
		if backups <= 0 {
			backups = 10
		}
		l.file = &lumberjack.Logger{Filename: o.File, MaxSize: size, MaxBackups: backups}
	}
	l.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kailash_audit_events_total", Help: "Audit events recorded, by action and outcome.",
	}, []string{"action", "outcome"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(l.events); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				l.events = are.ExistingCollector.(*prometheus.CounterVec)
			} else {
				return nil, err
			}
		}
	}
	return l, nil
}

// Record writes ev (Time defaults to now, Outcome to ok). It never fails
// the action: a file that cannot be written is reported on the log.
func (l *Logger) Record(ctx context.Context, ev Event) {
	if l == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Outcome == "" {
		ev.Outcome = OK
	}
	if ev.Actor == "" {
		ev.Actor = "system"
	}
	if ev.Detail != nil {
		ev.Detail = clone(ev.Detail)
		ev.Erased = l.redact(ev.Detail)
	}
	l.events.WithLabelValues(ev.Action, ev.Outcome).Inc()
	if l.log != nil {
		args := []any{"audit", true, "action", ev.Action, "actor", ev.Actor, "outcome", ev.Outcome, "component", ev.Component}
		if ev.Target != "" {
			args = append(args, "target", ev.Target)
		}
		if ev.Error != "" {
			args = append(args, "err", ev.Error)
		}
		if len(ev.Detail) > 0 {
			args = append(args, "detail", ev.Detail)
		}
		l.log.InfoContext(ctx, "audit", args...)
	}
	if l.file != nil {
		b, err := json.Marshal(ev)
		if err == nil {
			l.mu.Lock()
			_, err = l.file.Write(append(b, '\n'))
			l.mu.Unlock()
		}
		if err != nil && l.log != nil {
			l.log.Error("audit file not written", "action", ev.Action, "err", err)
		}
	}
}

// Register adds kailash_audit_events_total to reg (for a Logger made
// before the registry of the server whose /metrics should show it).
func (l *Logger) Register(reg prometheus.Registerer) error {
	if l == nil {
		return nil
	}
	return reg.Register(l.events)
}

// Close closes the file.
func (l *Logger) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.Close()
}

// secretWords mark detail keys that are never written, at any depth.
var secretWords = []string{"password", "secret", "token", "authorization", "cookie", "private_key", "credential"}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redact removes secret-named keys and the mask paths from d, returning
// what it removed ("/detail/...").
func (l *Logger) redact(d map[string]any) []string {
	var erased []string
	var walk func(m map[string]any, at string)
	walk = func(m map[string]any, at string) {
		for k, v := range m {
			if secretKey(k) {
				delete(m, k)
				erased = append(erased, at+"/"+k)
				continue
			}
			if sub, ok := v.(map[string]any); ok {
				walk(sub, at+"/"+k)
			}
		}
	}
	walk(d, "/detail")
	for _, p := range l.masks {
		node, ok := d, true
		for i := 0; ok && i < len(p)-1; i++ {
			node, ok = node[p[i]].(map[string]any)
		}
		if !ok {
			continue
		}
		if _, ok := node[p[len(p)-1]]; ok {
			delete(node, p[len(p)-1])
			erased = append(erased, "/detail/"+strings.Join(p, "/"))
		}
	}
	return erased
}

// clone copies d deeply enough for redact (nested maps).
func clone(d map[string]any) map[string]any {
	out := maps.Clone(d)
	for k, v := range out {
		if m, ok := v.(map[string]any); ok {
			out[k] = clone(m)
		}
	}
	return out
}
