// Package envoy holds what Kailash needs of the Envoy binary: the ADS
// bootstrap (Envoy's only static configuration; everything else comes over
// xDS), finding the pinned binary, and a launcher that runs Envoy as a child
// process and never leaves it behind.
package envoy

import (
	"bytes"
	_ "embed"
	"fmt"
	"net"
	"strconv"
	"text/template"

	"github.com/kailash-gw/kailash/internal/config"
)

// Version is the Envoy release Kailash is built and tested against
// (pinned in envoy/fetch.sh together with the wheel's sha256).
const Version = "1.40.0"

//go:embed bootstrap.yaml.tmpl
var bootstrapTmpl string

var tmpl = template.Must(template.New("bootstrap").Option("missingkey=error").Parse(bootstrapTmpl))

// Bootstrap renders the bootstrap for cfg: node identity, admin on
// cfg.Envoy.Admin (127.0.0.1:0 when unset) and ADS pointing at cfg.XDS.GRPC.
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
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
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
