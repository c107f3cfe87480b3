package config

// XDSEndpoints are the control-plane addresses Envoy connects to:
// envoy.xds_addresses, or xds.grpc alone when that is unset. Every replica
// of `kailash xds` reading the same config serves the same snapshot, so
// Envoy may use any of them.
func (c *Config) XDSEndpoints() []HostPort {
	if len(c.Envoy.XDSAddresses) > 0 {
		return c.Envoy.XDSAddresses
	}
	return []HostPort{c.XDS.GRPC}
}

// validateReplicas checks envoy.xds_addresses: host:port each, no
// duplicates, and (with envoy.xds_tls and no server_name) one host, since
// one xDS cluster checks one name on every replica's certificate.
func (c *Config) validateReplicas(at func(line int, format string, args ...any)) {
	seen := map[string]bool{}
	hosts := map[string]bool{}
	for i, a := range c.Envoy.XDSAddresses {
		if err := a.Err(); err != nil {
			at(a.Line(), "envoy.xds_addresses[%d]: %v", i, err)
			continue
		}
		if a.IsZero() || a.Port() == 0 {
			at(0, "envoy.xds_addresses[%d]: want host:port", i)
			continue
		}
		if seen[a.String()] {
			at(0, "envoy.xds_addresses[%d]: %q is listed twice", i, a.String())
		}
		seen[a.String()] = true
		hosts[a.Host()] = true
	}
	if len(hosts) > 1 && c.Envoy.XDSTLS.Enabled() && c.Envoy.XDSTLS.ServerName == "" {
		at(c.Envoy.XDSTLS.Line, "envoy.xds_tls.server_name: required when envoy.xds_addresses name several hosts (the name every replica's certificate carries)")
	}
}
