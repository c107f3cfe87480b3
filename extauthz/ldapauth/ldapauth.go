// Package ldapauth checks a username and password against an LDAP directory
// (OpenLDAP, Active Directory): a service account searches for the user with
// an escaped filter, the user's own bind checks the password, and the entry's
// attributes and groups become an Identity.
//
// Two outcomes matter to callers and are kept apart on purpose:
// ErrInvalidCredentials (answer 401; the same for an unknown user and a wrong
// password) and ErrUnavailable (the directory could not decide: answer 503,
// never 401).
package ldapauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/kailash-gw/kailash/internal/telemetry"
)

// The two errors callers branch on. Every error Authenticate returns wraps
// exactly one of them.
var (
	// ErrInvalidCredentials: unknown user, wrong or empty password, or a
	// username that cannot be valid. Deliberately one error for all.
	ErrInvalidCredentials = errors.New("ldap: invalid credentials")
	// ErrUnavailable: the directory is unreachable, timed out or answered
	// something we cannot interpret. The login must fail with 503.
	ErrUnavailable = errors.New("ldap: directory unavailable")
)

// Reason codes carried by *Error: stable, for audit logs and metric labels.
// They must never reach the client, which only learns the Kind.
const (
	ReasonEmptyPassword   = "empty_password"
	ReasonInvalidUsername = "invalid_username"
	ReasonUnknownUser     = "unknown_user"
	ReasonAmbiguousUser   = "ambiguous_user"
	ReasonWrongPassword   = "wrong_password"
	ReasonUnreachable     = "unreachable"
	ReasonServiceBind     = "service_bind_failed"
	ReasonSearch          = "search_failed"
	ReasonTimeout         = "timeout"
	ReasonTLS             = "tls"
	ReasonNoUsername      = "no_username_attribute"
)

// Error is an authentication failure. Error() prints only the Kind, so an
// unknown user and a wrong password are indistinguishable even to a caller
// that echoes the message; Reason and Err are for the audit log.
type Error struct {
	Kind   error // ErrInvalidCredentials or ErrUnavailable
	Reason string
	Err    error // the underlying cause, if any (never contains the password)
}

func (e *Error) Error() string { return e.Kind.Error() }

// Unwrap lets errors.Is match the Kind.
func (e *Error) Unwrap() error { return e.Kind }

// Reason returns the audit reason of err ("" when it is not an *Error).
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func invalid(reason string, cause error) error {
	return &Error{Kind: ErrInvalidCredentials, Reason: reason, Err: cause}
}

func unavailable(reason string, cause error) error {
	return &Error{Kind: ErrUnavailable, Reason: reason, Err: cause}
}

// Attributes names the directory attributes read into an Identity. Empty
// fields take the defaults of DefaultAttributes.
type Attributes struct {
	// Username is the attribute holding the account's name as the
	// directory stores it: the canonical spelling that becomes
	// Identity.Username, whatever spelling the user typed. Empty: the
	// attribute UserFilter compares with the username ("(uid=%s)": uid,
	// "(&(objectClass=user)(sAMAccountName=%s))": sAMAccountName), else uid.
	Username   string
	Email      string
	GivenName  string
	FamilyName string
	Department string
	Title      string
	Clearance  string
	Location   string
	// Groups is the multi-valued attribute listing the user's group DNs.
	Groups string
}

// DefaultAttributes fit inetOrgPerson plus the memberof overlay (and AD,
// except department, which AD also calls department).
var DefaultAttributes = Attributes{
	Email: "mail", GivenName: "givenName", FamilyName: "sn", Department: "department",
	Title: "title", Clearance: "clearance", Location: "l", Groups: "memberOf",
}

// Config describes one directory.
type Config struct {
	// URL is ldap://host[:port] or ldaps://host[:port].
	URL string
	// StartTLS upgrades an ldap:// connection before any bind.
	StartTLS bool
	// CAFile is a PEM bundle of the CAs trusted for ldaps/StartTLS (empty:
	// the system roots). ServerName overrides the name checked in the
	// server certificate (default: the URL's host).
	CAFile     string
	ServerName string
	// BindDN and BindPassword are the service account that searches.
	BindDN       string
	BindPassword telemetry.Secret
	// UserBaseDN is where users are searched (whole subtree).
	UserBaseDN string
	// UserFilter has exactly one %s, replaced by the escaped username,
	// e.g. "(uid=%s)" or "(&(objectClass=user)(sAMAccountName=%s))".
	UserFilter string
	// Attributes maps identity fields to directory attributes.
	Attributes Attributes
	// GroupRoles maps a group DN (compared case-insensitively, as DNs) to a
	// role. Groups without an entry give no role.
	GroupRoles map[string]string
	// DialTimeout bounds connecting (and the TLS handshake); RequestTimeout
	// bounds each LDAP operation. Defaults 5s and 5s; the caller's context
	// deadline, when shorter, wins.
	DialTimeout    time.Duration
	RequestTimeout time.Duration
	// PoolSize bounds the open service-account connections (default 8).
	PoolSize int
}

// Identity is an authenticated directory user.
type Identity struct {
	Username   string
	DN         string
	Email      string
	GivenName  string
	FamilyName string
	Department string
	Title      string
	Clearance  string
	Location   string
	// Groups are the user's group DNs as the directory returned them.
	Groups []string
	// Roles are the mapped roles, sorted and without duplicates.
	Roles []string
}

