// Package envoy holds what Kailash needs of the Envoy binary: the ADS
// bootstrap (Envoy's only static configuration; everything else comes over
// xDS), finding the pinned binary, and a launcher that runs Envoy as a child
// process and never leaves it behind.
package envoy

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"text/template"

	"github.com/kailash-gw/kailash/internal/config"
)

// Version is the Envoy release Kailash is built and tested against
// (pinned in envoy/fetch.sh together with the wheel's sha256).
const Version = "1.40.0"

//go:embed bootstrap.yaml.tmpl
var bootstrapTmpl string

var tmpl = template.Must(template.New("bootstrap").Option("missingkey=error").Funcs(template.FuncMap{"q": quote}).Parse(bootstrapTmpl))

// quote is s as a YAML (JSON) double-quoted string.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Bootstrap renders the bootstrap for cfg: node identity, admin on
// cfg.Envoy.Admin (127.0.0.1:0 when unset) and ADS pointing at cfg.XDS.GRPC,
// over mutual TLS when envoy.xds_tls is set.
//
// The bootstrap is rendered where Envoy runs, so the files of every
// envoy.*_tls section are checked here (readable, key matching
// certificate): a missing file fails now, naming the config line, rather
// than as an Envoy NACK later.
func Bootstrap(cfg *config.Config) ([]byte, error) {
	xh, xp, err := config.SplitHostPort(cfg.XDS.GRPC)
	if err != nil {
		return nil, fmt.Errorf("xds.grpc: %w", err)
	}
	admin := cfg.Envoy.Admin
	if admin == "" {
		admin = "127.0.0.1:0"
	}
	ah, ap, err := splitAllowZero(admin)
	if err != nil {
		return nil, fmt.Errorf("envoy.admin: %w", err)
	}
	api := "DELTA_GRPC"
	switch cfg.Envoy.XDSProtocol {
	case "", config.XDSDelta:
	case config.XDSSotW:
		api = "GRPC"
	default:
		return nil, fmt.Errorf("envoy.xds_protocol: %q: want %s or %s", cfg.Envoy.XDSProtocol, config.XDSDelta, config.XDSSotW)
	}
	if err := cfg.CheckAllClientTLS(); err != nil {
		return nil, err
	}
	var xtls *clientTLS
	if cfg.Envoy.XDSTLS.Enabled() {
		if xtls, err = newClientTLS(cfg, cfg.Envoy.XDSTLS, xh); err != nil {
			return nil, fmt.Errorf("envoy.xds_tls: %w", err)
		}
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"XDSTLS":  xtls,
		"APIType": api,
		"NodeID":  cfg.Envoy.NodeID, "Cluster": cfg.Envoy.Cluster,
		"AdminHost": ah, "AdminPort": ap,
		"XDSHost": xh, "XDSPort": xp,
	})
	return b.Bytes(), err
}

func splitAllowZero(addr string) (string, uint32, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || h == "" {
		return "", 0, fmt.Errorf("%q: want host:port", addr)
	}
	return h, uint32(port), nil
}

// clientTLS is an envoy.*_tls section as the template writes it.
type clientTLS struct {
	Cert, Key, CA string // absolute paths on Envoy's host
	ServerName    string // the SAN the server's certificate must carry
	SANType       string // DNS or IP_ADDRESS
	SNI           string // ServerName when it is a DNS name
}

func newClientTLS(cfg *config.Config, t config.ClientTLS, host string) (*clientTLS, error) {
	c := &clientTLS{ServerName: t.ServerName}
	if c.ServerName == "" {
		c.ServerName = host
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{{&c.Cert, t.CertFile}, {&c.Key, t.KeyFile}, {&c.CA, t.CAFile}} {
		abs, err := filepath.Abs(cfg.Path(f.v))
		if err != nil {
			return nil, err
		}
		*f.dst = abs
	}
	c.SANType = "DNS"
	if net.ParseIP(c.ServerName) != nil {
		c.SANType = "IP_ADDRESS"
	} else {
		c.SNI = c.ServerName
	}
	return c, nil
}
