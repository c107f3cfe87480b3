// Command opa-envoy is opa-envoy-plugin's own command (cmd/opa-envoy-plugin
// at v1.10.0-envoy): OPA's runtime with the Envoy ext_authz gRPC plugin
// registered. It is built here so the comparison runs the upstream code
// unchanged, from this module's pinned version.
package main

import (
	"os"

	"github.com/open-policy-agent/opa-envoy-plugin/plugin"
	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"
)

func main() {
	runtime.RegisterPlugin("envoy.ext_authz.grpc", plugin.Factory{}) // for backwards compatibility
	runtime.RegisterPlugin(plugin.PluginName, plugin.Factory{})

	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}
