package config

import (
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/config/value"
)

// This file gives the typed values of kailash.yaml (package value:
// addresses, networks, URLs parsed once, at load) their names here and
// their lines in the file, and defines once the validation rules more than
// one package applies: ValidTenantID, ValidRole and ValidDomain.

var (
	roleRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
)

// ValidTenantID reports whether id is a tenant id: lowercase letters,
// digits and '-', 1..63, not starting or ending with '-' (a DNS label, so it
// can name schemas, files and Envoy resources). (tenantIDRe, by hand: it
// runs for every tenant of every config.)
func ValidTenantID(id string) bool {
	if len(id) == 0 || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// tenantName is how errors name a tenant: fmt's %q of its id, without fmt
// for the ids that need no escaping (every valid one).
func tenantName(id string) string {
	if ValidTenantID(id) {
		return `tenant "` + id + `"`
	}
	return fmt.Sprintf("tenant %q", id)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// hostPort matches [first][A-Za-z0-9.-]*[A-Za-z0-9] or a lone [first]
// (first: a letter, a digit, or '*' with star), then optionally ':' and
// one or more port characters (digits, and '*' with portStar): the host
// part of domainRe and originRe, by hand.
func hostPort(s string, star, portStar bool) bool {
	host, port, hasPort := strings.Cut(s, ":")
	if host == "" || !(isAlnum(host[0]) || star && host[0] == '*') {
		return false
	}
	if len(host) > 1 {
		if !isAlnum(host[len(host)-1]) {
			return false
		}
		for i := 1; i < len(host)-1; i++ {
			if c := host[i]; !isAlnum(c) && c != '.' && c != '-' {
				return false
			}
		}
	}
	if !hasPort {
		return true
	}
	if port == "" {
		return false
	}
	for i := 0; i < len(port); i++ {
		if c := port[i]; !(c >= '0' && c <= '9' || portStar && c == '*') {
			return false
		}
	}
	return true
}

// validOrigin is originRe's match, by hand.
func validOrigin(o string) bool {
	rest, ok := strings.CutPrefix(o, "https://")
	if !ok {
		if rest, ok = strings.CutPrefix(o, "http://"); !ok {
			return false
		}
	}
	return hostPort(rest, true, false)
}

// ValidRole reports whether r is a role name as quotas and descriptors
// carry it: letters, digits and _ . : -.
func ValidRole(r string) bool { return roleRe.MatchString(r) }

// ValidDomain reports whether d is a tenant domain: a host name, optionally
// with a leading "*." wildcard and a port (or ":*").
// (domainRe, by hand: it runs for every domain of every config.)
func ValidDomain(d string) bool {
	return hostPort(strings.TrimPrefix(d, "*."), false, true)
}

// The typed values live in package value; these are their names here.
type (
	HostPort = value.HostPort
	Prefix   = value.Prefix
	URL      = value.URL
)

// Constructors and parsers of the typed values (package value).
var (
	ParseHostPort    = value.ParseHostPort
	MustHostPort     = value.MustHostPort
	HostPortFromText = value.HostPortFromText
	SplitHostPort    = value.SplitHostPort
	ParsePrefix      = value.ParsePrefix
	MustPrefix       = value.MustPrefix
	ParseCIDR        = value.ParseCIDR
	ParseURL         = value.ParseURL
	MustURL          = value.MustURL
)

// httpURLValue reports whether u is a valid http or https URL.
func httpURLValue(u URL) bool {
	return !u.IsZero() && u.Err() == nil && (u.Scheme() == "https" || u.Scheme() == "http")
}

// setValueLines gives the tenant's typed values their lines in the file,
// following aliases to their anchors. A value not found in n (one from a
// merge key, say) gets 0, and errors then name the tenant's line.
func (t *Tenant) setValueLines(n *yaml.Node) {
	for i := range t.Upstreams {
		t.Upstreams[i].SetLine(itemLine(child(n, "upstreams"), i))
	}
	for i := range t.IPAllowlist {
		t.IPAllowlist[i].SetLine(itemLine(child(n, "ip_allowlist"), i))
	}
	t.JWT.JWKSURL.SetLine(itemLine(child(child(n, "jwt"), "jwks_url"), -1))
	issuers := child(n, "issuers")
	for i := range t.Issuers {
		var item *yaml.Node
		if issuers != nil && issuers.Kind == yaml.SequenceNode && i < len(issuers.Content) {
			item = issuers.Content[i]
		}
		t.Issuers[i].JWKSURL.SetLine(itemLine(child(item, "jwks_url"), -1))
		t.Issuers[i].DiscoveryURL.SetLine(itemLine(child(item, "discovery_url"), -1))
	}
	if o := t.Login.OIDC; o != nil {
		on := child(child(n, "login"), "oidc")
		o.DiscoveryURL.SetLine(itemLine(child(on, "discovery_url"), -1))
		o.RedirectURL.SetLine(itemLine(child(on, "redirect_url"), -1))
		o.PostLogoutRedirectURL.SetLine(itemLine(child(on, "post_logout_redirect_url"), -1))
	}
}

// child is the value of key in mapping n (nil when absent).
func child(n *yaml.Node, key string) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// itemLine is the line of n's i-th item (of n itself for i < 0); 0 when
// there is none.
func itemLine(n *yaml.Node, i int) int {
	switch {
	case n == nil:
		return 0
	case i < 0:
		return n.Line
	case n.Kind == yaml.SequenceNode && i < len(n.Content):
		return n.Content[i].Line
	}
	return 0
}

// lineOr is line when known, else def.
func lineOr(line, def int) int {
	if line > 0 {
		return line
	}
	return def
}
