package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	"google.golang.org/protobuf/proto"
)

// LuaFilterName is the Envoy name of the HTTP Lua filter.
const LuaFilterName = "envoy.filters.http.lua"

// hostCaseLua lowercases the request's host. Host names are
// case-insensitive; virtual host domains match them so, but scope keys are
// exact strings, so `Acme.Example` must become `acme.example` before the
// scope is chosen. The filter clears the route cache when it changes a
// header, and the connection manager then selects the scope again.
const hostCaseLua = `function envoy_on_request(h)
  local hs = h:headers()
  local a = hs:get(":authority")
  if a ~= nil then
    local l = string.lower(a)
    if l ~= a then
      hs:replace(":authority", l)
    end
  end
end
`

// hostCaseFilter is first in the chain with per-tenant routes only: with
// one route table Envoy matches domains case-insensitively itself.
type hostCaseFilter struct{ noPerVirtualHost }

var _ httpFilter = hostCaseFilter{}

func (hostCaseFilter) name() string { return LuaFilterName }

func (hostCaseFilter) listenerConfig(ir *IR) (proto.Message, error) {
	if !ir.PerTenant {
		return nil, nil
	}
	return &luav3.Lua{
		DefaultSourceCode: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: hostCaseLua}},
		StatPrefix:        "host_case",
	}, nil
}
