package config

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"

	"gopkg.in/yaml.v3"
)

// ServerTLS is mutual TLS on one of our gRPC servers (xds.tls, authz.tls,
// ratelimit.tls): the server's certificate and key, and the CA that every
// client certificate must chain to. Clients without a certificate signed by
// that CA are refused during the handshake (TLS 1.3 only). All three files
// are required once any is set; they live on the server's host, are read
// when the server starts and re-read when they change.
type ServerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`

	// BindNodeID (xds.tls only; default true) ties the node id a client
	// sends to its certificate: the id must be the certificate's common
	// name, one of its DNS or URI SANs, or listed for one of those in
	// NodeIDs. A client with a valid certificate for node A cannot fetch
	// node B's resources.
	BindNodeID *bool `yaml:"bind_node_id"`
	// NodeIDs (xds.tls only) maps a certificate identity (common name, DNS
	// or URI SAN) to further node ids it may claim.
	NodeIDs map[string][]string `yaml:"node_ids"`

	// Line is where the section starts in the file (for error messages).
	Line int `yaml:"-"`
}

// Enabled reports whether any file is set (then all three must be).
func (t ServerTLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != ""
}

// BindsNodeID reports whether node ids are bound to certificates (xds.tls).
func (t ServerTLS) BindsNodeID() bool { return t.BindNodeID == nil || *t.BindNodeID }

// MayClaim reports whether a client whose certificate carries identities
// may use node id node (see BindNodeID).
func (t ServerTLS) MayClaim(identities []string, node string) bool {
	if node == "" {
		return false
	}
	for _, id := range identities {
		if id == node {
			return true
		}
		for _, n := range t.NodeIDs[id] {
			if n == node {
				return true
			}
		}
	}
	return false
}

// UnmarshalYAML records the section's line and decodes strictly.
func (t *ServerTLS) UnmarshalYAML(n *yaml.Node) error {
	type serverTLSSection ServerTLS
	var p serverTLSSection
	if err := decodeStrict(n, &p); err != nil {
		return err
	}
	*t = ServerTLS(p)
	t.Line = n.Line
	return nil
}

// ClientTLS is the certificate Envoy presents to one of our gRPC servers
// (envoy.xds_tls, envoy.authz_tls, envoy.ratelimit_tls) and the CA it
// checks the server's certificate with. The files are on Envoy's host and
// reach Envoy by path only (the bootstrap, or a cluster's transport
// socket): the key never travels over xDS. Use absolute paths when the
// control plane and Envoy run on different hosts; a relative path is
// resolved against the config file's directory on the host that renders it.
type ClientTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
	// ServerName is the name the server's certificate must carry (a DNS
	// or IP SAN), also sent as SNI; default: the host of the server's
	// address.
	ServerName string `yaml:"server_name"`

	Line int `yaml:"-"`
}

// Enabled reports whether any file is set (then all three must be).
func (t ClientTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// UnmarshalYAML records the section's line and decodes strictly.
func (t *ClientTLS) UnmarshalYAML(n *yaml.Node) error {
	type clientTLSSection ClientTLS
	var p clientTLSSection
	if err := decodeStrict(n, &p); err != nil {
		return err
	}
	*t = ClientTLS(p)
	t.Line = n.Line
	return nil
}

// validateMTLS checks the mTLS sections' shape: every file of a section,
// each server section with its Envoy counterpart. Files are read where they
// are used (LoadServerTLS, CheckClientTLS), because in a multi-host
// deployment each host holds only its own keys.
func (c *Config) validateMTLS(at func(line int, format string, args ...any)) {
	server := func(field string, t ServerTLS, xds bool) {
		if !t.Enabled() {
			if t.BindNodeID != nil || len(t.NodeIDs) > 0 {
				at(t.Line, "%s: bind_node_id and node_ids need cert_file, key_file and client_ca_file", field)
			}
			return
		}
		for _, f := range []struct{ name, v string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"client_ca_file", t.ClientCAFile}} {
			if f.v == "" {
				at(t.Line, "%s.%s: required (mutual TLS needs the server's certificate, its key and the CA of its clients)", field, f.name)
			}
		}
		if !xds && (t.BindNodeID != nil || len(t.NodeIDs) > 0) {
			at(t.Line, "%s: bind_node_id and node_ids apply to xds.tls only", field)
		}
		for id, nodes := range t.NodeIDs {
			if id == "" || len(nodes) == 0 {
				at(t.Line, "%s.node_ids: %q: want a certificate identity and at least one node id", field, id)
			}
		}
	}
	client := func(field string, t ClientTLS) {
		if !t.Enabled() {
			if t.ServerName != "" {
				at(t.Line, "%s.server_name: needs cert_file, key_file and ca_file", field)
			}
			return
		}
		for _, f := range []struct{ name, v string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"ca_file", t.CAFile}} {
			if f.v == "" {
				at(t.Line, "%s.%s: required (Envoy presents a certificate and checks the server's against the CA)", field, f.name)
			}
		}
	}
	pair := func(sfield string, s ServerTLS, cfield string, ct ClientTLS) {
		switch {
		case s.Enabled() && !ct.Enabled():
			at(s.Line, "%s is set but %s is not: the server would refuse Envoy, which has no client certificate", sfield, cfield)
		case !s.Enabled() && ct.Enabled():
			at(ct.Line, "%s is set but %s is not: Envoy would speak TLS to a plaintext server", cfield, sfield)
		}
	}
	server("xds.tls", c.XDS.TLS, true)
	server("authz.tls", c.Authz.TLS, false)
	server("ratelimit.tls", c.RateLimit.TLS, false)
	client("envoy.xds_tls", c.Envoy.XDSTLS)
	client("envoy.authz_tls", c.Envoy.AuthzTLS)
	client("envoy.ratelimit_tls", c.Envoy.RateLimitTLS)
	pair("xds.tls", c.XDS.TLS, "envoy.xds_tls", c.Envoy.XDSTLS)
	pair("authz.tls", c.Authz.TLS, "envoy.authz_tls", c.Envoy.AuthzTLS)
	pair("ratelimit.tls", c.RateLimit.TLS, "envoy.ratelimit_tls", c.Envoy.RateLimitTLS)
	if c.RateLimit.TLS.Enabled() && c.RateLimit.GRPC.IsZero() {
		at(c.RateLimit.TLS.Line, "ratelimit.tls: needs ratelimit.grpc")
	}
}

// ServerTLSMaterial is a ServerTLS section's files, read and checked.
type ServerTLSMaterial struct {
	Certificate tls.Certificate
	ClientCAs   *x509.CertPool
	// Digest identifies the contents (to tell a real change from a touch).
	Digest string
}

// LoadServerTLS reads and checks a server section's files: the
// certificate parses, the key matches it, the client CA file holds at least
// one CA certificate. field names the section ("xds.tls") in errors, which
// name the file and line and never the contents.
func (c *Config) LoadServerTLS(field string, t ServerTLS) (*ServerTLSMaterial, error) {
	loc := c.loc(t.Line)
	if !t.Enabled() {
		return nil, fmt.Errorf("%s: %s: not configured", loc, field)
	}
	var errs []error
	cert, err := c.loadKeyPair(loc, field, "cert_file", "key_file", t.CertFile, t.KeyFile)
	if err != nil {
		errs = append(errs, err)
	}
	pool, caPEM, err := c.loadCAs(loc, field+".client_ca_file", t.ClientCAFile)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var digest bytes.Buffer
	for _, d := range cert.Certificate {
		digest.Write(d)
	}
	digest.Write(caPEM)
	return &ServerTLSMaterial{Certificate: cert, ClientCAs: pool, Digest: fmt.Sprintf("%x", sha256.Sum256(digest.Bytes()))}, nil
}

// CheckClientTLS checks a client (Envoy) section's files on this host:
// readable, the key matches the certificate, the CA file holds a CA. It is
// run where Envoy's bootstrap is rendered, which is Envoy's host.
func (c *Config) CheckClientTLS(field string, t ClientTLS) error {
	loc := c.loc(t.Line)
	if !t.Enabled() {
		return nil
	}
	var errs []error
	if _, err := c.loadKeyPair(loc, field, "cert_file", "key_file", t.CertFile, t.KeyFile); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.loadCAs(loc, field+".ca_file", t.CAFile); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ClientTLSSections are Envoy's client sections by field name, for callers
// that check them all.
func (c *Config) ClientTLSSections() map[string]ClientTLS {
	return map[string]ClientTLS{
		"envoy.xds_tls": c.Envoy.XDSTLS, "envoy.authz_tls": c.Envoy.AuthzTLS, "envoy.ratelimit_tls": c.Envoy.RateLimitTLS,
	}
}

// CheckAllClientTLS is CheckClientTLS on every Envoy section, in a stable
// order.
func (c *Config) CheckAllClientTLS() error {
	secs := c.ClientTLSSections()
	names := make([]string, 0, len(secs))
	for n := range secs {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		errs = append(errs, c.CheckClientTLS(n, secs[n]))
	}
	return errors.Join(errs...)
}

func (c *Config) loc(line int) string {
	loc := c.File
	if loc == "" {
		loc = "config"
	}
	if line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, line)
	}
	return loc
}

func (c *Config) loadKeyPair(loc, field, certField, keyField, certFile, keyFile string) (tls.Certificate, error) {
	var errs []error
	certPEM, err := os.ReadFile(c.Path(certFile))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %s.%s: %w", loc, field, certField, err))
	}
	keyPEM, err := os.ReadFile(c.Path(keyFile))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %s.%s: %w", loc, field, keyField, err))
	}
	if len(errs) > 0 {
		return tls.Certificate{}, errors.Join(errs...)
	}
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return tls.Certificate{}, fmt.Errorf("%s: %s.%s: %s holds no PEM certificate", loc, field, certField, certFile)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || !bytes.HasSuffix([]byte(b.Type), []byte("PRIVATE KEY")) {
		return tls.Certificate{}, fmt.Errorf("%s: %s.%s: %s holds no PEM private key", loc, field, keyField, keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors name the mismatch, never key material.
		return tls.Certificate{}, fmt.Errorf("%s: %s: %s and %s: %v", loc, field, certField, keyField, err)
	}
	return cert, nil
}

func (c *Config) loadCAs(loc, field, file string) (*x509.CertPool, []byte, error) {
	b, err := os.ReadFile(c.Path(file))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", loc, field, err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %s: %v", loc, field, file, err)
		}
		if !cert.IsCA {
			return nil, nil, fmt.Errorf("%s: %s: %s: %q is not a CA certificate", loc, field, file, cert.Subject.CommonName)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, nil, fmt.Errorf("%s: %s: %s holds no PEM certificate", loc, field, file)
	}
	return pool, b, nil
}