// Attributes returns the non-empty policy attributes (for input.identity.attributes).
func (id *Identity) Attributes() map[string]string {
	m := map[string]string{}
	for k, v := range map[string]string{
		"email": id.Email, "given_name": id.GivenName, "family_name": id.FamilyName,
		"department": id.Department, "title": id.Title, "clearance": id.Clearance, "location": id.Location,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// Authenticator checks credentials against one directory. It is safe for
// concurrent use; Close releases its pooled connections.
type Authenticator struct {
	cfg        Config
	attrs      Attributes
	attrList   []string
	groupRoles []groupRole
	dummyDN    string
	dialer     dialer
	search     *pool // service-account bound connections
	binds      *pool // connections used only for user binds
	log        *slog.Logger
}

type groupRole struct {
	dn   *ldap.DN
	role string
}

// Option tunes an Authenticator.
type Option func(*Authenticator)

// WithLogger sets where failures are logged (default slog.Default()).
// Passwords are never logged.
func WithLogger(l *slog.Logger) Option { return func(a *Authenticator) { a.log = l } }

// New validates cfg and returns an Authenticator. It does not connect: the
// first login does, so a directory that is down at start-up only fails
// logins (503) until it is back.
func New(cfg Config, opts ...Option) (*Authenticator, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		return nil, fmt.Errorf("ldap: url %q: want ldap://host[:port] or ldaps://host[:port]", cfg.URL)
	}
	if cfg.StartTLS && u.Scheme == "ldaps" {
		return nil, errors.New("ldap: start_tls is for ldap:// URLs; ldaps:// is already TLS")
	}
	if strings.Count(cfg.UserFilter, "%s") != 1 || strings.Count(cfg.UserFilter, "%") != 1 {
		return nil, fmt.Errorf("ldap: user_filter %q: must contain exactly one %%s and no other %%", cfg.UserFilter)
	}
	if _, err := ldap.CompileFilter(fmt.Sprintf(cfg.UserFilter, "x")); err != nil {
		return nil, fmt.Errorf("ldap: user_filter %q: %v", cfg.UserFilter, err)
	}
	if _, err := ldap.ParseDN(cfg.UserBaseDN); err != nil || cfg.UserBaseDN == "" {
		return nil, fmt.Errorf("ldap: user_base_dn %q: not a DN", cfg.UserBaseDN)
	}
	if cfg.BindDN == "" || cfg.BindPassword == "" {
		return nil, errors.New("ldap: bind_dn and bind_password are required (anonymous search is not supported)")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 8
	}
	a := &Authenticator{cfg: cfg, attrs: withDefaults(cfg.Attributes), log: slog.Default()}
	if a.attrs.Username == "" {
		a.attrs.Username = filterAttribute(cfg.UserFilter)
	}
	for _, o := range opts {
		o(a)
	}
	for dn, role := range cfg.GroupRoles {
		parsed, err := ldap.ParseDN(dn)
		if err != nil {
			return nil, fmt.Errorf("ldap: group_roles: %q is not a DN: %v", dn, err)
		}
		a.groupRoles = append(a.groupRoles, groupRole{dn: parsed, role: role})
	}
	at := a.attrs
	a.attrList = compact([]string{at.Username, at.Email, at.GivenName, at.FamilyName, at.Department, at.Title, at.Clearance, at.Location, at.Groups})
	// Binding as this DN fails like a wrong password does, so an unknown
	// user costs the same round trips as a known one.
	a.dummyDN = "cn=kailash-no-such-user," + cfg.UserBaseDN

	var tlsConf *tls.Config
	if u.Scheme == "ldaps" || cfg.StartTLS {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
		if tlsConf.ServerName == "" {
			tlsConf.ServerName = u.Hostname()
		}
		if cfg.CAFile != "" {
			pemBytes, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ldap: ca_file: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("ldap: ca_file %s: no PEM certificates", cfg.CAFile)
			}
			tlsConf.RootCAs = roots
		}
	}
	host := u.Host
	if u.Port() == "" {
		port := "389"
		if u.Scheme == "ldaps" {
			port = "636"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	a.dialer = dialer{addr: host, ldaps: u.Scheme == "ldaps", startTLS: cfg.StartTLS, tls: tlsConf,
		dialTimeout: cfg.DialTimeout, requestTimeout: cfg.RequestTimeout}
	a.search = newPool(cfg.PoolSize, func(ctx context.Context) (*ldap.Conn, error) {
		c, err := a.dialer.dial(ctx)
		if err != nil {
			return nil, err
		}
		if err := withCtx(ctx, c, cfg.RequestTimeout, func() error {
			return c.Bind(cfg.BindDN, string(cfg.BindPassword))
		}); err != nil {
			c.Close()
			return nil, errServiceBind{err}
		}
		return c, nil
	})
	a.binds = newPool(cfg.PoolSize, a.dialer.dial)
	return a, nil
}

type errServiceBind struct{ err error }

func (e errServiceBind) Error() string { return "service account bind: " + e.err.Error() }
func (e errServiceBind) Unwrap() error { return e.err }

func withDefaults(a Attributes) Attributes {
	d := DefaultAttributes
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	return Attributes{
		Username: a.Username, // empty: from the filter (New)
		Email:    pick(a.Email, d.Email), GivenName: pick(a.GivenName, d.GivenName),
		FamilyName: pick(a.FamilyName, d.FamilyName), Department: pick(a.Department, d.Department),
		Title: pick(a.Title, d.Title), Clearance: pick(a.Clearance, d.Clearance),
		Location: pick(a.Location, d.Location), Groups: pick(a.Groups, d.Groups),
	}
}

// filterAttribute is the attribute a user filter compares with the
// username: the attribute description of its "(attr=%s)" assertion, or uid
// when there is none (a substring or extensible match).
func filterAttribute(filter string) string {
	i := strings.Index(filter, "=%s)")
	if i < 0 {
		return "uid"
	}
	attr := filter[strings.LastIndexByte(filter[:i], '(')+1 : i]
	if attr == "" || strings.IndexFunc(attr, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ';')
	}) >= 0 {
		return "uid"
	}
	return attr
}

