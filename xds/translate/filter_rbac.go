package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbaccfgv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// rbacFilter enforces each tenant's IP allowlist. It is first in the chain,
// so a client outside the allowlist is refused (403) before CORS answers a
// preflight and before ext_authz is ever called. At the listener it has no
// rules (enforces nothing); tenants with an allowlist get per-virtual-host
// rules admitting only those networks.
type rbacFilter struct{}

var _ httpFilter = rbacFilter{}

// RBACFilterName is the Envoy name of the HTTP RBAC filter.
const RBACFilterName = "envoy.filters.http.rbac"

// ipAllowPolicy names the one RBAC policy of a tenant with an allowlist.
const ipAllowPolicy = "ip_allowlist"

func (rbacFilter) name() string { return RBACFilterName }

func (rbacFilter) listenerConfig(*IR) (proto.Message, error) { return &rbacv3.RBAC{}, nil }

func (rbacFilter) tenantConfig(_ *IR, vh *VirtualHost) (proto.Message, error) {
	if len(vh.IPAllowlist) == 0 || !vh.Active {
		return nil, nil
	}
	var ids []*rbaccfgv3.Principal
	for _, p := range vh.IPAllowlist {
		ids = append(ids, &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{
			AddressPrefix: p.Addr().String(),
			PrefixLen:     wrapperspb.UInt32(uint32(p.Bits())),
		}}})
	}
	principal := ids[0]
	if len(ids) > 1 {
		principal = &rbaccfgv3.Principal{Identifier: &rbaccfgv3.Principal_OrIds{OrIds: &rbaccfgv3.Principal_Set{Ids: ids}}}
	}
	return &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{
		Rules: &rbaccfgv3.RBAC{
			Action: rbaccfgv3.RBAC_ALLOW,
			Policies: map[string]*rbaccfgv3.Policy{ipAllowPolicy: {
				Permissions: []*rbaccfgv3.Permission{{Rule: &rbaccfgv3.Permission_Any{Any: true}}},
				Principals:  []*rbaccfgv3.Principal{principal},
			}},
		},
		RulesStatPrefix: "tenant_" + vh.TenantID + ".",
	}}, nil
}

func (rbacFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }
