// Package status is the /debug/status report every admin HTTP port serves:
// what the process runs (build, config, tenants, policy), what its
// reloaders last did, and which Envoys hold which snapshot. The report is
// bounded (lists are capped, messages cut) and carries no secret: tenants
// are described by ids, domains and flags, URLs lose their user info and
// query, and error messages are the reloaders' own (which name fields and
// files, never values of credentials).
package status

import (
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kailash-gw/kailash/internal/config"
)

// Bounds of a report: an operator's page, not an export.
const (
	MaxTenants    = 500  // tenants listed (Count is always the total)
	MaxDomains    = 20   // domains listed per tenant
	MaxNodes      = 500  // Envoys listed
	MaxReloaders  = 100  // reloaders listed (JWKS sources are one each)
	MaxMessageLen = 1024 // bytes of an error or NACK message
)

// Report is the /debug/status document. Component is "xds" or "authz"; a
// part a component does not have (Policy on xds, Envoys on authz) is
// omitted.
type Report struct {
	Component  string    `json:"component"`
	Time       time.Time `json:"time"`
	Build      Build     `json:"build"`
	ConfigHash string    `json:"config_hash"` // SHA-256 of the config file in force
	Tenants    Tenants   `json:"tenants"`
	Policy     *Policy   `json:"policy,omitempty"`
	Shadow     *Policy   `json:"shadow_policy,omitempty"`
	Snapshot   *Snapshot `json:"snapshot,omitempty"`
	Envoys     *Envoys   `json:"envoys,omitempty"`
	Reloaders  []Reload  `json:"reloaders"`
}

// Build is what binary runs.
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"go_version"`
}

// Tenants are the tenants in force: all of them counted, at most
// MaxTenants listed (sorted by id).
type Tenants struct {
	Count     int      `json:"count"`
	Truncated bool     `json:"truncated,omitempty"`
	List      []Tenant `json:"list"`
}

// Tenant is one tenant as the policy and the edge see it.
type Tenant struct {
	ID      string   `json:"id"`
	Domains []string `json:"domains"`
	// MoreDomains counts the domains beyond MaxDomains.
	MoreDomains int  `json:"more_domains,omitempty"`
	Active      bool `json:"active"`
	// Plan and Features are what the tenant's policy input carries
	// (input.tenant) beside its id: the per-tenant policy overrides.
	Plan     string   `json:"plan,omitempty"`
	Features []string `json:"features,omitempty"`
	// Identity names the tenant's identity sources: jwt, issuers, ldap, saml.
	Identity []string `json:"identity,omitempty"`
}

// Policy is a loaded policy bundle.
type Policy struct {
	Revision string    `json:"revision"`
	Source   string    `json:"source"`
	Decision string    `json:"decision"`
	LoadedAt time.Time `json:"loaded_at"`
	// DecisionCache is the decision cache for this revision: "off",
	// "bypassed: <reason>", or the input paths its key is made of.
	DecisionCache string `json:"decision_cache,omitempty"`
}

// Snapshot is the xDS snapshot being served.
type Snapshot struct {
	Version     string    `json:"version"`
	PublishedAt time.Time `json:"published_at"`
	// Resources counts the snapshot's resources by type URL.
	Resources map[string]int `json:"resources"`
}

// Envoys are the Envoys connected to the control plane, sorted by node id.
type Envoys struct {
	Count     int     `json:"count"`
	Truncated bool    `json:"truncated,omitempty"`
	List      []Envoy `json:"list"`
}

// Envoy is one connected node.
type Envoy struct {
	NodeID         string    `json:"node_id"`
	Cluster        string    `json:"cluster,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	Streams        int       `json:"streams"`
	// AckedVersion is the snapshot version of the node's latest ACK;
	// Acked is the version last acked per type URL.
	AckedVersion string            `json:"acked_version,omitempty"`
	Acked        map[string]string `json:"acked,omitempty"`
	// InSync: the node's latest ACK is of the snapshot being served, no
	// response to it awaits an answer and no type's last answer was a NACK.
	// (Per type, Acked may lag: delta xDS sends a type only when it changed.)
	InSync   bool  `json:"in_sync"`
	ACKs     int64 `json:"acks"`
	NACKs    int64 `json:"nacks"`
	LastNACK *NACK `json:"last_nack,omitempty"`
}

