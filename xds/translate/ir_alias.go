package translate

import "github.com/kailash-gw/kailash/xds/translate/ir"

// The IR (config → IR, package ir) under the names the translator and its
// callers use.
type (
	IR               = ir.IR
	Address          = ir.Address
	Authz            = ir.Authz
	VirtualHost      = ir.VirtualHost
	Edge             = ir.Edge
	CORS             = ir.CORS
	TokenBucket      = ir.TokenBucket
	RateLimit        = ir.RateLimit
	Upstream         = ir.Upstream
	Certificate      = ir.Certificate
	HTTPS            = ir.HTTPS
	ListenerSettings = ir.ListenerSettings
	UpstreamTLS      = ir.UpstreamTLS
	Inputs           = ir.Inputs
	KeyPair          = ir.KeyPair
)

// BuildIR and BuildIRWith check a config and resolve it into an IR.
var (
	BuildIR             = ir.BuildIR
	BuildIRWith         = ir.BuildIRWith
	UpstreamClusterName = ir.UpstreamClusterName
	SecretName          = ir.SecretName
)

// RunnerCluster is the runner's cluster; RunnerRouteTimeout bounds a
// request routed to it.
const (
	RunnerCluster      = ir.RunnerCluster
	RunnerRouteTimeout = ir.RunnerRouteTimeout
)

// APIKeysAll is Edge.APIKeys on the admin tenant's domains.
const APIKeysAll = ir.APIKeysAll
