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
// cfg.Envoy.Admin (127.0.0.1:0 when unset) and ADS pointing at cfg.XDS.GRPC
// (or at every control-plane replica of envoy.xds_addresses, one cluster),
// over mutual TLS when envoy.xds_tls is set.
//
// The bootstrap is rendered where Envoy runs, so the files of every
// envoy.*_tls section are checked here (readable, key matching
// certificate): a missing file fails now, naming the config line, rather
// than as an Envoy NACK later.
func Bootstrap(cfg *config.Config) ([]byte, error) {
	xds, err := xdsEndpoints(cfg)
	if err != nil {
		return nil, err
	}
	xh := xds.Endpoints[0].Host
	admin := cfg.Envoy.Admin.String()
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
		"XDS": xds,
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

// xdsCluster is the control plane as the bootstrap's kailash_xds cluster.
type xdsCluster struct {
	// Type is STATIC when every host is an IP address, else STRICT_DNS
	// (each name resolved, all its addresses used: e.g. a headless
	// Kubernetes Service of the replicas).
	Type      string
	Endpoints []hostPort
}

type hostPort struct {
	Host string
	Port uint32
}

// xdsEndpoints are cfg's control-plane addresses (config.XDSEndpoints).
// Envoy keeps one ADS stream on one of them at a time (the cluster's round
// robin picks it); when that stream breaks, it reconnects with backoff,
// and round robin moves the next attempt to the next replica.
func xdsEndpoints(cfg *config.Config) (*xdsCluster, error) {
	c := &xdsCluster{Type: "STATIC"}
	field := "xds.grpc"
	if len(cfg.Envoy.XDSAddresses) > 0 {
		field = "envoy.xds_addresses"
	}
	for _, a := range cfg.XDSEndpoints() {
		if err := a.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if a.IsZero() {
			return nil, fmt.Errorf("%s: required (host:port)", field)
		}
		if !a.IsIP() {
			c.Type = "STRICT_DNS"
		}
		c.Endpoints = append(c.Endpoints, hostPort{a.Host(), a.Port()})
	}
	return c, nil
}
