// Package value holds the typed values of kailash.yaml: addresses,
// networks and URLs, parsed once when the file is decoded, so nothing
// downstream (the translator, the servers) parses them again. A value that
// does not parse keeps what was written, the reason (Err) and its line;
// config.Validate reports it with the file, the line and the field, beside
// every other problem. Values built in code come from ParseHostPort,
// ParsePrefix and ParseURL (or their Must forms) and are always valid.
//
// Package config re-exports every name here; use those.
package value

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// HostPort is a "host:port" address: a host name or an IP literal and a
// port 1..65535. The zero value is "not set".
type HostPort struct {
	host string
	port uint16
	ip   netip.Addr // valid when host is an IP literal
	bad             // set when decoding failed
}

// bad is what a value that did not decode keeps for Validate: the text as
// written, the reason and the line.
type bad struct {
	raw  string
	err  error
	line int
}

// ParseHostPort parses "host:port" ("[::1]:80" for IPv6). Port 0 (let
// the kernel pick, for a server's listener) is allowed in code; in
// kailash.yaml the port is 1..65535, and the translator refuses 0.
func ParseHostPort(s string) (HostPort, error) {
	if h, p, err := net.SplitHostPort(s); err == nil && p == "0" && h != "" {
		s = net.JoinHostPort(h, "1")
		hp, err := parseHostPort(s)
		hp.port = 0
		return hp, err
	}
	return parseHostPort(s)
}

// parseHostPort is kailash.yaml's rule: a host and a port 1..65535.
func parseHostPort(s string) (HostPort, error) {
	h, port, err := SplitHostPort(s)
	if err != nil {
		return HostPort{}, err
	}
	hp := HostPort{host: h, port: uint16(port)}
	if a, err := netip.ParseAddr(h); err == nil {
		hp.ip = a
	}
	return hp, nil
}

// MustHostPort is ParseHostPort for addresses written in code ("" is not
// set); it panics on a bad one.
func MustHostPort(s string) HostPort {
	if s == "" {
		return HostPort{}
	}
	hp, err := ParseHostPort(s)
	if err != nil {
		panic(err)
	}
	return hp
}

// HostPortFromText is s as the decoder reads it (for flags and other text
// given outside kailash.yaml): "" is not set, and text that does not parse
// is kept with the reason (Err), which servers and the translator refuse.
func HostPortFromText(s string) HostPort {
	if s == "" {
		return HostPort{}
	}
	hp, err := ParseHostPort(s)
	if err != nil {
		return HostPort{bad: bad{raw: s, err: err}}
	}
	return hp
}

// IsZero reports whether the address is not set.
func (h HostPort) IsZero() bool { return h.host == "" && h.raw == "" }

// Host is the host name or IP literal (without brackets).
func (h HostPort) Host() string { return h.host }

// Port is the port (0 when not set).
func (h HostPort) Port() uint32 { return uint32(h.port) }

// IsIP reports whether the host is an IP literal.
func (h HostPort) IsIP() bool { return h.ip.IsValid() }

// AddrPort is the address as an IP and port; ok is false for a host name.
func (h HostPort) AddrPort() (ap netip.AddrPort, ok bool) {
	if !h.ip.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(h.ip, h.port), true
}

// String is "host:port" as net.Dial and net.Listen take it ("" when not set;
// the text as written when it did not parse).
func (h HostPort) String() string {
	if h.host == "" {
		return h.raw
	}
	return net.JoinHostPort(h.host, strconv.Itoa(int(h.port)))
}

// UnmarshalYAML parses a scalar; see the file comment for bad values.
func (h *HostPort) UnmarshalYAML(n *yaml.Node) error {
	return decodeValue(n, h, parseHostPort)
}

// MarshalYAML writes the address back as text.
func (h HostPort) MarshalYAML() (any, error) { return h.String(), nil }

// Prefix is an IP network: "10.0.0.0/8", "2001:db8::/32", or a bare address
// (a /32 or /128). It has no host bits set.
type Prefix struct {
	p netip.Prefix
	bad
}

// ParsePrefix parses a CIDR or a bare address.
func ParsePrefix(s string) (Prefix, error) {
	p, err := ParseCIDR(s)
	return Prefix{p: p}, err
}