func compact(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// Close closes the idle pooled connections.
func (a *Authenticator) Close() error {
	a.search.close()
	a.binds.close()
	return nil
}

// MaxUsernameLength bounds usernames (longer ones are invalid credentials).
const MaxUsernameLength = 256

// ValidUsername reports whether a username may be looked up at all: not
// empty, valid UTF-8, at most MaxUsernameLength bytes, no control
// characters (NUL included) and no leading or trailing space.
func ValidUsername(s string) bool {
	if s == "" || len(s) > MaxUsernameLength || !utf8.ValidString(s) || strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Authenticate checks username and password. On success it returns the
// user's identity; otherwise an error wrapping ErrInvalidCredentials or
// ErrUnavailable (see Reason for the audit code). It is Lookup then Verify.
func (a *Authenticator) Authenticate(ctx context.Context, username, password string) (*Identity, error) {
	// An empty password would be an unauthenticated bind, which LDAP
	// servers answer with success: never send one (nor search for it).
	if password == "" {
		return nil, invalid(ReasonEmptyPassword, nil)
	}
	acct, err := a.Lookup(ctx, username)
	if err != nil {
		return nil, err
	}
	return a.Verify(ctx, acct, password)
}

// Account is what a username resolves to in the directory, before any
// password is checked: the entry (Found) or no entry (an unknown user).
// Callers key per-account state, such as failure counters, by it, since the
// directory matches many spellings of a name to one entry (OpenLDAP's uid
// ignores case and width: alice, ALICE, ａｌｉｃｅ and alİce are one
// account).
type Account struct {
	// DN is the entry's DN as the directory returned it ("" when not found).
	DN string
	// Username is the entry's username attribute as stored in the
	// directory (see Attributes.Username): the canonical spelling. ""
	// when not found, or when the entry has no such attribute.
	Username string

	entry *ldap.Entry
}

// Found reports whether the username resolved to an entry.
func (acct *Account) Found() bool { return acct.entry != nil }

// Lookup resolves a username to its Account with the service account's
// search. An unknown user is an Account that is not Found, with no error;
// the errors are ErrInvalidCredentials (a username that cannot be valid,
// one matching several entries) and ErrUnavailable. Lookup reveals whether
// the user exists to its caller, who must not pass that on: Verify an
// unknown Account too, so that both cost the same round trips.
func (a *Authenticator) Lookup(ctx context.Context, username string) (*Account, error) {
	if !ValidUsername(username) {
		return nil, invalid(ReasonInvalidUsername, nil)
	}
	entry, err := a.find(ctx, username)
	if err != nil {
		return nil, err
	}
	acct := &Account{}
	if entry != nil {
		acct.entry, acct.DN, acct.Username = entry, entry.DN, canonicalName(entry, a.attrs.Username)
	}
	return acct, nil
}

// Verify checks the password of a looked-up Account with the user's own
// bind, and returns the identity. An unknown Account binds a DN that does
// not exist, so it costs the same round trips as a wrong password and fails
// the same way (ErrInvalidCredentials). An entry without the username
// attribute cannot make an identity: ErrUnavailable (a directory or
// configuration problem), after the password was checked.
func (a *Authenticator) Verify(ctx context.Context, acct *Account, password string) (*Identity, error) {
	if password == "" {
		return nil, invalid(ReasonEmptyPassword, nil)
	}
	if !acct.Found() {
		if err := a.bind(ctx, a.dummyDN, password); err != nil && errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, invalid(ReasonUnknownUser, nil)
	}
	if err := a.bind(ctx, acct.DN, password); err != nil {
		return nil, err
	}
	if acct.Username == "" {
		return nil, a.unavailable(ctx, ReasonNoUsername,
			fmt.Errorf("entry %q has no %s attribute (the username attribute)", acct.DN, a.attrs.Username))
	}
	return a.identity(acct.Username, acct.entry), nil
}

// canonicalName is the entry's username attribute as stored. Of several
// values, the one naming the entry in its DN's first RDN, else the least:
// the same value whichever the user typed, so that one account has one
// name.
func canonicalName(e *ldap.Entry, attr string) string {
	values := e.GetEqualFoldAttributeValues(attr)
	switch len(values) {
	case 0:
		return ""
	case 1:
		return values[0]
	}
	if dn, err := ldap.ParseDN(e.DN); err == nil && len(dn.RDNs) > 0 {
		for _, ava := range dn.RDNs[0].Attributes {
			if !strings.EqualFold(ava.Type, attr) {
				continue
			}
			for _, v := range values {
				if strings.EqualFold(v, ava.Value) {
					return v
				}
			}
		}
	}
	return slices.Min(values)
}

// find searches for the user's entry; nil without error when there is no
// such user.
func (a *Authenticator) find(ctx context.Context, username string) (*ldap.Entry, error) {
	filter := fmt.Sprintf(a.cfg.UserFilter, ldap.EscapeFilter(username))
	req := ldap.NewSearchRequest(a.cfg.UserBaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(a.cfg.RequestTimeout/time.Second), false, filter, a.attrList, nil)
	var res *ldap.SearchResult
	err := a.search.do(ctx, func(c *ldap.Conn) error {
		var err error
		res, err = searchCtx(ctx, c, a.cfg.RequestTimeout, req)
		return err
	})
	switch {
	case err == nil:
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		a.log.WarnContext(ctx, "ldap: username matches several entries", "filter_template", a.cfg.UserFilter)
		return nil, invalid(ReasonAmbiguousUser, nil)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		// The base DN itself is missing: a configuration problem, not the user's.
		return nil, a.unavailable(ctx, ReasonSearch, err)
	default:
		return nil, a.classify(ctx, ReasonSearch, err)
	}
	switch len(res.Entries) {
	case 0:
		return nil, nil
	case 1:
		return res.Entries[0], nil
	default:
		a.log.WarnContext(ctx, "ldap: username matches several entries", "filter_template", a.cfg.UserFilter)
		return nil, invalid(ReasonAmbiguousUser, nil)
	}
}

// bind checks the password with a bind as dn on a bind-only connection.
func (a *Authenticator) bind(ctx context.Context, dn, password string) error {
	err := a.binds.do(ctx, func(c *ldap.Conn) error {
		return withCtx(ctx, c, a.cfg.RequestTimeout, func() error { return c.Bind(dn, password) })
	})
	switch {
	case err == nil:
		return nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		return invalid(ReasonWrongPassword, nil)
	default:
		return a.classify(ctx, ReasonUnreachable, err)
	}
}

// classify turns any other failure into ErrUnavailable with a reason.
func (a *Authenticator) classify(ctx context.Context, reason string, err error) error {
	var sb errServiceBind
	var cv *tls.CertificateVerificationError
	switch {
	case isTimeout(err):
		reason = ReasonTimeout
	case errors.As(err, &cv) || strings.Contains(err.Error(), "x509:"):
		// go-ldap flattens StartTLS handshake errors into strings.
		reason = ReasonTLS
	case isNetwork(err):
		reason = ReasonUnreachable
	case errors.As(err, &sb):
		reason = ReasonServiceBind
	}
	return a.unavailable(ctx, reason, err)
}

func (a *Authenticator) unavailable(ctx context.Context, reason string, err error) error {
	a.log.ErrorContext(ctx, "ldap: directory unavailable", "reason", reason, "url", a.cfg.URL, "err", err)
	return unavailable(reason, err)
}

func isNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || ldap.IsErrorAnyOf(err, ldap.ErrorNetwork, ldap.LDAPResultServerDown,
		ldap.LDAPResultConnectError, ldap.LDAPResultUnavailable, ldap.LDAPResultBusy)
}

func (a *Authenticator) identity(username string, e *ldap.Entry) *Identity {
	at := a.attrs
	get := e.GetEqualFoldAttributeValue
	id := &Identity{
		Username: username, DN: e.DN,
		Email: get(at.Email), GivenName: get(at.GivenName), FamilyName: get(at.FamilyName),
		Department: get(at.Department), Title: get(at.Title), Clearance: get(at.Clearance),
		Location: get(at.Location),
		Groups:   e.GetEqualFoldAttributeValues(at.Groups),
	}
	for _, g := range id.Groups {
		dn, err := ldap.ParseDN(g)
		if err != nil {
			continue
		}
		for _, gr := range a.groupRoles {
			if gr.dn.EqualFold(dn) {
				id.Roles = append(id.Roles, gr.role)
			}
		}
	}
	id.Roles = compact(id.Roles)
	return id
}