// NACK is a response an Envoy refused: it keeps the previous version of
// that type.
type NACK struct {
	TypeURL string    `json:"type_url"`
	Version string    `json:"version,omitempty"` // the version refused ("" when unknown)
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Reload is what a reloader (config file, policy bundle, JWKS source,
// certificates) last did.
type Reload struct {
	Name      string    `json:"name"`
	LastOK    time.Time `json:"last_ok,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	ErrorAt   time.Time `json:"last_error_at,omitzero"`
	Failures  int64     `json:"failures"`
	// Failing: the last attempt failed (the last good state serves).
	Failing bool `json:"failing"`
}

// Reloader records one reloader's outcomes; safe for concurrent use.
type Reloader struct {
	name string
	now  func() time.Time

	mu sync.Mutex // guards st
	st Reload
}

// NewReloader is a reloader named name whose last success is now (the
// state a process starts with was loaded at start).
func NewReloader(name string) *Reloader {
	r := &Reloader{name: name, now: time.Now}
	r.st = Reload{Name: name, LastOK: r.now().UTC()}
	return r
}

// Record records an attempt: err nil is a success.
func (r *Reloader) Record(err error) {
	if r == nil {
		return
	}
	now := r.now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.st.LastOK, r.st.Failing = now, false
		return
	}
	r.st.LastError, r.st.ErrorAt, r.st.Failing = Cut(err.Error()), now, true
	r.st.Failures++
}

// Status is the reloader's state.
func (r *Reloader) Status() Reload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// urlSecrets match the parts of URLs in a message that may carry
// credentials: user info, and query strings.
var (
	urlUser  = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s"']*@`)
	urlQuery = regexp.MustCompile(`(?i)(\b[a-z][a-z0-9+.-]*://[^\s"'?]*)\?[^\s"']*`)
)

// Cut makes a message fit for the report: URLs lose their user info and
// query string (which may hold credentials), and it is bounded to
// MaxMessageLen bytes (on a rune boundary).
func Cut(s string) string {
	s = urlUser.ReplaceAllString(s, "$1")
	s = urlQuery.ReplaceAllString(s, "$1?…")
	if len(s) <= MaxMessageLen {
		return s
	}
	s = s[:MaxMessageLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// RedactURL is u without user info, query or fragment: what may be shown.
// A string that is not a URL (a file path, "embedded") is returned as is.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" || p.Host == "" {
		return u
	}
	p.User, p.RawQuery, p.ForceQuery, p.Fragment, p.RawFragment = nil, "", false, "", ""
	return p.String()
}

// TenantsOf describes cfg's tenants within the bounds.
func TenantsOf(cfg *config.Config) Tenants {
	out := Tenants{Count: len(cfg.Tenants), List: []Tenant{}}
	ts := slices.Clone(cfg.Tenants)
	slices.SortFunc(ts, func(a, b config.Tenant) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if len(ts) > MaxTenants {
		ts, out.Truncated = ts[:MaxTenants], true
	}
	for _, t := range ts {
		out.List = append(out.List, tenantOf(t))
	}
	return out
}

func tenantOf(t config.Tenant) Tenant {
	d := t.Domains
	more := 0
	if len(d) > MaxDomains {
		d, more = d[:MaxDomains], len(d)-MaxDomains
	}
	v := Tenant{ID: t.ID, Domains: append([]string{}, d...), MoreDomains: more, Active: t.IsActive(),
		Plan: t.Plan, Features: slices.Clone(t.Features)}
	if t.JWT.JWKSFile != "" || t.JWT.JWKSURL.String() != "" {
		v.Identity = append(v.Identity, "jwt")
	}
	if len(t.Issuers) > 0 {
		v.Identity = append(v.Identity, "issuers")
	}
	if t.LDAP != nil {
		v.Identity = append(v.Identity, "ldap")
	}
	if t.SAML != nil {
		v.Identity = append(v.Identity, "saml")
	}
	return v
}

// Reloads is the status of rs (nil entries skipped), at most MaxReloaders.
func Reloads(rs ...*Reloader) []Reload {
	out := []Reload{}
	for _, r := range rs {
		if r != nil && len(out) < MaxReloaders {
			out = append(out, r.Status())
		}
	}
	return out
}