// MustPrefix is ParsePrefix for networks written in code.
func MustPrefix(s string) Prefix {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Prefix is the network (invalid when not set).
func (p Prefix) Prefix() netip.Prefix { return p.p }

// String is the network in CIDR form.
func (p Prefix) String() string {
	if !p.p.IsValid() {
		return p.raw
	}
	return p.p.String()
}

// UnmarshalYAML parses a scalar; see the file comment for bad values.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error { return decodeValue(n, p, ParsePrefix) }

// MarshalYAML writes the network back as text.
func (p Prefix) MarshalYAML() (any, error) { return p.String(), nil }

// URL is an absolute URL (scheme and host). Which schemes a field accepts
// is checked by Validate, which names the field.
type URL struct {
	u    *url.URL
	text string // as written
	bad
}

// ParseURL parses an absolute URL; with schemes, its scheme must be one of
// them.
func ParseURL(s string, schemes ...string) (URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return URL{}, fmt.Errorf("%q is not an absolute URL (scheme://host/...)", s)
	}
	if len(schemes) > 0 && !slices.Contains(schemes, u.Scheme) {
		return URL{}, fmt.Errorf("%q: scheme must be %s", s, strings.Join(schemes, " or "))
	}
	return URL{u: u, text: s}, nil
}

// MustURL is ParseURL for URLs written in code ("" is not set).
func MustURL(s string, schemes ...string) URL {
	if s == "" {
		return URL{}
	}
	u, err := ParseURL(s, schemes...)
	if err != nil {
		panic(err)
	}
	return u
}

// IsZero reports whether the URL is not set.
func (u URL) IsZero() bool { return u.u == nil && u.raw == "" }

// URL is a copy of the parsed URL (nil when not set).
func (u URL) URL() *url.URL {
	if u.u == nil {
		return nil
	}
	c := *u.u
	return &c
}

// Scheme is the URL's scheme, lower-cased ("" when not set).
func (u URL) Scheme() string {
	if u.u == nil {
		return ""
	}
	return u.u.Scheme
}

// String is the URL as written.
func (u URL) String() string {
	if u.u == nil {
		return u.raw
	}
	return u.text
}

// UnmarshalYAML parses a scalar; see the file comment for bad values.
func (u *URL) UnmarshalYAML(n *yaml.Node) error {
	return decodeValue(n, u, func(s string) (URL, error) { return ParseURL(s) })
}

// MarshalYAML writes the URL back as text.
func (u URL) MarshalYAML() (any, error) { return u.String(), nil }

// value is what decodeValue fills: a typed value that can also record a
// bad one.
type value interface {
	HostPort | Prefix | URL
}

// decodeValue decodes a scalar node with parse. A node that is not a
// scalar is a decoding error naming its line; a scalar that does not parse
// is kept, with the reason, for Validate (which knows the field's name and
// reports every problem at once). An empty scalar is the zero value.
func decodeValue[T value](n *yaml.Node, out *T, parse func(string) (T, error)) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a string, not a %s", n.Line, kindName(n.Kind))}}
	}
	var zero T
	*out = zero
	if n.Value == "" || n.Tag == "!!null" {
		return nil
	}
	v, err := parse(n.Value)
	if err != nil {
		b := bad{raw: n.Value, err: err, line: n.Line}
		switch o := any(out).(type) {
		case *HostPort:
			o.bad = b
		case *Prefix:
			o.bad = b
		case *URL:
			o.bad = b
		}
		return nil
	}
	*out = v
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// Err is why the value did not parse when it was decoded (nil when it did,
// and for values built in code). Validate reports it; the translator
// refuses a config holding one.
func (b bad) Err() error { return b.err }

// Line is where the value is in the file (0 when not known).
func (b bad) Line() int { return b.line }

// SetLine records where the value is in the file.
func (b *bad) SetLine(n int) { b.line = n }

// MarshalText makes logs and JSON show the values as text.
func (h HostPort) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// MarshalText makes logs and JSON show the values as text.
func (p Prefix) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// MarshalText makes logs and JSON show the values as text.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// SplitHostPort splits "host:port" and checks the port is numeric.
func SplitHostPort(addr string) (string, uint32, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var port uint32
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil || port == 0 || port > 65535 || fmt.Sprint(port) != p {
		return "", 0, fmt.Errorf("%q: port must be 1..65535", addr)
	}
	if h == "" {
		return "", 0, fmt.Errorf("%q: host is required", addr)
	}
	return h, port, nil
}

// ParseCIDR parses "10.0.0.0/8", "2001:db8::/32" or a bare address (a /32
// or /128). The prefix must have no host bits set.
func ParseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an IP address", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
