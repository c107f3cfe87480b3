package extauthz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// routeTenant is the Check's tenant: the route's context_extensions tenant
// when it sets one (it always wins: the route was chosen by the control
// plane or the operator's static config); else, with authz.tenant_from
// host, the tenant whose domains hold the request's host (Envoy's
// :authority, port stripped, lowercased, exact match). Never any other
// header. ok is false when neither names a tenant (404 unknown host).
func routeTenant(snap *snapshot, req *authv3.CheckRequest) (string, bool) {
	attrs := req.GetAttributes()
	if id, ok := attrs.GetContextExtensions()[wire.ContextTenant]; ok {
		return id, true
	}
	if snap.hosts == nil {
		return "", false
	}
	id, ok := snap.hosts[config.RequestHost(attrs.GetRequest().GetHttp().GetHost())]
	return id, ok
}
